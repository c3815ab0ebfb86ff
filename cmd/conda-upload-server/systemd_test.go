package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
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

// notifyListener is what systemd is to a Type=notify service: a datagram
// socket that collects sd_notify messages.
type notifyListener struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []notifyMsg
}

type notifyMsg struct {
	at   time.Time
	text string
}

func listenNotify(t *testing.T, dir string) *notifyListener {
	t.Helper()
	n := &notifyListener{path: filepath.Join(dir, "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n.conn = conn
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, notifyMsg{time.Now(), string(buf[:k])})
			n.mu.Unlock()
		}
	}()
	return n
}

// count returns how many messages contain s, at or after since.
func (n *notifyListener) count(s string, since time.Time) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if !m.at.Before(since) && strings.Contains(m.text, s) {
			c++
		}
	}
	return c
}

func (n *notifyListener) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for n.count(s, time.Time{}) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no %q notification; got:\n%s", s, n.all())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *notifyListener) all() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var b strings.Builder
	for _, m := range n.msgs {
		fmt.Fprintf(&b, "%s %q\n", m.at.Format("15:04:05.000"), m.text)
	}
	return b.String()
}

// procStatus returns fields of /proc/<pid>/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		out[k] = strings.Join(strings.Fields(v), " ")
	}
	return out
}

// TestSocketActivation runs the server as systemd would: started by
// systemd-socket-activate on the first connection to a socket it holds,
// as root, with NOTIFY_SOCKET and WATCHDOG_USEC. It checks READY, STATUS,
// the watchdog cadence, that pings stop while the server is unhealthy and
// resume after, the privilege drop and no_new_privs, and STOPPING plus a
// clean exit on SIGTERM.
func TestSocketActivation(t *testing.T) {
	testneed.Root(t)
	testneed.Tool(t, "systemd-socket-activate", "systemd")
	testneed.Landlock(t, 2)
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	hashFile := filepath.Join(dir, "token.hash")
	os.WriteFile(hashFile, []byte(auth.Hash(auth.DefaultSalt, testToken)+"\n"), 0o640)
	cfg := userConfig(t, dir, fmt.Sprintf(`
write_dir = %q
certfile = %q
keyfile = %q
token_hash_file = %q
[download]
enabled = true
[sandbox]
landlock = "enforce"
`, root, cert, key, hashFile))
	notify := listenNotify(t, dir)
	port, dport := freePort(t), freePort(t)
	exe, _ := os.Executable()
	const watchdogUsec = 400000 // pings every 200 ms
	// Two sockets, as a unit with a second ListenStream= and
	// FileDescriptorName=download would pass them.
	cmd := exec.Command("systemd-socket-activate", "-l", fmt.Sprintf("127.0.0.1:%d", port), "-l", fmt.Sprintf("127.0.0.1:%d", dport),
		"--fdname=https:download",
		"-E", "CUS_BE_SERVER=1", "-E", "NOTIFY_SOCKET="+notify.path, "-E", "WATCHDOG_USEC="+strconv.Itoa(watchdogUsec),
		"-E", "PATH=/usr/bin:/bin",
		exe, "--config", cfg)
	stderr := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		if t.Failed() {
			t.Logf("stderr:\n%s\nnotify:\n%s", stderr.String(), notify.all())
		}
	}()
	p := &proc{cmd: cmd, port: port, stdout: stderr, stderr: stderr, done: done}
	p.client = tlsClient(pool)
	p.url = fmt.Sprintf("https://localhost:%d/", port)

	// Nothing runs until the first connection.
	time.Sleep(200 * time.Millisecond)
	if notify.count("READY=1", time.Time{}) != 0 {
		t.Fatal("READY before any connection: not socket-activated")
	}
	st, body := p.upload(t, testToken, corpusFile("cph/mock-2.0.0-py37_1000.conda"))
	if st != 201 {
		t.Fatalf("upload over the activated socket: %d %v", st, body)
	}
	notify.waitFor(t, "READY=1", 5*time.Second)
	if !p.logged("socket_activated=true") {
		t.Error("server did not use the passed socket")
	}
	if n := notify.count("STATUS=serving https", time.Time{}); n == 0 {
		t.Error("no STATUS line with READY")
	}
	// The socket named download serves the channel, and only it does.
	for u, want := range map[string]int{
		fmt.Sprintf("https://localhost:%d/osx-64/mock-2.0.0-py37_1000.conda", dport): 200,
		p.url + "osx-64/mock-2.0.0-py37_1000.conda":                                  404,
	} {
		resp, err := p.client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", u, resp.StatusCode, want)
		}
	}

	// The process systemd-socket-activate exec'd is the server.
	status := procStatus(t, cmd.Process.Pid)
	if status["Uid"] != "65534 65534 65534 65534" || status["Gid"] != "65534 65534 65534 65534" || status["Groups"] != "" {
		t.Errorf("credentials: Uid %q Gid %q Groups %q", status["Uid"], status["Gid"], status["Groups"])
	}
	if status["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %q", status["NoNewPrivs"])
	}
	if !p.logged("landlock ABI") || !p.logged("enforced=true") {
		t.Error("log does not state the Landlock ABI and enforcement")
	}

	// Watchdog cadence: about every 200 ms.
	since := time.Now()
	time.Sleep(2 * time.Second)
	if n := notify.count("WATCHDOG=1", since); n < 5 || n > 15 {
		t.Errorf("%d watchdog pings in 2 s with WATCHDOG_USEC=%d, want about 10", n, watchdogUsec)
	}

	// Unhealthy: the channel stops being writable. Pings must stop.
	incoming := filepath.Join(root, ".incoming")
	os.Chmod(incoming, 0o500)
	notify.waitFor(t, "STATUS=unhealthy", 5*time.Second) // the tick that withholds its ping
	since = time.Now()
	time.Sleep(1500 * time.Millisecond)
	if n := notify.count("WATCHDOG=1", since); n != 0 {
		t.Errorf("%d watchdog pings while the channel is not writable", n)
	}
	if notify.count("STATUS=unhealthy", time.Time{}) == 0 {
		t.Error("no unhealthy STATUS")
	}
	os.Chmod(incoming, 0o700)
	since = time.Now()
	waitUntil(t, func() bool { return notify.count("WATCHDOG=1", since) > 0 }) // pings resume once healthy

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if notify.count("STOPPING=1", time.Time{}) == 0 {
		t.Error("no STOPPING=1")
	}
}

