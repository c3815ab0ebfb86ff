package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// TestProtocolsWithCurl sends each upload protocol rattler-build and pixi
// speak with curl to the real binary: quetz (raw body, chunked,
// X-API-Key), prefix.dev (multipart file part with X-File-Name and
// X-File-SHA256 part headers, Bearer), and Artifactory (PUT, Bearer and
// Basic). Each package must be stored and listed.
func TestProtocolsWithCurl(t *testing.T) {
	testneed.Tool(t, "curl", "curl")
	p, root := original(t)
	curl := func(args ...string) (int, string) {
		t.Helper()
		args = append([]string{"-sS", "-k", "-o", "-", "-w", "\n%{http_code}"}, args...)
		out, err := exec.Command("curl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		s := strings.TrimSpace(string(out))
		i := strings.LastIndexByte(s, '\n')
		code, _ := strconv.Atoi(s[i+1:])
		return code, s[:i]
	}
	quetz := corpusFile("quetz/other-package-0.2-0.conda")
	prefix := corpusFile("conda/sample_noarch_python-1.0-py_0.conda")
	arti := corpusFile("cph/mock-2.0.0-py37_1000.tar.bz2")
	arti2 := corpusFile("quetz/test-package-0.1-0.tar.bz2")

	code, body := curl("-X", "POST", "-H", "X-API-Key: "+testToken, "-H", "Transfer-Encoding: chunked",
		"--data-binary", "@"+quetz, p.url+"api/channels/main/upload/other-package-0.2-0.conda?force=false&sha256="+sha256File(t, quetz))
	if code != 201 || !strings.Contains(body, `"indexed":true`) {
		t.Errorf("quetz: %d %s", code, body)
	}
	headers := filepath.Join(t.TempDir(), "headers")
	os.WriteFile(headers, []byte("X-File-Name: sample_noarch_python-1.0-py_0.conda\nX-File-SHA256: "+sha256File(t, prefix)+"\n"), 0o644)
	code, body = curl("-H", "Authorization: Bearer "+testToken,
		"-F", "file=@"+prefix+";type=application/octet-stream;headers=@"+headers, p.url+"api/v1/upload/main")
	if code != 201 || !strings.Contains(body, `"subdir":"noarch"`) {
		t.Errorf("prefix: %d %s", code, body)
	}
	code, body = curl("-T", arti, "-H", "Authorization: bearer "+testToken, p.url+"main/osx-64/mock-2.0.0-py37_1000.tar.bz2")
	if code != 201 {
		t.Errorf("artifactory bearer: %d %s", code, body)
	}
	code, body = curl("-T", arti2, "-u", "ci:"+testToken, p.url+"main/linux-64/test-package-0.1-0.tar.bz2")
	if code != 201 {
		t.Errorf("artifactory basic: %d %s", code, body)
	}
	code, body = curl("-T", arti2, "-u", "ci:"+testToken, p.url+"main/noarch/test-package-0.1-0.tar.bz2")
	if code != 400 || !strings.Contains(body, "linux-64") || !strings.Contains(body, "noarch") {
		t.Errorf("artifactory wrong subdir: %d %s", code, body)
	}
	code, body = curl("-X", "POST", "-H", "X-API-Key: "+testToken, "--data-binary", "@"+quetz,
		p.url+"api/channels/main/upload/other-package-0.2-0.conda?sha256="+strings.Repeat("0", 64))
	if code != 400 || !strings.Contains(body, "sha256 mismatch") {
		t.Errorf("quetz wrong sha256: %d %s", code, body)
	}
	for _, f := range []string{"linux-64/other-package-0.2-0.conda", "noarch/sample_noarch_python-1.0-py_0.conda",
		"osx-64/mock-2.0.0-py37_1000.tar.bz2", "linux-64/test-package-0.1-0.tar.bz2"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Error(err)
		}
	}
	if !p.logged("protocol=artifactory") || !p.logged("protocol=prefix") || !p.logged("protocol=quetz") {
		t.Error("the log does not name the protocols")
	}
}

// TestListenDownload: with listen_download, the channel is served on its
// own address only, and uploads on the main one only, so that the two
// can be firewalled apart.
func TestListenDownload(t *testing.T) {
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	port, dport := freePort(t), freePort(t)
	cfg := userConfig(t, dir, "listen_download = \"127.0.0.1:"+strconv.Itoa(dport)+"\"\n[download]\nenabled = true\n")
	p := startServer(t, pool, port, "--config", cfg, "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key,
		"-t", auth.Hash(auth.DefaultSalt, testToken))
	if st, body := p.upload(t, testToken, corpusFile("quetz/other-package-0.2-0.conda")); st != 201 {
		t.Fatalf("upload on the main address: %d %v", st, body)
	}
	get := func(u string) int {
		resp, err := p.client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	durl := "https://localhost:" + strconv.Itoa(dport) + "/"
	if st := get(durl + "linux-64/other-package-0.2-0.conda"); st != 200 {
		t.Errorf("download on the download address: %d", st)
	}
	if st := get(p.url + "linux-64/other-package-0.2-0.conda"); st != 404 {
		t.Errorf("download on the main address: %d, want 404", st)
	}
	resp, err := p.client.Post(durl, "multipart/form-data; boundary=x", strings.NewReader("--x--\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("upload on the download address: %d, want 405", resp.StatusCode)
	}
	if st := get(durl + "healthz"); st != 200 {
		t.Errorf("healthz on the download address: %d", st)
	}
}
