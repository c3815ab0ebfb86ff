package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"mime/multipart"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// TestOriginalClients uploads with the three clients the original's users
// have: Python requests (the README's snippet, verify=False), curl, and Go.
func TestOriginalClients(t *testing.T) {
	python := testneed.Python(t, "requests", "python3-requests")
	testneed.Tool(t, "curl", "curl")
	p, root := original(t)
	if !p.logged("token_hash was given on the command line") {
		t.Error("no warning about token_hash on the command line")
	}

	py := fmt.Sprintf(`
import requests, sys
artifacts = [open(sys.argv[1], 'rb'), open(sys.argv[2], 'rb')]
url = 'https://localhost:%d/'
token = %q
for artifact in artifacts:
    r = requests.post(url, data={'token': token}, files={'artifact': artifact},
                      verify=False)
    print(r.status_code, r.json()['subdir'])
`, p.port, testToken)
	cmd := exec.Command(python, "-W", "ignore", "-c", py,
		corpusFile("conda/linux-64/zlib-1.2.11-h7b6447c_3.tar.bz2"), corpusFile("conda/sample_noarch_python-1.0-py_0.conda"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python requests: %v\n%s", err, out)
	}
	if got := string(out); got != "201 linux-64\n201 noarch\n" {
		t.Errorf("python requests printed %q", got)
	}

	curl := func(args ...string) (int, string) {
		t.Helper()
		args = append([]string{"-sS", "-k", "-o", "-", "-w", "\n%{http_code}"}, args...)
		out, err := exec.Command("curl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		s := strings.TrimSpace(string(out))
		i := strings.LastIndexByte(s, '\n')
		code, _ := strconv.Atoi(s[i+1:])
		return code, s[:i]
	}
	code, body := curl("-F", "token="+testToken, "-F", "artifact=@"+corpusFile("quetz/other-package-0.2-0.conda"), p.url)
	if code != 201 || !strings.Contains(body, `"subdir":"linux-64"`) {
		t.Errorf("curl: %d %s", code, body)
	}
	code, body = curl("-H", "Authorization: Bearer "+testToken, "-F", "artifact=@"+corpusFile("quetz/other-package-0.2-0.conda"), p.url)
	if code != 200 || !strings.Contains(body, `"created":false`) {
		t.Errorf("curl re-upload with bearer: %d %s", code, body)
	}
	code, body = curl("-F", "token=wrong", "-F", "artifact=@"+corpusFile("quetz/test-package-0.1-0.tar.bz2"), p.url)
	if code != 401 {
		t.Errorf("curl wrong token: %d %s", code, body)
	}

	st, body2 := p.upload(t, testToken, corpusFile("cph/mock-2.0.0-py37_1000.tar.bz2"))
	if st != 201 || body2["subdir"] != "osx-64" {
		t.Errorf("Go client: %d %v", st, body2)
	}
	for _, f := range []string{"linux-64/zlib-1.2.11-h7b6447c_3.tar.bz2", "noarch/sample_noarch_python-1.0-py_0.conda", "linux-64/other-package-0.2-0.conda", "osx-64/mock-2.0.0-py37_1000.tar.bz2"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Error(err)
		}
	}
	if strings.Contains(p.stderr.String(), testToken) {
		t.Error("the token appears in the log")
	}
}

// TestCondaIndexer drives the conda indexer path with a stand-in: the argv
// and environment it gets, coalescing of concurrent uploads, a crash, a
// hang past the timeout (whose process group must be killed), garbage
// output, and recovery.
func TestCondaIndexer(t *testing.T) {
	testneed.Landlock(t, 2)
	ctl := serviceOwned(t, shared(t))
	exe := standIn(t, ctl)
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	port := freePort(t)
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
user = "nobody"
write_dir = %q
port = %d
conda_exe = %q
certfile = %q
keyfile = %q
[[tokens]]
name = "ci"
hash = %q
[index]
timeout = "2s"
[sandbox]
landlock = "enforce"
write_paths = [%q]
`, root, port, exe, cert, key, auth.Hash(auth.DefaultSalt, testToken), ctl)), 0o644)
	t.Setenv("NOTIFY_SOCKET", "/nonexistent/notify")
	p := startServer(t, pool, port, "--config", cfg)

	// At start, noarch gets its repodata.json.
	if cs := calls(t, ctl); len(cs) != 1 || cs[0].Argv[3] != "noarch" {
		t.Fatalf("start-up calls: %+v", cs)
	}
	st, body := p.upload(t, testToken, corpusFile("quetz/other-package-0.2-0.conda"))
	if st != 201 || body["indexed"] != true || body["indexer"] != "conda" {
		t.Fatalf("upload: %d %v", st, body)
	}
	cs := calls(t, ctl)
	last := cs[len(cs)-1]
	want := []string{exe, "index", "--subdir", "linux-64", root}
	if strings.Join(last.Argv, " ") != strings.Join(want, " ") {
		t.Errorf("argv %q, want %q", last.Argv, want)
	}
	for k := range last.Env {
		switch k {
		case "PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "CONDA_PKGS_DIRS", "LC_CTYPE":
		default:
			t.Errorf("child environment has %s", k)
		}
	}

	t.Run("coalescing", func(t *testing.T) {
		os.WriteFile(filepath.Join(ctl, "sleep"), []byte("0.5"), 0o644)
		defer os.Remove(filepath.Join(ctl, "sleep"))
		before := len(calls(t, ctl))
		tmp := shared(t)
		const n = 12
		var wg sync.WaitGroup
		for i := range n {
			// Distinct packages: copies of one real package under names
			// that match their index.json are not possible, so use
			// synthetic ones.
			path := filepath.Join(tmp, fmt.Sprintf("burst-1.0-%d.tar.bz2", i))
			writeSynthetic(t, path, "burst", "1.0", strconv.Itoa(i), "linux-64")
			wg.Go(func() {
				st, body := p.upload(t, testToken, path)
				if st != 201 || body["indexed"] != true {
					t.Errorf("%s: %d %v", path, st, body)
				}
			})
		}
		wg.Wait()
		runs := len(calls(t, ctl)) - before
		t.Logf("%d concurrent uploads, %d conda index runs", n, runs)
		if runs > 4 {
			t.Errorf("%d runs for %d concurrent uploads", runs, n)
		}
	})

	t.Run("crash", func(t *testing.T) {
		os.WriteFile(filepath.Join(ctl, "fail"), nil, 0o644)
		st, body := p.upload(t, testToken, corpusFile("quetz/test-package-0.1-0.tar.bz2"))
		os.Remove(filepath.Join(ctl, "fail"))
		if st != 500 || body["indexed"] != false || !strings.Contains(fmt.Sprint(body["error"]), "simulated crash") {
			t.Errorf("crash: %d %v", st, body)
		}
		if _, err := os.Stat(filepath.Join(root, "linux-64", "test-package-0.1-0.tar.bz2")); err != nil {
			t.Errorf("package not kept: %v", err)
		}
	})

	t.Run("garbage", func(t *testing.T) {
		os.WriteFile(filepath.Join(ctl, "garbage"), nil, 0o644)
		st, body := p.upload(t, testToken, corpusFile("conda/sample_noarch_python-1.0-py_0.conda"))
		os.Remove(filepath.Join(ctl, "garbage"))
		if st != 500 || !strings.Contains(fmt.Sprint(body["error"]), "not valid JSON") {
			t.Errorf("garbage: %d %v", st, body)
		}
	})

	t.Run("hang", func(t *testing.T) {
		os.WriteFile(filepath.Join(ctl, "hang"), nil, 0o644)
		start := time.Now()
		st, body := p.upload(t, testToken, corpusFile("conda-index/fly-2.5.2-0.tar.bz2"))
		os.Remove(filepath.Join(ctl, "hang"))
		if st != 500 || !strings.Contains(fmt.Sprint(body["error"]), "timed out") {
			t.Errorf("hang: %d %v", st, body)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("hung index run took %s", d)
		}
		b, _ := os.ReadFile(filepath.Join(ctl, "pids"))
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			// Reaped or at least dead: signal 0 fails, or /proc shows a zombie.
			deadline := time.Now().Add(5 * time.Second)
			for syscall.Kill(pid, 0) == nil && !isZombie(pid) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
				t.Errorf("process %d of the hung indexer is still running", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})

	t.Run("recovery", func(t *testing.T) {
		st, body := p.upload(t, testToken, corpusFile("quetz/other-package-0.2-0.tar.bz2"))
		if st != 201 || body["indexed"] != true {
			t.Fatalf("recovery: %d %v", st, body)
		}
		b, _ := os.ReadFile(filepath.Join(root, "linux-64", "repodata.json"))
		for _, name := range []string{"test-package-0.1-0.tar.bz2", "other-package-0.2-0.tar.bz2", "other-package-0.2-0.conda"} {
			if !strings.Contains(string(b), name) {
				t.Errorf("%s missing after recovery: %s", name, b)
			}
		}
		if _, err := os.Stat(filepath.Join(root, "osx-64", "fly-2.5.2-0.tar.bz2")); err != nil {
			t.Errorf("package of the hung run not kept: %v", err)
		}
	})
}

// TestHashToken runs the hash-token subcommand in process.
func TestHashToken(t *testing.T) {
	for _, tt := range []struct {
		name  string
		args  []string
		stdin string
		want  string
		code  int
	}{
		{"newline", nil, "mysecuretoken\n", "f4e7b109e7aaef9a56f019d83fba027513ee8f63faf73fbb3c993071089eeb81\n", 0},
		{"no newline", nil, "mysecuretoken", "f4e7b109e7aaef9a56f019d83fba027513ee8f63faf73fbb3c993071089eeb81\n", 0},
		{"salt", []string{"--salt", "pepper"}, "tok\n", auth.Hash("pepper", "tok") + "\n", 0},
		{"empty", nil, "", "", 1},
		{"token in argv", []string{"mysecuretoken"}, "", "", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), append([]string{"hash-token"}, tt.args...), strings.NewReader(tt.stdin), &out, &errb)
			if code != tt.code || out.String() != tt.want {
				t.Errorf("exit %d stdout %q stderr %q; want %d %q", code, out.String(), errb.String(), tt.code, tt.want)
			}
		})
	}
}

// TestStartupErrors checks, in process, that bad configuration stops the
// server at once with a message that says what to fix. Every case fails
// before the server binds, drops privileges or confines itself.
func TestStartupErrors(t *testing.T) {
	dir := t.TempDir()
	cert, key, _, _ := certPair(t, dir, "")
	hash := auth.Hash(auth.DefaultSalt, testToken)
	writeCfg := func(body string) string {
		p := filepath.Join(t.TempDir(), "c.toml")
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown key", []string{"--config", writeCfg("write_dir = \"/tmp/x\"\nmax_uplod_size = 5\n")}, 1, "unknown key max_uplod_size"},
		{"unknown index key", []string{"--config", writeCfg("[index]\ntimeuot = \"1s\"\n")}, 1, "unknown key index.timeuot"},
		{"bad size", []string{"--config", writeCfg("max_upload_size = \"lots\"\n")}, 1, "bad size"},
		{"subdir as write_dir", []string{"-d", filepath.Join(dir, "linux-64"), "-c", cert, "-k", key, "-t", hash}, 1, "named after a platform subdir"},
		{"no write_dir", []string{"-c", cert, "-k", key, "-t", hash}, 1, "write_dir is not set"},
		{"no cert", []string{"-d", dir, "-t", hash}, 1, "no TLS certificate"},
		{"bad hash", []string{"-d", dir, "-c", cert, "-k", key, "-t", "eccd989b"}, 1, "token hash must be 64 hex digits"},
		{"no token", []string{"-d", dir, "-c", cert, "-k", key}, 1, "no token configured"},
		{"relative conda", []string{"-d", dir, "-c", cert, "-k", key, "-t", hash, "-e", "conda"}, 1, "must be an absolute path"},
		{"bad listen", []string{"-d", dir, "-c", cert, "-k", key, "-t", hash, "--listen", "example.org:1"}, 1, "want an IP address"},
		{"bad listen port", []string{"-d", dir, "-c", cert, "-k", key, "-t", hash, "--listen", "127.0.0.1:99999"}, 1, "bad port"},
		{"publisher without a workflow", []string{"-d", dir, "-c", cert, "-k", key, "--config", writeCfg("[[trusted_publishers]]\nname = \"p\"\nissuer = \"https://token.actions.githubusercontent.com\"\naudiences = [\"x\"]\nclaims = { repository = \"o/r\" }\n")}, 1, "must name repository and workflow"},
		{"publisher over http", []string{"-d", dir, "-c", cert, "-k", key, "--config", writeCfg("[[trusted_publishers]]\nname = \"p\"\nissuer = \"http://issuer\"\naudiences = [\"x\"]\nclaims = { repository = \"o/r\", workflow = \"w.yml\" }\n")}, 1, "must be an https URL"},
		{"publisher with an unknown claim", []string{"-d", dir, "-c", cert, "-k", key, "--config", writeCfg("[[trusted_publishers]]\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\nclaims = { repository = \"o/r\", workflow = \"w.yml\", actor = \"me\" }\n")}, 1, "not a claim rule"},
		{"token_ttl over 15m", []string{"-d", dir, "-c", cert, "-k", key, "-t", hash, "--config", writeCfg("[oidc]\ntoken_ttl = \"1h\"\n")}, 1, "token_ttl"},
		{"bad flag", []string{"--nope"}, 2, "flag provided but not defined"},
		{"extra argument", []string{"-d", dir, "stray"}, 2, "unexpected argument"},
		{"missing cert file", []string{"-d", dir, "-c", dir + "/none.pem", "-k", key, "-t", hash}, 1, "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, strings.NewReader(""), &out, &errb)
			if code != tt.code || !strings.Contains(errb.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d saying %q", code, errb.String(), tt.code, tt.want)
			}
		})
	}
}

// TestDevMode runs the README's first command and uploads with the curl
// line it prints.
func TestDevMode(t *testing.T) {
	testneed.Tool(t, "curl", "curl")
	wd := t.TempDir()
	port := freePort(t)
	out := startDev(t, wd, "-p", strconv.Itoa(port))
	var curlLine string
	deadline := time.Now().Add(15 * time.Second)
	for curlLine == "" && time.Now().Before(deadline) {
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "curl ") {
				curlLine = strings.TrimSpace(l)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if curlLine == "" {
		t.Fatalf("no curl example printed: %q", out.String())
	}
	pkg, _ := filepath.Abs(corpusFile("conda/sample_noarch_python-1.0-py_0.conda"))
	curlLine = strings.Replace(curlLine, "@mypkg-1.0-0.conda", "@"+pkg, 1)
	res, err := exec.Command("sh", "-c", curlLine+" -sS").CombinedOutput()
	if err != nil || !strings.Contains(string(res), `"status":201`) {
		t.Fatalf("%s: %v %s", curlLine, err, res)
	}
	if _, err := os.Stat(filepath.Join(wd, "channel", "noarch", "sample_noarch_python-1.0-py_0.conda")); err != nil {
		t.Error(err)
	}
	// Dev mode serves the channel publicly, and says how to install.
	if !strings.Contains(out.String(), "conda install --insecure -c https://127.0.0.1:") {
		t.Errorf("no install line in the banner: %s", out.String())
	}
	got, err := exec.Command("curl", "-sSfk", fmt.Sprintf("https://127.0.0.1:%d/noarch/sample_noarch_python-1.0-py_0.conda", port)).Output()
	want, _ := os.ReadFile(pkg)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("the uploaded package does not come back from the dev channel: %v", err)
	}
	// Dev mode serves loopback only.
	if got := listening(t, port); strings.Join(got, " ") != "127.0.0.1" {
		t.Errorf("dev mode listens on %v, want 127.0.0.1 only", got)
	}
}

// TestListen binds the address given by --listen, or by listen in the
// config file, and nothing else.
func TestListen(t *testing.T) {
	for _, tt := range []struct {
		name   string
		listen func(port int) (flag, config string)
		want   string
	}{
		{"flag host", func(port int) (string, string) { return "127.0.0.1", "" }, "127.0.0.1"},
		{"flag host and port", func(port int) (string, string) { return fmt.Sprintf("127.0.0.1:%d", port), "" }, "127.0.0.1"},
		{"config", func(port int) (string, string) { return "", fmt.Sprintf("listen = \"127.0.0.1:%d\"\n", port) }, "127.0.0.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := shared(t)
			cert, key, pool, _ := certPair(t, dir, "")
			port := freePort(t)
			flagv, extra := tt.listen(port)
			args := []string{"--config", userConfig(t, dir, extra), "-d", serviceOwned(t, filepath.Join(dir, "ch")),
				"-c", cert, "-k", key, "-t", auth.Hash(auth.DefaultSalt, testToken)}
			switch {
			case strings.Contains(flagv, ":"):
				args = append(args, "--listen", flagv)
			case flagv != "":
				args = append(args, "--listen", flagv, "-p", strconv.Itoa(port))
			}
			startServer(t, pool, port, args...)
			if got := listening(t, port); strings.Join(got, " ") != tt.want {
				t.Errorf("listening on %v, want %s", got, tt.want)
			}
		})
	}
}

// listening returns the local addresses with a TCP socket listening on
// port, as the kernel lists them in /proc/net/tcp and tcp6.
func listening(t *testing.T, port int) []string {
	t.Helper()
	var out []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 4 || fs[3] != "0A" { // 0A is LISTEN
				continue
			}
			host, p, _ := strings.Cut(fs[1], ":")
			if n, _ := strconv.ParseUint(p, 16, 16); int(n) != port {
				continue
			}
			raw, _ := hex.DecodeString(host)
			// Each 32-bit word is in host (little-endian) order.
			for i := 0; i+4 <= len(raw); i += 4 {
				raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
			}
			ip, _ := netip.AddrFromSlice(raw)
			out = append(out, ip.Unmap().String())
		}
	}
	return out
}

// TestCertReloadAndShutdown replaces the certificate files and sends
// SIGHUP: new connections get the new certificate. Then SIGTERM during an
// upload: the upload completes and the process exits 0.
func TestCertReloadAndShutdown(t *testing.T) {
	dir := shared(t)
	cert, key, pool, serial1 := certPair(t, dir, "")
	port := freePort(t)
	p := startServer(t, pool, port, "--config", userConfig(t, dir, ""), "-d", serviceOwned(t, filepath.Join(dir, "ch")), "-p", strconv.Itoa(port), "-c", cert, "-k", key, "-t", auth.Hash(auth.DefaultSalt, testToken))
	serialOf := func() *big.Int {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber
	}
	if s := serialOf(); s.Cmp(serial1) != 0 {
		t.Fatalf("serial %v, want %v", s, serial1)
	}
	c2, k2, _, serial2 := certPair(t, dir, "new-")
	os.Rename(c2, cert)
	os.Rename(k2, key)
	p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for serialOf().Cmp(serial2) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("certificate not reloaded on SIGHUP")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A slow upload is in flight when SIGTERM arrives.
	data, _ := os.ReadFile(corpusFile("cph/mock-2.0.0-py37_1000.tar.bz2"))
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("token", testToken)
	w, _ := mw.CreateFormFile("artifact", "mock-2.0.0-py37_1000.tar.bz2")
	w.Write(data)
	mw.Close()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", p.url, pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			res <- result{0, err}
			return
		}
		resp.Body.Close()
		res <- result{resp.StatusCode, nil}
	}()
	body := buf.Bytes()
	pw.Write(body[:1000])
	waitUntil(t, func() bool { return inFlight(t, client, p.url) == 1 })
	p.cmd.Process.Signal(syscall.SIGTERM)
	if !p.logged("shutting down; draining uploads") {
		t.Fatal("no drain after SIGTERM")
	}
	pw.Write(body[1000:])
	pw.Close()
	if r := <-res; r.err != nil || r.code != 201 {
		t.Errorf("in-flight upload during shutdown: %d %v", r.code, r.err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
		p.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
}

// TestStaleTemps checks that temp files a crash left behind are removed at
// start.
func TestStaleTemps(t *testing.T) {
	dir := shared(t)
	root := filepath.Join(dir, "channel")
	stale := []string{
		filepath.Join(root, ".incoming", "upload-123.part"),
		filepath.Join(root, "linux-64", ".repodata.json.tmp-42"),
		filepath.Join(root, "linux-64", ".index-cache", ".records.json.tmp-7"),
	}
	for _, f := range stale {
		os.MkdirAll(filepath.Dir(f), 0o755)
		os.WriteFile(f, []byte("partial"), 0o644)
	}
	serviceOwned(t, root)
	cert, key, pool, _ := certPair(t, dir, "")
	port := freePort(t)
	startServer(t, pool, port, "--config", userConfig(t, dir, ""), "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key, "-t", auth.Hash(auth.DefaultSalt, testToken))
	for _, f := range stale {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s survived start-up: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "linux-64", "repodata.json")); err != nil {
		t.Errorf("existing subdir not indexed at start: %v", err)
	}
}
