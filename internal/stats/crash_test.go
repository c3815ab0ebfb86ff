package stats

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
)

// TestMain lets the test binary act as the crash test's child: with
// STATS_CRASH_DIR set, it counts downloads without pause, flushing now
// and then and printing the total each flush made durable, until killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("STATS_CRASH_DIR"); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

func crashChild(dir string) {
	c, err := Open(Options{Dir: dir, FlushEvery: 5 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for {
		for range 1 + rng.IntN(500) {
			f := fmt.Sprintf("linux-64/pkg%d-1.0-0.conda", rng.IntN(50))
			c.Record(f, "10.0.0.1", false, time.Now())
		}
		if err := c.Flush(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(c.Total())
	}
}

// TestKillDuringCounting kills a process that counts and flushes without
// pause at random moments, 20 times. After each kill the log must open,
// hold at least every count the last finished flush had made durable,
// and agree with itself: per file, per package and per day add up to
// the same total.
func TestKillDuringCounting(t *testing.T) {
	dir := t.TempDir()
	exe, _ := os.Executable()
	rng := rand.New(rand.NewPCG(7, 11))
	var lastTotal uint64
	for round := range 20 {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), "STATS_CRASH_DIR="+dir)
		out, err := pkgtest.KillAfterProgress(cmd, rng, 100*time.Millisecond)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		lines := strings.Fields(out[:strings.LastIndexByte(out, '\n')]) // whole lines
		flushed, _ := strconv.ParseUint(lines[len(lines)-1], 10, 64)
		c := open(t, dir)
		got := c.Total()
		if got < flushed || got < lastTotal {
			t.Fatalf("round %d: %d counts after the kill, but %d were flushed (and %d before this round)", round, got, flushed, lastTotal)
		}
		checkConsistent(t, c)
		lastTotal = got
		c.Close()
	}
	t.Logf("%d downloads counted across 20 kills", lastTotal)
}

func checkConsistent(t *testing.T, c *Counter) {
	t.Helper()
	var files, pkgs, days uint64
	for _, n := range c.fileTot {
		files += n
	}
	for _, n := range c.pkgTot {
		pkgs += n
	}
	for _, n := range c.dayTot {
		days += n
	}
	if files != c.total || pkgs != c.total || days != c.total {
		t.Fatalf("counts disagree: total %d, per file %d, per package %d, per day %d", c.total, files, pkgs, days)
	}
}