// TestRefuseRoot checks that the server will not serve as root unless
// told to, and that allow_root is the escape hatch.
func TestRefuseRoot(t *testing.T) {
	testneed.Root(t)
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	hash := auth.Hash(auth.DefaultSalt, testToken)
	cmd := command(t, "-d", filepath.Join(dir, "ch"), "-p", strconv.Itoa(freePort(t)), "-c", cert, "-k", key, "-t", hash)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing to run as root: pass --user NAME") {
		t.Errorf("as root without user: %v %s", err, out)
	}
	// The original command line plus --user is enough.
	port0 := freePort(t)
	ch := serviceOwned(t, filepath.Join(dir, "ch-user"))
	pu := startServer(t, pool, port0, "-d", ch, "-p", strconv.Itoa(port0), "-c", cert, "-k", key, "-t", hash, "--user", "nobody")
	if s := procStatus(t, pu.cmd.Process.Pid); !strings.HasPrefix(s["Uid"], strconv.Itoa(nobody)+" ") {
		t.Errorf("--user nobody: Uid %q", s["Uid"])
	}
	if st, body := pu.upload(t, testToken, corpusFile("quetz/other-package-0.2-0.conda")); st != 201 {
		t.Errorf("upload as --user nobody: %d %v", st, body)
	}
	cfgPath := filepath.Join(dir, "root.toml")
	os.WriteFile(cfgPath, []byte("allow_root = true\n"), 0o644)
	port := freePort(t)
	p := startServer(t, pool, port, "--config", cfgPath, "-d", filepath.Join(dir, "ch"), "-p", strconv.Itoa(port), "-c", cert, "-k", key, "-t", hash)
	if s := procStatus(t, p.cmd.Process.Pid); !strings.HasPrefix(s["Uid"], "0 ") || s["NoNewPrivs"] != "1" {
		t.Errorf("allow_root: Uid %q NoNewPrivs %q", s["Uid"], s["NoNewPrivs"])
	}
	if !p.logged("running as root (allow_root = true)") {
		t.Error("no warning for allow_root")
	}
}

