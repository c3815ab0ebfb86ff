package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// startWith starts the binary as root dropping to nobody, with a config of
// its own plus extra TOML, and returns it with its channel root.
func startWith(t *testing.T, extra string) (*proc, string) {
	t.Helper()
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	port := freePort(t)
	cfg := userConfig(t, dir, fmt.Sprintf("write_dir = %q\nport = %d\ncertfile = %q\nkeyfile = %q\ntoken_hash = %q\n",
		root, port, cert, key, auth.Hash(auth.DefaultSalt, testToken))+extra)
	return startServer(t, pool, port, "--config", cfg), root
}

// multipartBody returns a request body for one upload of path.
func multipartBody(t *testing.T, token, path string, fields ...string) (string, []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("token", token)
	for i := 0; i+1 < len(fields); i += 2 {
		mw.WriteField(fields[i], fields[i+1])
	}
	w, _ := mw.CreateFormFile("artifact", filepath.Base(path))
	w.Write(data)
	mw.Close()
	return mw.FormDataContentType(), buf.Bytes()
}

// checkChannel asserts the invariants that must hold after anything:
// no temp file in .incoming, every package complete (its bytes are one of
// the known uploads), and every repodata.json valid JSON listing only
// packages that are present.
func checkChannel(t *testing.T, root string, known map[string]string) {
	t.Helper()
	if des, _ := os.ReadDir(filepath.Join(root, ".incoming")); len(des) != 0 {
		t.Errorf("temp files left: %v", des)
	}
	subdirs, _ := os.ReadDir(root)
	for _, sd := range subdirs {
		if !sd.IsDir() || strings.HasPrefix(sd.Name(), ".") {
			continue
		}
		dir := filepath.Join(root, sd.Name())
		des, _ := os.ReadDir(dir)
		present := map[string]bool{}
		for _, de := range des {
			name := de.Name()
			if !strings.HasSuffix(name, ".conda") && !strings.HasSuffix(name, ".tar.bz2") {
				continue
			}
			present[name] = true
			b, _ := os.ReadFile(filepath.Join(dir, name))
			sum := sha256.Sum256(b)
			if want, ok := known[name]; !ok || hex.EncodeToString(sum[:]) != want {
				t.Errorf("%s/%s: %d bytes that are not a complete upload", sd.Name(), name, len(b))
			}
		}
		b, err := os.ReadFile(filepath.Join(dir, "repodata.json"))
		if err != nil {
			continue // a subdir made by a killed upload, before its first index
		}
		var doc struct {
			Packages      map[string]any `json:"packages"`
			PackagesConda map[string]any `json:"packages.conda"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Errorf("%s/repodata.json is not valid JSON: %v", sd.Name(), err)
		}
		for name := range doc.Packages {
			if !present[name] {
				t.Errorf("%s/repodata.json lists missing %s", sd.Name(), name)
			}
		}
		for name := range doc.PackagesConda {
			if !present[name] {
				t.Errorf("%s/repodata.json lists missing %s", sd.Name(), name)
			}
		}
		checkShards(t, dir)
	}
}

// checkShards asserts that a subdir's shard index, if any, names only
// shards that exist, each named by the sha256 of its bytes.
func checkShards(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "repodata_shards.msgpack.zst"))
	if err != nil {
		return
	}
	d, _ := zstd.NewReader(nil)
	defer d.Close()
	raw, err := d.DecodeAll(b, nil)
	if err != nil {
		t.Errorf("%s: shard index is not whole: %v", dir, err)
		return
	}
	var idx struct {
		Shards map[string][]byte `msgpack:"shards"`
	}
	if err := msgpack.Unmarshal(raw, &idx); err != nil {
		t.Errorf("%s: shard index: %v", dir, err)
		return
	}
	for name, sum := range idx.Shards {
		f := filepath.Join(dir, hex.EncodeToString(sum)+".msgpack.zst")
		data, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("shard of %s: %v", name, err)
			continue
		}
		if got := sha256.Sum256(data); !bytes.Equal(got[:], sum) {
			t.Errorf("shard of %s: bytes do not match its name", name)
		}
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestCrashLoop kills the server with SIGKILL at random points of an
// upload, 24 times: mid-body, during inspection and publishing, during the
// index run (an indexer that takes 200 ms widens that window). After each
// kill the server is started again on the same channel, and the channel
// must hold no partial package, no temp file, and no index entry for a
// package that is not there.
func TestCrashLoop(t *testing.T) {
	testneed.Root(t)
	ctl := serviceOwned(t, shared(t))
	os.WriteFile(filepath.Join(ctl, "sleep"), []byte("0.2"), 0o644)
	exe := standIn(t, ctl)
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	pkgs := shared(t)
	known := map[string]string{}
	var files []string
	for i := range 6 {
		p := filepath.Join(pkgs, fmt.Sprintf("crash-1.0-%d.conda", i))
		if err := exec.Command("go", "run", "../../test/mkpkg", "-o", p, "-subdir", "linux-64", "-size", "24MiB").Run(); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
		known[filepath.Base(p)] = sha256File(t, p)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const rounds = 24
	for round := range rounds {
		port := freePort(t)
		indexer := ""
		if round%2 == 1 {
			indexer = fmt.Sprintf("conda_exe = %q\n[sandbox]\nwrite_paths = [%q]\n", exe, ctl)
		}
		cfg := filepath.Join(dir, "config.toml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("user = \"nobody\"\nwrite_dir = %q\nport = %d\ncertfile = %q\nkeyfile = %q\ntoken_hash = %q\n%s",
			root, port, cert, key, auth.Hash(auth.DefaultSalt, testToken), indexer)), 0o644)
		p := startServer(t, pool, port, "--config", cfg)
		// The start-up cleaned and reconciled what the last kill left.
		checkChannel(t, root, known)

		path := files[rng.IntN(len(files))]
		ct, body := multipartBody(t, testToken, path)
		go func() {
			resp, err := p.client.Post(p.url, ct, bytes.NewReader(body))
			if err == nil {
				resp.Body.Close()
			}
		}()
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
	}
	// One clean start to finish: everything valid and indexed.
	port := freePort(t)
	cfg := userConfig(t, dir, fmt.Sprintf("write_dir = %q\nport = %d\ncertfile = %q\nkeyfile = %q\ntoken_hash = %q\n", root, port, cert, key, auth.Hash(auth.DefaultSalt, testToken)))
	startServer(t, pool, port, "--config", cfg)
	checkChannel(t, root, known)
	des, _ := os.ReadDir(filepath.Join(root, "linux-64"))
	t.Logf("after %d kills: %d entries in linux-64", rounds, len(des))
}

// TestFullDisk puts the channel on a small tmpfs: an upload that does not
// fit gets 507 and leaves nothing, and once space is freed uploads work.
// A read-only channel is refused at start.
func TestFullDisk(t *testing.T) {
	testneed.Root(t)
	dir := shared(t)
	root := filepath.Join(dir, "channel")
	os.MkdirAll(root, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m,mode=0755,uid=65534,gid=65534", "tmpfs", root).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", root).Run() })
	cert, key, pool, _ := certPair(t, dir, "")
	port := freePort(t)
	cfg := userConfig(t, dir, fmt.Sprintf("write_dir = %q\nport = %d\ncertfile = %q\nkeyfile = %q\ntoken_hash = %q\n", root, port, cert, key, auth.Hash(auth.DefaultSalt, testToken)))
	p := startServer(t, pool, port, "--config", cfg)

	big := filepath.Join(shared(t), "full-1.0-0.conda")
	if err := exec.Command("go", "run", "../../test/mkpkg", "-o", big, "-subdir", "linux-64", "-size", "16MiB").Run(); err != nil {
		t.Fatal(err)
	}
	st, body := p.upload(t, testToken, big)
	if st != http.StatusInsufficientStorage {
		t.Fatalf("upload onto a full disk: %d %v", st, body)
	}
	checkChannel(t, root, map[string]string{})
	if _, err := os.Stat(filepath.Join(root, "linux-64", "full-1.0-0.conda")); err == nil {
		t.Error("partial package published")
	}
	// Fill it by hand, then free the space: the server keeps serving.
	filler := filepath.Join(root, "filler")
	exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=20").Run()
	st, _ = p.upload(t, testToken, corpusFile("conda/sample_noarch_python-1.0-py_0.conda"))
	if st != http.StatusInsufficientStorage {
		t.Errorf("small upload onto a full disk: %d", st)
	}
	os.Remove(filler)
	st, body = p.upload(t, testToken, corpusFile("conda/sample_noarch_python-1.0-py_0.conda"))
	if st != http.StatusCreated {
		t.Errorf("after freeing space: %d %v", st, body)
	}

	// Read-only channel: a clear error at start.
	ro := filepath.Join(dir, "ro")
	os.MkdirAll(ro, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", ro).Run() })
	cmd := command(t, "--config", userConfig(t, dir, fmt.Sprintf("write_dir = %q\nport = %d\ncertfile = %q\nkeyfile = %q\ntoken_hash = %q\n", ro, freePort(t), cert, key, auth.Hash(auth.DefaultSalt, testToken))))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "read-only file system") {
		t.Errorf("read-only write_dir: %v %s", err, out)
	}
}

// TestSlowClients: headers trickled past read_header_timeout are cut; a
// body trickled below min_upload_rate is cut with 408 and leaves nothing.
func TestSlowClients(t *testing.T) {
	p, root := startWith(t, "read_header_timeout = \"1s\"\nmin_upload_rate = \"64KiB\"\nupload_rate_window = \"1s\"\n")
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	conn.Write([]byte("POST / HTTP/1.1\r\nHost: x\r\n"))
	var cut time.Duration
	for range 40 {
		time.Sleep(100 * time.Millisecond)
		if _, err := conn.Write([]byte("X-Slow: a\r\n")); err != nil {
			cut = time.Since(start)
			break
		}
		conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := conn.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			cut = time.Since(start)
			break
		}
	}
	if cut == 0 {
		t.Error("slowloris connection not cut within 4 s (read_header_timeout = 1s)")
	}
	t.Logf("slowloris cut after %s", cut.Round(10*time.Millisecond))

	ct, body := multipartBody(t, testToken, corpusFile("cph/mock-2.0.0-py37_1000.tar.bz2"))
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", p.url, pr)
	req.Header.Set("Content-Type", ct)
	go func() {
		for i := 0; i < len(body); i += 100 {
			if _, err := pw.Write(body[i:min(i+100, len(body))]); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond) // 2 KB/s
		}
		pw.Close()
	}()
	resp, err := p.client.Do(req)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("trickled body: %d %s", resp.StatusCode, b)
		}
	}
	pr.Close()
	waitUntil(t, func() bool { return inFlight(t, p.client, p.url) == 0 }) // the upload has cleaned up
	checkChannel(t, root, nil)
	if _, err := os.Stat(filepath.Join(root, "osx-64")); err == nil {
		t.Error("a trickled upload was published")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestConnectionFlood opens more connections than max_connections: the
// extra ones get 503, beyond twice the limit they are closed at once, and
// the server's file descriptors stay bounded; afterwards it serves again.
func TestConnectionFlood(t *testing.T) {
	p, _ := startWith(t, "max_connections = 4\nmax_concurrent_uploads = 4\n")
	pid := p.cmd.Process.Pid
	fds := func() int {
		des, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		return len(des)
	}
	base := fds()
	var conns []*tls.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func() *tls.Conn {
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return nil
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		conns = append(conns, c)
		return c
	}
	get := func(c *tls.Conn) int {
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufioReader(c), nil)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Four keep-alive clients are served and stay connected.
	for i := range 4 {
		if c := dial(); c == nil || get(c) != 200 {
			t.Fatalf("client %d not served", i)
		}
	}
	// Past the limit a request gets 503 (and its connection is closed).
	c := dial()
	if c == nil {
		t.Fatal("5th connection refused at accept")
	}
	if code := get(c); code != 503 {
		t.Errorf("5th connection: %d, want 503", code)
	}
	// Connections that send nothing pile up to twice the limit, then new
	// ones are closed at accept.
	refused := 0
	for range 30 {
		if dial() == nil {
			refused++
		}
	}
	t.Logf("30 idle connections on top of 4 served: %d refused at accept; fds %d -> %d", refused, base, fds())
	if refused < 30-5 {
		t.Errorf("only %d of 30 connections refused past twice max_connections", refused)
	}
	if n := fds(); n > base+2*4+4 {
		t.Errorf("%d fds open (%d at start): not bounded", n, base)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	waitUntil(t, func() bool { // serves again once the server sees them closed
		resp, err := p.client.Get(p.url + "healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// TestBruteForce: after auth_failure_limit failures an address gets 429
// with Retry-After even with the right token, another address is not
// affected, and the limit lifts after the window.
func TestBruteForce(t *testing.T) {
	p, _ := startWith(t, "auth_failure_limit = 3\nauth_failure_window = \"2s\"\n")
	pkg := corpusFile("conda/sample_noarch_python-1.0-py_0.conda")
	for i := range 3 {
		if st, _ := p.upload(t, "wrong", pkg); st != 401 {
			t.Fatalf("failure %d: %d", i, st)
		}
	}
	ct, body := multipartBody(t, testToken, pkg)
	resp, err := p.client.Post(p.url, ct, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("4th attempt with the right token: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Another address (IPv6 loopback) is unaffected.
	v6 := *p
	v6.url = fmt.Sprintf("https://[::1]:%d/", p.port)
	if st, body := v6.upload(t, testToken, pkg); st != 201 {
		t.Errorf("other address: %d %v", st, body)
	}
	time.Sleep(2100 * time.Millisecond)
	if st, body := p.upload(t, testToken, corpusFile("quetz/other-package-0.2-0.conda")); st != 201 {
		t.Errorf("after the window: %d %v", st, body)
	}
}

// TestSecretsStayOut checks that neither the token nor its hash from a
// file shows in the process's command line, and the token not in its log.
func TestSecretsStayOut(t *testing.T) {
	p, _ := startWith(t, "")
	p.upload(t, testToken, corpusFile("conda/sample_noarch_python-1.0-py_0.conda"))
	p.upload(t, testToken+"x", corpusFile("conda/sample_noarch_python-1.0-py_0.conda"))
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.cmd.Process.Pid))
	if bytes.Contains(cmdline, []byte(testToken)) {
		t.Error("token in /proc/<pid>/cmdline")
	}
	if strings.Contains(p.stderr.String(), testToken) {
		t.Error("token in the log")
	}
	if !p.logged("status=401") {
		t.Error("failed attempt not logged")
	}
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }
