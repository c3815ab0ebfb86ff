package repodata_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// put writes a small valid package into root/linux-64.
func put(t *testing.T, root, name, version string, runExports string) string {
	t.Helper()
	s := pkgtest.Simple(name, version, "0", "linux-64")
	if runExports != "" {
		s.Info = append(s.Info, pkgtest.Member{Name: "info/run_exports.json", Data: []byte(runExports)})
	}
	p := filepath.Join(root, "linux-64", s.Stem()+".conda")
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, pkgtest.Conda(t, s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// shardFiles lists the shard files in dir with their inode numbers.
func shardFiles(t *testing.T, dir string) map[string]uint64 {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, de := range des {
		n := de.Name()
		if strings.HasSuffix(n, ".msgpack.zst") && n != repodata.ShardIndexFile && !strings.HasPrefix(n, ".") {
			fi, _ := de.Info()
			out[n] = fi.Sys().(*syscall.Stat_t).Ino
		}
	}
	return out
}

// named returns the shard file the index names for a package name.
func named(t *testing.T, dir, name string) string {
	t.Helper()
	idx := decodeShardIndex(t, dir)
	sum, ok := idx["shards"].(map[string]any)[name].([]byte)
	if !ok {
		return ""
	}
	return hex.EncodeToString(sum) + ".msgpack.zst"
}

// TestShardUpdatesAndRetention: a run rewrites only the shards of names
// that changed; a shard no index names any more stays for the retention
// period, then goes; run exports reach shards and run_exports.json.
func TestShardUpdatesAndRetention(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "linux-64")
	for i := range 5 {
		put(t, root, fmt.Sprintf("stable%d", i), "1.0", "")
	}
	put(t, root, "libfoo", "1.0", `{"weak": ["libfoo >=1.0,<2"]}`)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	files := repodata.DefaultFiles()
	files.ShardRetention = time.Hour
	x := repodata.New(root, condapkg.DefaultLimits(), quiet(), repodata.WithFiles(files), repodata.WithClock(func() time.Time { return now }))
	run := func() {
		t.Helper()
		if err := x.Run(context.Background(), "linux-64"); err != nil {
			t.Fatal(err)
		}
	}
	run()
	before := shardFiles(t, dir)
	if len(before) != 6 {
		t.Fatalf("%d shard files for 6 names", len(before))
	}
	oldFoo := named(t, dir, "libfoo")
	if !strings.Contains(string(mustRead(t, filepath.Join(dir, "run_exports.json"))), `"libfoo-1.0-0.conda":{"run_exports":{"weak":["libfoo >=1.0,<2"]}}`) {
		t.Errorf("run_exports.json: %s", mustRead(t, filepath.Join(dir, "run_exports.json")))
	}

	// A new version of libfoo: only libfoo's shard is new.
	now = now.Add(time.Minute)
	put(t, root, "libfoo", "1.1", `{"weak": ["libfoo >=1.1,<2"]}`)
	run()
	after := shardFiles(t, dir)
	newFoo := named(t, dir, "libfoo")
	if newFoo == oldFoo || after[newFoo] == 0 {
		t.Fatalf("libfoo's shard was not rewritten: %s", newFoo)
	}
	for f, ino := range before {
		if after[f] != ino {
			t.Errorf("shard %s was rewritten or removed (inode %d → %d)", f, ino, after[f])
		}
	}
	if len(after) != 7 {
		t.Errorf("%d shard files, want 6 named and 1 kept for retention", len(after))
	}

	// Within the retention period the old shard stays; after it, it goes.
	now = now.Add(59 * time.Minute)
	run()
	if _, ok := shardFiles(t, dir)[oldFoo]; !ok {
		t.Error("an unnamed shard was removed before the retention period")
	}
	now = now.Add(2 * time.Minute)
	run()
	if _, ok := shardFiles(t, dir)[oldFoo]; ok {
		t.Error("an unnamed shard outlived the retention period")
	}
	if n := len(shardFiles(t, dir)); n != 6 {
		t.Errorf("%d shard files after retention, want 6", n)
	}

	// Turning a kind of file off removes it, so that it cannot go stale.
	off := repodata.Files{ShardRetention: time.Hour}
	y := repodata.New(root, condapkg.DefaultLimits(), quiet(), repodata.WithFiles(off))
	if err := y.Run(context.Background(), "linux-64"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"repodata.json.zst", "run_exports.json", "run_exports.json.zst", repodata.ShardIndexFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s kept after being turned off: %v", f, err)
		}
	}
}