// TestLandlockConfinesIndexer starts the server as root with the conda
// stand-in as its indexer. The stand-in, a child of the confined server,
// probes the sandbox: reading a file outside the allowed paths and
// creating one outside the channel must fail, writing in the channel must
// work, and so must opening a TCP connection be refused.
func TestLandlockConfinesIndexer(t *testing.T) {
	testneed.Root(t)
	testneed.Landlock(t, 4)
	ctl := serviceOwned(t, shared(t))
	exe := standIn(t, ctl)
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	// A secret the service user could read, were it not for Landlock,
	// and a directory it could write to.
	secretDir := serviceOwned(t, shared(t))
	secret := filepath.Join(secretDir, "secret.txt")
	os.WriteFile(secret, []byte("top secret"), 0o644)
	os.Chown(secret, nobody, nobody)
	port := freePort(t)
	os.WriteFile(filepath.Join(ctl, "probe"), []byte(secret+"\n"+filepath.Join(secretDir, "escape.txt")+"\n"+strconv.Itoa(freePort(t))), 0o644)
	cfg := userConfig(t, dir, fmt.Sprintf(`
write_dir = %q
port = %d
conda_exe = %q
certfile = %q
keyfile = %q
token_hash = %q
[sandbox]
landlock = "enforce"
write_paths = [%q]
`, root, port, exe, cert, key, auth.Hash(auth.DefaultSalt, testToken), ctl))
	tmpBefore, _ := filepath.Glob("/tmp/conda-upload-server-index-*")
	p := startServer(t, pool, port, "--config", cfg)
	b, err := os.ReadFile(filepath.Join(ctl, "probe-result"))
	if err != nil {
		t.Fatalf("the stand-in wrote no probe result: %v", err)
	}
	var got = map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	want := map[string]string{"read_secret": "denied", "create_outside": "denied", "write_channel": "ok", "tcp_connect": "denied",
		"proc_self_status": "ok", "proc_self_mounts": "ok", "write_tmpdir": "ok"}
	for k, v := range want {
		if !strings.HasPrefix(got[k], v) {
			t.Errorf("%s: %q, want %s", k, got[k], v)
		}
	}
	if _, err := os.Stat(filepath.Join(secretDir, "escape.txt")); err == nil {
		t.Error("the indexer created a file outside the channel")
	}

	// The indexer's temp dir is gone after a clean stop, and none is
	// left in /tmp.
	tmpdir, _ := os.ReadFile(filepath.Join(ctl, "tmpdir"))
	if !strings.HasPrefix(string(tmpdir), root+"/") {
		t.Errorf("indexer TMPDIR %q is not inside the channel", tmpdir)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.done; err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	p.done <- nil
	if _, err := os.Stat(string(tmpdir)); !os.IsNotExist(err) {
		t.Errorf("indexer temp dir %s left after SIGTERM: %v", tmpdir, err)
	}
	// And after a start that fails: the start-up index run crashes.
	os.WriteFile(filepath.Join(ctl, "fail"), nil, 0o644)
	os.Remove(filepath.Join(root, "noarch", "repodata.json"))
	out, err := command(t, "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "simulated crash") {
		t.Fatalf("start with a crashing indexer: %v %s", err, out)
	}
	if _, err := os.Stat(string(tmpdir)); !os.IsNotExist(err) {
		t.Errorf("indexer temp dir %s left after a failed start: %v", tmpdir, err)
	}
	if tmpAfter, _ := filepath.Glob("/tmp/conda-upload-server-index-*"); len(tmpAfter) != len(tmpBefore) {
		t.Errorf("temp dirs in /tmp: %v before, %v after", tmpBefore, tmpAfter)
	}
}
