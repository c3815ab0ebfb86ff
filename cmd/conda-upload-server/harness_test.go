package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// This file is the harness of the process-level tests: certificates, the
// server started as a process, the conda stand-in, shared helpers.

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

// certPair writes a self-signed certificate for localhost (and ips) and
// returns the file paths and a pool that trusts it.
func certPair(t testing.TB, dir, prefix string, ips ...net.IP) (string, string, *x509.CertPool, *big.Int) {
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
		IPAddresses:  append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...),
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
func shared(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	os.Chmod(filepath.Dir(d), 0o755)
	os.Chmod(d, 0o755)
	return d
}

// serviceOwned creates dir (and its parents) and gives it to nobody.
func serviceOwned(t testing.TB, dir string) string {
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
func userConfig(t testing.TB, dir, extra string) string {
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
	return startCmd(t, command(t, args...), pool, port)
}

// releaseBinary builds the program as it ships (no race detector, which
// multiplies memory use), for tests that measure its resources.
func releaseBinary(t testing.TB) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "conda-upload-server")
	cmd := exec.Command("go", "build", "-trimpath", "-o", exe, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return exe
}

// startCmd starts a server command and waits until it serves.
func startCmd(t *testing.T, cmd *exec.Cmd, pool *x509.CertPool, port int) *proc {
	t.Helper()
	p := &proc{cmd: cmd, port: port, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
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

// upload posts a package the way the original README's client does,
// with extra form fields as name, value pairs (such as "label", "dev").
func (p *proc) upload(t *testing.T, token, path string, fields ...string) (int, map[string]any) {
	t.Helper()
	ct, data := multipartBody(t, token, path, fields...)
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

// standIn writes a conda stand-in: a Python script that records its argv
// and environment, obeys control files in ctl, and writes repodata.json
// listing the subdir's packages, as conda index would.
func standIn(t *testing.T, ctl string) string {
	t.Helper()
	testneed.Python(t, "json", "")
	src, err := os.ReadFile(filepath.Join("testdata", "conda-standin.py"))
	if err != nil {
		t.Fatal(err)
	}
	script := strings.ReplaceAll(string(src), "@CTL@", ctl)
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

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func writeSynthetic(t *testing.T, path, name, version, build, subdir string) {
	t.Helper()
	s := pkgtest.Simple(name, version, build, subdir)
	ext := ".conda"
	if strings.HasSuffix(path, ".tar.bz2") {
		testneed.Tool(t, "bzip2", "bzip2")
		ext = ".tar.bz2"
	}
	if err := os.WriteFile(path, pkgtest.Build(t, s, ext), 0o644); err != nil {
		t.Fatal(err)
	}
}
