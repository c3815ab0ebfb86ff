package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"mime/multipart"
	"net"
	"net/http"
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
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
)

// TestMain lets the test binary stand in for the real one: tests start it
// again with CUS_BE_SERVER=1, and it runs main. So every test here drives
// the real program, its flags, signals and exit codes, as a process.
func TestMain(m *testing.M) {
	if os.Getenv("CUS_BE_SERVER") == "1" {
		os.Unsetenv("CUS_BE_SERVER")
		main()
		return
	}
	os.Exit(m.Run())
}

const testToken = "mysecuretoken"

// certPair writes a self-signed certificate for localhost and returns the
// file paths and a pool that trusts it.
func certPair(t *testing.T, dir, prefix string) (string, string, *x509.CertPool, *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, prefix+"cert.pem"), filepath.Join(dir, prefix+"key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	if os.Geteuid() == 0 {
		// As the packaged key: root-owned, readable by the service's group.
		os.Chown(keyFile, 0, nobody)
		os.Chmod(keyFile, 0o640)
	}
	pool := x509.NewCertPool()
	c, _ := x509.ParseCertificate(der)
	pool.AddCert(c)
	return certFile, keyFile, pool, serial
}

// nobody is the unprivileged user the tests' servers switch to when the
// tests run as root, as CI does.
const nobody = 65534

// shared returns a temp dir that the unprivileged server can traverse.
func shared(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	os.Chmod(filepath.Dir(d), 0o755)
	os.Chmod(d, 0o755)
	return d
}

// serviceOwned creates dir (and its parents) and gives it to nobody.
func serviceOwned(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		filepath.WalkDir(dir, func(p string, _ os.DirEntry, _ error) error { return os.Chown(p, nobody, nobody) })
	}
	return dir
}

