package lifecycle_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

var labels = []string{"main", "dev", "staging"}

const subdir = "linux-64"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestMain lets the test binary act as the crash test's child: with
// LIFECYCLE_CRASH_ROOT set, it copies, moves, deletes and yanks packages
// between labels at random, indexing what each change touched as the
// server does, until it is killed.
func TestMain(m *testing.M) {
	if root := os.Getenv("LIFECYCLE_CRASH_ROOT"); root != "" {
		crashChild(root)
		return
	}
	os.Exit(m.Run())
}

func holders(root, fn string) []string {
	var out []string
	for _, l := range labels {
		if _, err := os.Lstat(filepath.Join(root, store.Dir(l, subdir), fn)); err == nil {
			out = append(out, l)
		}
	}
	return out
}

func crashChild(root string) {
	st, err := store.Open(root)
	if err != nil {
		panic(err)
	}
	m := lifecycle.New(st)
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	index := func(ls ...string) {
		for _, l := range ls {
			if err := x.Run(context.Background(), store.Dir(l, subdir)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
	}
	des, _ := os.ReadDir(os.Getenv("LIFECYCLE_CRASH_POOL"))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for {
		fn := des[rng.IntN(len(des))].Name()
		have := holders(root, fn)
		from := have[rng.IntN(len(have))]
		var to string
		for _, l := range labels {
			if !slices.Contains(have, l) {
				to = l
			}
		}
		var err error
		op := rng.IntN(4)
		switch {
		case op == 0 && to != "":
			_, err = m.Move(from, subdir, fn, to)
			index(to, from)
			fmt.Println("move")
		case op == 1 && to != "":
			_, err = m.Copy(from, subdir, fn, to)
			index(to)
			fmt.Println("copy")
		case op == 2 && len(have) > 1:
			_, err = m.Delete(from, subdir, fn)
			index(from)
			fmt.Println("delete")
		case op == 3:
			_, _, err = m.SetYank(from, subdir, fn, rng.IntN(2) == 0, lifecycle.Yank{Reason: "crash test"})
			index(from)
			fmt.Println("yank")
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestKillDuringChanges kills a process that changes packages without
// pause at random moments, 30 times. After each kill every package must
// be whole in at least one label (a move or delete never leaves it in
// neither), and every copy in the trash whole too. Then the start-up's
// work (derive the patch files, index every label) must leave each
// label's index listing exactly its files, less the yanked ones, which
// are listed as removed.
func TestKillDuringChanges(t *testing.T) {
	root, pool := t.TempDir(), t.TempDir()
	want := map[string]string{} // filename → sha256
	for i := range 6 {
		spec := pkgtest.Simple(fmt.Sprintf("crash%d", i), "1.0", "0", subdir)
		fn := spec.Stem() + ".conda"
		if err := os.WriteFile(filepath.Join(pool, fn), pkgtest.Conda(t, spec), 0o644); err != nil {
			t.Fatal(err)
		}
		want[fn] = sha(t, filepath.Join(pool, fn))
		os.MkdirAll(filepath.Join(root, subdir), 0o755)
		if err := os.Link(filepath.Join(pool, fn), filepath.Join(root, subdir, fn)); err != nil {
			t.Fatal(err)
		}
	}
	exe, _ := os.Executable()
	rng := rand.New(rand.NewPCG(5, 17))
	ops := map[string]int{}
	for round := range 30 {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), "LIFECYCLE_CRASH_ROOT="+root, "LIFECYCLE_CRASH_POOL="+pool)
		// Kill it at a random moment after its first change, so that
		// every round tests something however slow the machine is.
		out, err := pkgtest.KillAfterProgress(cmd, rng, 150*time.Millisecond)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, op := range strings.Fields(out) {
			ops[op]++
		}
		checkFiles(t, root, want)
		restart(t, root)
	}
	for _, op := range []string{"move", "copy", "delete", "yank"} {
		if ops[op] == 0 {
			t.Errorf("no %s completed in any round: the test proved little (%v)", op, ops)
		}
	}
	t.Logf("changes completed between kills: %v", ops)
}

// checkFiles asserts what holds at any moment, with nothing repaired:
// every package is in some label, and every file a label or the trash
// holds is a whole copy of its package.
func checkFiles(t *testing.T, root string, want map[string]string) {
	t.Helper()
	for fn := range want {
		if len(holders(root, fn)) == 0 {
			t.Fatalf("%s is in no label", fn)
		}
	}
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if w, ok := want[d.Name()]; ok && !d.IsDir() {
			if got := sha(t, path); got != w {
				t.Errorf("%s is not a whole copy: sha256 %s", path, got)
			}
		}
		return nil
	})
}

// restart does what the server does at start, then checks each label's
// index against its files.
func restart(t *testing.T, root string) {
	t.Helper()
	st, err := store.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	m := lifecycle.New(st)
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	for _, l := range labels {
		dir := store.Dir(l, subdir)
		if _, err := os.Stat(filepath.Join(root, dir)); err != nil {
			continue
		}
		if err := repodata.RemoveStaleTemps(filepath.Join(root, dir)); err != nil {
			t.Fatal(err)
		}
		if err := m.Refresh(dir); err != nil {
			t.Fatal(err)
		}
		if err := x.Run(context.Background(), dir); err != nil {
			t.Fatal(err)
		}
		files, err := m.List(l, subdir)
		if err != nil {
			t.Fatal(err)
		}
		var onDisk, yanked []string
		for _, f := range files {
			if f.Yanked {
				yanked = append(yanked, f.Filename)
			} else {
				onDisk = append(onDisk, f.Filename)
			}
		}
		b, err := os.ReadFile(filepath.Join(root, dir, "repodata.json"))
		if err != nil {
			t.Fatal(err)
		}
		var rd struct {
			Packages map[string]any `json:"packages.conda"`
			Removed  []string       `json:"removed"`
		}
		if err := json.Unmarshal(b, &rd); err != nil {
			t.Fatal(err)
		}
		var listed []string
		for fn := range rd.Packages {
			listed = append(listed, fn)
		}
		slices.Sort(listed)
		if !slices.Equal(listed, onDisk) || !slices.Equal(rd.Removed, yanked) && len(rd.Removed)+len(yanked) > 0 {
			t.Errorf("label %s after a clean run: lists %v, removed %v; on disk %v, yanked %v", l, listed, rd.Removed, onDisk, yanked)
		}
	}
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if strings.Contains(d.Name(), ".tmp-") {
			t.Errorf("temp file after a clean start: %s", path)
		}
		return nil
	})
}
