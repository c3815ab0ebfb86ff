package repodata_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
)

// TestMain lets the test binary act as the crash test's child: with
// REPODATA_CRASH_CHILD set, it links packages from a pool into a channel
// one at a time and indexes after each, until it is killed.
func TestMain(m *testing.M) {
	if pool := os.Getenv("REPODATA_CRASH_CHILD"); pool != "" {
		crashChild(pool, os.Getenv("REPODATA_CRASH_ROOT"))
		return
	}
	os.Exit(m.Run())
}

func crashChild(pool, root string) {
	// Each run is two hours after the last, so that shards a new version
	// replaced are removed (after the one-hour retention) while runs go on.
	now := time.Now()
	files := repodata.DefaultFiles()
	files.ShardRetention = time.Hour
	files.CurrentRepodata, files.Channeldata = true, true
	x := repodata.New(root, condapkg.DefaultLimits(), quiet(), repodata.WithFiles(files),
		repodata.WithClock(func() time.Time { return now }))
	des, _ := os.ReadDir(pool)
	for {
		for _, de := range des {
			dst := filepath.Join(root, "linux-64", de.Name())
			if _, err := os.Stat(dst); err != nil {
				os.Link(filepath.Join(pool, de.Name()), dst)
			}
			now = now.Add(2 * time.Hour)
			if err := x.Run(context.Background(), "linux-64"); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Println("run")
		}
	}
}

// checkIndexFiles asserts what a client may rely on at any moment, with no
// run to repair anything: every index file is whole, the shard index
// names only shards that exist and are whole, and repodata.json lists only
// packages that exist. It returns the number of packages listed.
func checkIndexFiles(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "repodata.json"))
	if err != nil {
		return 0 // killed before the first run finished
	}
	var doc struct {
		Packages      map[string]any `json:"packages"`
		PackagesConda map[string]any `json:"packages.conda"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("repodata.json is not whole: %v", err)
	}
	for name := range doc.PackagesConda {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("repodata.json lists %s: %v", name, err)
		}
	}
	if z, err := os.ReadFile(filepath.Join(dir, "repodata.json.zst")); err == nil {
		var v any
		if err := json.Unmarshal(unzstd(t, z), &v); err != nil {
			t.Errorf("repodata.json.zst is not whole: %v", err)
		}
	}
	if re, err := os.ReadFile(filepath.Join(dir, "run_exports.json")); err == nil && !json.Valid(re) {
		t.Error("run_exports.json is not whole")
	}
	if cd, err := os.ReadFile(filepath.Join(dir, "..", repodata.ChanneldataFile)); err == nil && !json.Valid(cd) {
		t.Error("channeldata.json is not whole")
	}
	if cur, err := os.ReadFile(filepath.Join(dir, repodata.CurrentRepodataFile)); err == nil {
		var c struct {
			PackagesConda map[string]any `json:"packages.conda"`
		}
		if err := json.Unmarshal(cur, &c); err != nil {
			t.Errorf("current_repodata.json is not whole: %v", err)
		}
		for name := range c.PackagesConda {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				t.Errorf("current_repodata.json lists %s: %v", name, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, repodata.ShardIndexFile)); err == nil {
		for _, sum := range decodeShardIndex(t, dir)["shards"].(map[string]any) {
			readShardFile(t, dir, sum.([]byte)) // fails if missing or torn
		}
	}
	return len(doc.PackagesConda)
}

// TestKillDuringRuns kills a process that indexes without pause at random
// moments, 30 times, and checks the files a client would read right then.
// Then one run in a new process must leave everything consistent again:
// each .zst equal to its JSON.
func TestKillDuringRuns(t *testing.T) {
	pool := t.TempDir()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "linux-64"), 0o755)
	for i := range 40 {
		p := put(t, pool, fmt.Sprintf("crash%d", i%4), fmt.Sprintf("1.%d", i), fmt.Sprintf(`{"weak": ["crash%d >=1.%d"]}`, i%4, i))
		os.Rename(p, filepath.Join(pool, filepath.Base(p)))
	}
	os.RemoveAll(filepath.Join(pool, "linux-64"))
	exe, _ := os.Executable()
	rng := rand.New(rand.NewPCG(7, 11))
	listed := 0
	for round := range 30 {
		if round%10 == 0 {
			// Start over now and then, so that kills land while
			// packages are still being added, not only in idle runs.
			os.RemoveAll(filepath.Join(root, "linux-64"))
			os.MkdirAll(filepath.Join(root, "linux-64"), 0o755)
		}
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), "REPODATA_CRASH_CHILD="+pool, "REPODATA_CRASH_ROOT="+root)
		// Kill it at a random moment after its first whole run, so that
		// every round tests something however slow the machine is.
		if _, err := pkgtest.KillAfterProgress(cmd, rng, 200*time.Millisecond); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		listed += checkIndexFiles(t, filepath.Join(root, "linux-64"))
		// What a crash leaves behind is only temp files, removed at start.
		repodata.RemoveStaleTemps(filepath.Join(root, "linux-64"))
	}
	if listed == 0 {
		t.Fatal("no run ever completed before a kill: the test proved nothing")
	}
	files := repodata.DefaultFiles()
	files.CurrentRepodata, files.Channeldata = true, true
	x := repodata.New(root, condapkg.DefaultLimits(), quiet(), repodata.WithFiles(files))
	if err := x.Run(context.Background(), "linux-64"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "linux-64")
	checkIndexFiles(t, dir)
	for _, f := range []string{"repodata.json", "run_exports.json", repodata.CurrentRepodataFile} {
		if !bytes.Equal(unzstd(t, mustRead(t, filepath.Join(dir, f+".zst"))), mustRead(t, filepath.Join(dir, f))) {
			t.Errorf("%s.zst differs from %s after a clean run", f, f)
		}
	}
	if temps, _ := filepath.Glob(filepath.Join(dir, ".*tmp-*")); len(temps) > 0 && !strings.Contains(temps[0], "index-cache") {
		t.Errorf("temp files after a clean run: %v", temps)
	}
}