// userConfig writes a config file that switches to nobody, plus extra.
func userConfig(t *testing.T, dir, extra string) string {
	t.Helper()
	p := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(p, []byte("user = \"nobody\"\n"+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a running server process.
type proc struct {
	cmd    *exec.Cmd
	port   int
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan error
	client *http.Client
	url    string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// command returns a Cmd that runs this program.
func command(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "CUS_BE_SERVER=1")
	return cmd
}

func tlsClient(pool *x509.CertPool) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 60 * time.Second}
}

// startServer starts the program with args and waits until it serves.
func startServer(t *testing.T, pool *x509.CertPool, port int, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: command(t, args...), port: port, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("server stderr:\n%s", p.stderr.String())
		}
	})
	p.client = tlsClient(pool)
	p.url = fmt.Sprintf("https://localhost:%d/", port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := p.client.Get(p.url + "healthz")
		if err == nil {
			resp.Body.Close()
			return p
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("server exited: %v\n%s", err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start: %v\n%s", err, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logged waits a little for s to show up in the server's log: the log
// reaches the test through a pipe, a moment after the response.
func (p *proc) logged(s string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.stderr.String(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// upload posts a package the way the original README's client does.
func (p *proc) upload(t *testing.T, token, path string) (int, map[string]any) {
	t.Helper()
	ct, data := multipartBody(t, token, path)
	resp, err := p.client.Post(p.url, ct, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func corpusFile(rel string) string {
	return filepath.Join("..", "..", "testdata", "conda-pkgs", rel)
}

// original starts the server with the original's command line, minus -e.
// The config file only says which user to switch to, since the tests run
// as root.
func original(t *testing.T, extra ...string) (*proc, string) {
	t.Helper()
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	port := freePort(t)
	args := append([]string{"--config", userConfig(t, dir, ""), "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key, "-t", auth.Hash(auth.DefaultSalt, testToken)}, extra...)
	return startServer(t, pool, port, args...), root
}

// TestOriginalClients uploads with the three clients the original's users
// have: Python requests (the README's snippet, verify=False), curl, and Go.
func TestOriginalClients(t *testing.T) {
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
	cmd := exec.Command("/usr/bin/python3", "-W", "ignore", "-c", py,
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

// standIn writes a conda stand-in: a Python script that records its argv
// and environment, obeys control files in ctl, and writes repodata.json
// listing the subdir's packages, as conda index would.
func standIn(t *testing.T, ctl string) string {
	t.Helper()
	script := fmt.Sprintf(`#!/usr/bin/python3
import json, os, sys, time, subprocess
ctl = %q
with open(os.path.join(ctl, "calls"), "a") as f:
    f.write(json.dumps({"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid()}) + "\n")
probe = os.path.join(ctl, "probe")
if os.path.exists(probe) and not os.path.exists(probe + "-result"):
    secret, outside, port = open(probe).read().split("\n")
    res = []
    def attempt(name, fn):
        try:
            fn()
            res.append(name + "=ok")
        except PermissionError as e:
            res.append(name + "=denied " + str(e))
        except Exception as e:
            res.append(name + "=error " + repr(e))
    attempt("read_secret", lambda: open(secret).read())
    attempt("create_outside", lambda: open(outside, "w").write("x"))
    def write_channel():
        p = os.path.join(sys.argv[-1], ".probe")
        open(p, "w").write("x")
        os.remove(p)
    attempt("write_channel", write_channel)
    import socket
    attempt("tcp_connect", lambda: socket.create_connection(("127.0.0.1", int(port)), timeout=2))
    open(probe + "-result", "w").write("\n".join(res) + "\n")
if os.path.exists(os.path.join(ctl, "hang")):
    # A grandchild too: the whole process group must be killed.
    child = subprocess.Popen(["sleep", "300"])
    with open(os.path.join(ctl, "pids"), "a") as f:
        f.write("%%d %%d\n" %% (os.getpid(), child.pid))
    time.sleep(300)
if os.path.exists(os.path.join(ctl, "fail")):
    print("conda-index: simulated crash", file=sys.stderr)
    sys.exit(3)
time.sleep(float(open(os.path.join(ctl, "sleep")).read()) if os.path.exists(os.path.join(ctl, "sleep")) else 0)
args = sys.argv[1:]
assert args[0] == "index", args
sub = args[args.index("--subdir") + 1]
channel = args[-1]
d = os.path.join(channel, sub)
os.makedirs(d, exist_ok=True)
if os.path.exists(os.path.join(ctl, "garbage")):
    open(os.path.join(d, "repodata.json"), "w").write("{not json")
    sys.exit(0)
doc = {"info": {"subdir": sub}, "packages": {}, "packages.conda": {}, "removed": [], "repodata_version": 1}
for fn in sorted(os.listdir(d)):
    if fn.endswith(".tar.bz2"):
        doc["packages"][fn] = {"size": os.path.getsize(os.path.join(d, fn))}
    elif fn.endswith(".conda"):
        doc["packages.conda"][fn] = {"size": os.path.getsize(os.path.join(d, fn))}
tmp = os.path.join(d, ".repodata.json.tmp")
open(tmp, "w").write(json.dumps(doc))
os.replace(tmp, os.path.join(d, "repodata.json"))
`, ctl)
	exe := filepath.Join(shared(t), "bin", "conda")
	os.MkdirAll(filepath.Dir(exe), 0o755)
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

type call struct {
	Argv []string          `json:"argv"`
	Env  map[string]string `json:"env"`
}

func calls(t *testing.T, ctl string) []call {
	t.Helper()
	f, err := os.Open(filepath.Join(ctl, "calls"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []call
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// TestCondaIndexer drives the conda indexer path with a stand-in: the argv
// and environment it gets, coalescing of concurrent uploads, a crash, a
// hang past the timeout (whose process group must be killed), garbage
// output, and recovery.
func TestCondaIndexer(t *testing.T) {
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

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func TestHashToken(t *testing.T) {
	for _, tt := range []struct {
		args  []string
		stdin string
		want  string
		code  int
	}{
		{nil, "mysecuretoken\n", "f4e7b109e7aaef9a56f019d83fba027513ee8f63faf73fbb3c993071089eeb81\n", 0},
		{nil, "mysecuretoken", "f4e7b109e7aaef9a56f019d83fba027513ee8f63faf73fbb3c993071089eeb81\n", 0},
		{[]string{"--salt", "pepper"}, "tok\n", auth.Hash("pepper", "tok") + "\n", 0},
		{nil, "", "", 1},
		{[]string{"mysecuretoken"}, "", "", 2},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd := command(t, append([]string{"hash-token"}, tt.args...)...)
			cmd.Stdin = strings.NewReader(tt.stdin)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != tt.code || out.String() != tt.want {
				t.Errorf("exit %d stdout %q stderr %q; want %d %q", code, out.String(), errb.String(), tt.code, tt.want)
			}
		})
	}
}

// TestStartupErrors checks that bad configuration stops the server at once
// with a message that says what to fix.
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
		want string
	}{
		{"unknown key", []string{"--config", writeCfg("write_dir = \"/tmp/x\"\nmax_uplod_size = 5\n")}, "unknown key max_uplod_size"},
		{"unknown index key", []string{"--config", writeCfg("[index]\ntimeuot = \"1s\"\n")}, "unknown key index.timeuot"},
		{"bad size", []string{"--config", writeCfg("max_upload_size = \"lots\"\n")}, "bad size"},
		{"subdir as write_dir", []string{"-d", filepath.Join(dir, "linux-64"), "-c", cert, "-k", key, "-t", hash}, "named after a platform subdir"},
		{"no write_dir", []string{"-c", cert, "-k", key, "-t", hash}, "write_dir is not set"},
		{"no cert", []string{"-d", dir, "-t", hash}, "no TLS certificate"},
		{"bad hash", []string{"-d", dir, "-c", cert, "-k", key, "-t", "eccd989b"}, "token hash must be 64 hex digits"},
		{"no token", []string{"-d", dir, "-c", cert, "-k", key}, "no token configured"},
		{"relative conda", []string{"-d", dir, "-c", cert, "-k", key, "-t", hash, "-e", "conda"}, "must be an absolute path"},
		{"bad flag", []string{"--nope"}, "flag provided but not defined"},
		{"missing cert file", []string{"-d", dir, "-c", dir + "/none.pem", "-k", key, "-t", hash}, "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := command(t, tt.args...)
			var errb bytes.Buffer
			cmd.Stderr = &errb
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			go func() { <-ctx.Done(); cmd.Process.Kill() }()
			err := cmd.Run()
			if err == nil || !strings.Contains(errb.String(), tt.want) {
				t.Errorf("err %v, stderr %q; want a failure saying %q", err, errb.String(), tt.want)
			}
		})
	}
}

// TestDevMode runs the README's first command and uploads with the curl
// line it prints.
func TestDevMode(t *testing.T) {
	wd := t.TempDir()
	port := freePort(t)
	cmd := command(t, "--dev", "-p", strconv.Itoa(port))
	cmd.Dir = wd
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
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
	time.Sleep(200 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
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

func writeSynthetic(t *testing.T, path, name, version, build, subdir string) {
	t.Helper()
	s := pkgtest.Simple(name, version, build, subdir)
	ext := ".conda"
	if strings.HasSuffix(path, ".tar.bz2") {
		ext = ".tar.bz2"
	}
	if err := os.WriteFile(path, pkgtest.Build(t, s, ext), 0o644); err != nil {
		t.Fatal(err)
	}
}
