package sandbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/sandbox"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// Landlock cannot be undone, so each probe runs in a fresh copy of the
// test binary: TestMain runs the probe named by SANDBOX_PROBE and prints
// its findings as JSON.
func TestMain(m *testing.M) {
	if dir := os.Getenv("SANDBOX_PROBE_DIR"); dir != "" {
		os.Exit(probe(dir))
	}
	os.Exit(m.Run())
}

type findings map[string]string

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return "denied"
	}
	return "error: " + err.Error()
}

// probe confines itself to dir/rw and reports what it can still do.
func probe(dir string) int {
	// Dialled before the sandbox, as the server does with NOTIFY_SOCKET.
	notify, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: "@" + os.Getenv("SANDBOX_ABSTRACT"), Net: "unixgram"})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	rw := filepath.Join(dir, "rw")
	r, err := sandbox.Restrict(sandbox.Enforce, sandbox.Policy{
		WriteDirs: []string{rw},
		ExecDirs:  sandbox.SystemExecDirs(),
		ReadFiles: sandbox.SystemReadFiles(),
	})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	f := findings{"enforced": fmt.Sprint(r.Enforced)}
	_, err = os.ReadFile(filepath.Join(dir, "secret"))
	f["read_outside"] = outcome(err)
	f["write_outside"] = outcome(os.WriteFile(filepath.Join(dir, "escape"), []byte("x"), 0o644))
	f["write_inside"] = outcome(os.WriteFile(filepath.Join(rw, "a", "file"), []byte("x"), 0o644))
	// Publishing links across directories inside the channel.
	f["link_inside"] = outcome(os.Link(filepath.Join(rw, "a", "file"), filepath.Join(rw, "b", "file")))
	// Children inherit the sandbox, and start with nil stdio (/dev/null).
	f["child_read_outside"] = outcome(exec.Command("/bin/cat", filepath.Join(dir, "secret")).Run())
	f["child_nil_stdio"] = outcome(exec.Command("/bin/true").Run())
	// The parent can still kill its children (no signal scope).
	var wg sync.WaitGroup
	var mu sync.Mutex
	kills := 0
	for range 20 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			err := exec.CommandContext(ctx, "/bin/sleep", "10").Run()
			if err != nil && strings.Contains(err.Error(), "killed") {
				mu.Lock()
				kills++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	f["kill_children"] = fmt.Sprintf("%d/20", kills)
	conn, err := net.DialTimeout("tcp4", os.Getenv("SANDBOX_TCP"), time.Second)
	if conn != nil {
		conn.Close()
	}
	f["tcp_connect"] = outcome(err)
	_, err = notify.Write([]byte("READY=1"))
	f["predialled_notify"] = outcome(err)
	_, err = net.DialUnix("unixgram", nil, &net.UnixAddr{Name: "@" + os.Getenv("SANDBOX_ABSTRACT"), Net: "unixgram"})
	f["new_abstract_dial"] = outcome(err)
	json.NewEncoder(os.Stdout).Encode(f)
	return 0
}

func TestRestrict(t *testing.T) {
	testneed.Landlock(t, 6)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "secret"), []byte("secret"), 0o644)
	for _, d := range []string{"rw/a", "rw/b"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	abstract := fmt.Sprintf("sandbox-test-%d", os.Getpid())
	un, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "@" + abstract, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer un.Close()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 64)
		n, _ := un.Read(buf)
		got <- string(buf[:n])
	}()

	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "SANDBOX_PROBE_DIR="+dir, "SANDBOX_TCP="+tcp.Addr().String(), "SANDBOX_ABSTRACT="+abstract)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	var f findings
	if err := json.Unmarshal(out, &f); err != nil {
		t.Fatalf("probe output %q: %v", out, err)
	}
	want := findings{
		"enforced":           "true",
		"read_outside":       "denied",
		"write_outside":      "denied",
		"write_inside":       "ok",
		"link_inside":        "ok",
		"child_read_outside": "error: exit status 1",
		"child_nil_stdio":    "ok",
		"kill_children":      "20/20",
		"tcp_connect":        "denied",
		"predialled_notify":  "ok",
		"new_abstract_dial":  "denied",
	}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s = %q, want %q", k, f[k], v)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "escape")); err == nil {
		t.Error("a file was created outside the sandbox")
	}
	select {
	case m := <-got:
		if m != "READY=1" {
			t.Errorf("notify got %q", m)
		}
	case <-time.After(2 * time.Second):
		t.Error("the pre-dialled notify message never arrived")
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"enforce", "best-effort", "off"} {
		if _, err := sandbox.ParseMode(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := sandbox.ParseMode("strict"); err == nil {
		t.Error("strict accepted")
	}
}
