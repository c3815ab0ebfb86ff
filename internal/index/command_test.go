package index_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/index"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "conda")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return !(i > 0 && i+2 < len(b) && b[i+2] == 'Z')
}

// TestCommandKillsProcessGroup runs a real child that starts a grandchild
// and hangs: when the run's context ends, both must be killed, since
// conda-index starts worker processes of its own.
func TestCommandKillsProcessGroup(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	exe := script(t, fmt.Sprintf("sleep 300 &\necho $$ $! > %s\nwait\n", pids))
	c := index.Command{Argv: []string{exe, "index", "{subdir}"}, Channel: t.TempDir(), TempDir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Run(ctx, "linux-64")
	if err == nil {
		t.Fatal("a hung indexer's run succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("run took %s after its context ended", d)
	}
	b, _ := os.ReadFile(pids)
	fs := strings.Fields(string(b))
	if len(fs) != 2 {
		t.Fatalf("pids file %q", b)
	}
	for _, f := range fs {
		pid, _ := strconv.Atoi(f)
		deadline := time.Now().Add(5 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("process %d of the hung indexer survived", pid)
		}
	}
}

// TestCommand checks the child's argv, environment and working dir, and
// how Run judges what the child left behind.
func TestCommand(t *testing.T) {
	channel := t.TempDir()
	out := filepath.Join(t.TempDir(), "out")
	tmp := t.TempDir()
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("SECRET_FROM_PARENT", "x")
	for _, tt := range []struct {
		name     string
		repodata string // written by the child; empty writes none
		exit     int
		wantErr  string
	}{
		{"ok", `{"packages":{"a-1-0.tar.bz2":{}},"packages.conda":{"b-1-0.conda":{}}}`, 0, ""},
		{"crash", "", 3, "exit status 3: boom"},
		{"no repodata", "", 0, "wrote no repodata.json"},
		{"garbage", "{not json", 0, "not valid JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			os.RemoveAll(filepath.Join(channel, "linux-64"))
			body := fmt.Sprintf("printf '%%s\\n' \"$@\" > %s.argv\nenv > %s.env\npwd > %s.pwd\nmkdir -p \"$3/linux-64\"\n", out, out, out)
			if tt.repodata != "" {
				body += fmt.Sprintf("printf '%%s' '%s' > \"$3/linux-64/repodata.json\"\n", tt.repodata)
			}
			if tt.exit != 0 {
				body += fmt.Sprintf("echo boom >&2\nexit %d\n", tt.exit)
			}
			exe := script(t, body)
			c := index.Command{Argv: []string{exe, "index", "{subdir}", "{channel}"}, Channel: channel, TempDir: tmp}
			err := c.Run(context.Background(), "linux-64")
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			argv, _ := os.ReadFile(out + ".argv")
			if got := strings.Fields(string(argv)); !slices.Equal(got, []string{"index", "linux-64", channel}) {
				t.Errorf("argv %q", got)
			}
			if pwd, _ := os.ReadFile(out + ".pwd"); strings.TrimSpace(string(pwd)) != channel {
				t.Errorf("working dir %q", pwd)
			}
			env, _ := os.ReadFile(out + ".env")
			for _, line := range strings.Split(strings.TrimSpace(string(env)), "\n") {
				k, v, _ := strings.Cut(line, "=")
				switch k {
				case "PATH", "LANG", "LC_ALL", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PWD", "SHLVL", "_":
				case "HOME", "TMPDIR":
					if v != tmp {
						t.Errorf("%s=%s, want %s", k, v, tmp)
					}
				case "CONDA_PKGS_DIRS":
					if v != filepath.Join(tmp, "pkgs") {
						t.Errorf("%s=%s", k, v)
					}
				default:
					t.Errorf("the child inherited %s", line)
				}
			}
			if tt.wantErr == "" {
				for _, f := range []string{"a-1-0.tar.bz2", "b-1-0.conda"} {
					if ok, err := c.Has("linux-64", f); !ok || err != nil {
						t.Errorf("Has(%s) = %v, %v", f, ok, err)
					}
				}
				if ok, _ := c.Has("linux-64", "c-1-0.conda"); ok {
					t.Error("Has lists a package the index does not")
				}
			}
		})
	}
}