// TestDiskFullDuringRun fills a small tmpfs so that a run cannot write
// its index files: the old files stay whole, the run fails, and the next
// run succeeds once there is space.
func TestDiskFullDuringRun(t *testing.T) {
	testneed.Root(t)
	root := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", root).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", root).Run() })
	dir := filepath.Join(root, "linux-64")
	for i := range 3 {
		put(t, root, fmt.Sprintf("pkg%d", i), "1.0", "")
	}
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	if err := x.Run(context.Background(), "linux-64"); err != nil {
		t.Fatal(err)
	}
	index := []string{"repodata.json", "repodata.json.zst", "run_exports.json", "run_exports.json.zst", repodata.ShardIndexFile}
	old := map[string][]byte{}
	for _, f := range index {
		old[f] = mustRead(t, filepath.Join(dir, f))
	}
	put(t, root, "newpkg", "1.0", "")
	filler := filepath.Join(root, "filler")
	exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=4k").Run() // fills the file system, then fails
	err := x.Run(context.Background(), "linux-64")
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("run on a full disk: %v", err)
	}
	for _, f := range index {
		if got := mustRead(t, filepath.Join(dir, f)); string(got) != string(old[f]) {
			t.Errorf("%s changed on a failed run", f)
		}
	}
	temps, _ := filepath.Glob(filepath.Join(dir, ".*tmp-*"))
	if len(temps) > 0 {
		t.Errorf("temp files left: %v", temps)
	}
	os.Remove(filler)
	if err := x.Run(context.Background(), "linux-64"); err != nil {
		t.Fatalf("run after freeing space: %v", err)
	}
	if !strings.Contains(string(mustRead(t, filepath.Join(dir, "repodata.json"))), "newpkg-1.0-0.conda") || named(t, dir, "newpkg") == "" {
		t.Error("the package is not indexed after space was freed")
	}
	for name := range decodeShardIndex(t, dir)["shards"].(map[string]any) {
		readShardFile(t, dir, mustDecodeHex(t, strings.TrimSuffix(named(t, dir, name), ".msgpack.zst")))
	}
}

func mustDecodeHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHandChangesSeen: a run that finds the directory as the last run
// left it skips looking names up one by one; a package added or removed
// by hand (or a shard deleted) between two runs of the same Writer must
// still be seen.
func TestHandChangesSeen(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "linux-64")
	put(t, root, "a", "1.0", "")
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	run := func() []string {
		t.Helper()
		if err := x.Run(context.Background(), "linux-64"); err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Packages map[string]any `json:"packages.conda"`
		}
		json.Unmarshal(mustRead(t, filepath.Join(dir, "repodata.json")), &doc)
		return slices.Sorted(maps.Keys(doc.Packages))
	}
	run()
	run() // a run with nothing changed
	put(t, root, "b", "1.0", "")
	if got := run(); !slices.Equal(got, []string{"a-1.0-0.conda", "b-1.0-0.conda"}) {
		t.Errorf("after adding b by hand: %v", got)
	}
	os.Remove(filepath.Join(dir, "a-1.0-0.conda"))
	if got := run(); !slices.Equal(got, []string{"b-1.0-0.conda"}) {
		t.Errorf("after removing a by hand: %v", got)
	}
	// A shard deleted by hand is written again, with nothing else
	// changed: the index never names a missing shard.
	shard := named(t, dir, "b")
	os.Remove(filepath.Join(dir, shard))
	run()
	if _, err := os.Stat(filepath.Join(dir, shard)); err != nil {
		t.Errorf("the shard deleted by hand was not written again: %v", err)
	}
	for _, sum := range decodeShardIndex(t, dir)["shards"].(map[string]any) {
		readShardFile(t, dir, sum.([]byte)) // fails if missing
	}
}
