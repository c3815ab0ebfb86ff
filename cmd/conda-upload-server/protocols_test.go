package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestProtocolsWithCurl sends each upload protocol rattler-build and pixi
// speak with curl to the real binary: quetz (raw body, chunked,
// X-API-Key), prefix.dev (multipart file part with X-File-Name and
// X-File-SHA256 part headers, Bearer), and Artifactory (PUT, Bearer and
// Basic). Each package must be stored and listed.
func TestProtocolsWithCurl(t *testing.T) {
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
