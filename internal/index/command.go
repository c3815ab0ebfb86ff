package index

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Command indexes by running conda (conda-index) as a child process.
type Command struct {
	// Argv is the command line: conda_exe followed by the [index] command
	// template, with {channel} and {subdir} still in it.
	Argv []string
	// Channel is the channel root.
	Channel string
	// TempDir is the child's TMPDIR.
	TempDir string
}

// Name implements Runner.
func (Command) Name() string { return "conda" }

// args fills in the template. A label's subdir (label/<L>/<subdir>) is
// indexed as a channel of its own: {channel} is the label's folder.
func (c Command) args(dir string) []string {
	channel, subdir := c.Channel, dir
	if i := strings.LastIndexByte(dir, '/'); i >= 0 {
		channel, subdir = filepath.Join(c.Channel, dir[:i]), dir[i+1:]
	}
	out := make([]string, len(c.Argv))
	for i, a := range c.Argv {
		a = strings.ReplaceAll(a, "{channel}", channel)
		out[i] = strings.ReplaceAll(a, "{subdir}", subdir)
	}
	return out
}

// env is the child's whole environment. Nothing is inherited: not the
// systemd variables (NOTIFY_SOCKET, WATCHDOG_*, LISTEN_*, credentials),
// and not whatever the service manager happened to set.
func (c Command) env() []string {
	bin := filepath.Dir(c.Argv[0])
	tmp := c.TempDir
	if tmp == "" {
		tmp = os.TempDir()
	}
	return []string{
		"PATH=" + bin + ":/usr/local/bin:/usr/bin:/bin",
		"HOME=" + tmp,
		"TMPDIR=" + tmp,
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONUNBUFFERED=1",
		"CONDA_PKGS_DIRS=" + filepath.Join(tmp, "pkgs"),
	}
}

// Run implements Runner. The child runs in its own process group, and the
// whole group is killed when ctx ends, because conda-index starts worker
// processes of its own.
func (c Command) Run(ctx context.Context, subdir string) error {
	args := c.args(subdir)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = c.env()
	cmd.Dir = c.Channel
	if err := ownGroup(cmd); err != nil {
		return err
	}
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &tailBuffer{b: &out, max: 64 << 10}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, lastLine(out.Bytes()))
	}
	// conda-index exits 0 after skipping packages it cannot read, and a
	// broken indexer may write garbage: check what it left.
	b, err := os.ReadFile(filepath.Join(c.Channel, subdir, "repodata.json"))
	if err != nil {
		return fmt.Errorf("indexer wrote no repodata.json: %w", err)
	}
	if !json.Valid(b) {
		return errors.New("indexer wrote a repodata.json that is not valid JSON")
	}
	return nil
}

// Has implements Runner by reading the subdir's repodata.json.
func (c Command) Has(subdir, filename string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(c.Channel, subdir, "repodata.json"))
	if err != nil {
		return false, err
	}
	var doc struct {
		Packages      map[string]json.RawMessage `json:"packages"`
		PackagesConda map[string]json.RawMessage `json:"packages.conda"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return false, fmt.Errorf("repodata.json: %w", err)
	}
	_, a := doc.Packages[filename]
	_, b2 := doc.PackagesConda[filename]
	return a || b2, nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// tailBuffer keeps about the last max bytes of a child's output, where
// its error message is.
type tailBuffer struct {
	b   *bytes.Buffer
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b.Write(p)
	if t.b.Len() > 2*t.max {
		t.b.Next(t.b.Len() - t.max)
	}
	return len(p), nil
}
