package stats

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var day0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func open(t *testing.T, dir string) *Counter {
	t.Helper()
	c, err := Open(Options{Dir: dir, FlushEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCountsSurviveRestart counts downloads of files of two packages on
// two days, closes, reopens, and finds every total and daily count.
func TestCountsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir)
	next := day0.Add(24 * time.Hour)
	for range 3 {
		c.Record("linux-64/foo-1.0-0.conda", "10.0.0.1", false, day0)
	}
	c.Record("noarch/foo-1.1-0.tar.bz2", "10.0.0.1", false, next)
	c.Record("linux-64/bar-2-h1.conda", "10.0.0.2", false, next)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = open(t, dir)
	defer c.Close()
	d := DayOf(day0)
	for _, tc := range []struct {
		what      string
		got, want any
	}{
		{"total", c.Total(), uint64(5)},
		{"file", c.File("linux-64/foo-1.0-0.conda"), uint64(3)},
		{"package foo", c.Package("foo"), uint64(4)},
		{"package bar", c.Package("bar"), uint64(1)},
		{"foo per day", c.Daily("foo", d, d+2), []uint64{3, 1, 0}},
		{"channel per day", c.Daily("", d, d+1), []uint64{3, 2}},
		{"file per day", second(c.Sum([]string{"noarch/foo-1.1-0.tar.bz2"}, d, d+1)), []uint64{0, 1}},
	} {
		if !equal(tc.got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.what, tc.got, tc.want)
		}
	}
}

func second(_ uint64, days []uint64) []uint64 { return days }

func equal(a, b any) bool {
	if x, ok := a.([]uint64); ok {
		return slices.Equal(x, b.([]uint64))
	}
	return a == b
}

// TestRangesOncePerClientPerDay: a client's ranges of one file count
// once a day; another client's, another day's and whole GETs count.
func TestRangesOncePerClientPerDay(t *testing.T) {
	c := open(t, t.TempDir())
	defer c.Close()
	f := "linux-64/foo-1.0-0.conda"
	for range 5 {
		c.Record(f, "10.0.0.1", true, day0)
	}
	c.Record("linux-64/foo-1.1-0.conda", "10.0.0.1", true, day0)
	c.Record(f, "10.0.0.2", true, day0)
	c.Record(f, "10.0.0.1", true, day0.Add(24*time.Hour))
	c.Record(f, "10.0.0.1", false, day0)
	c.Record(f, "10.0.0.1", false, day0)
	if got := c.File(f); got != 5 {
		t.Errorf("file counted %d times, want 5 (1 + 1 other client + 1 next day + 2 whole)", got)
	}
	if got := c.Total(); got != 6 {
		t.Errorf("total %d, want 6", got)
	}
}

// TestTornTail: a frame cut short by a crash is cut off at the next
// open; what came before stays, and later frames follow it cleanly.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir)
	c.Record("linux-64/foo-1.0-0.conda", "a", false, day0)
	c.Flush()
	c.Record("linux-64/foo-1.0-0.conda", "a", false, day0)
	c.Record("linux-64/bar-1.0-0.conda", "a", false, day0)
	c.Close()
	path := filepath.Join(dir, LogName)
	fi, _ := os.Stat(path)
	for _, cut := range []int64{1, 5, 9} {
		t.Run("", func(t *testing.T) {
			b, _ := os.ReadFile(path)
			os.WriteFile(path, b[:fi.Size()-cut], 0o640)
			c := open(t, dir)
			if c.Total() != 1 || c.log.cut == 0 {
				t.Fatalf("after cutting %d bytes: total %d, cut %d; want 1 and the torn frame cut off", cut, c.Total(), c.log.cut)
			}
			c.Record("linux-64/baz-1.0-0.conda", "a", false, day0)
			c.Close()
			c = open(t, dir)
			defer c.Close()
			if c.Total() != 2 || c.log.cut != 0 {
				t.Errorf("a frame appended after the cut: total %d, cut %d; want 2 and nothing cut", c.Total(), c.log.cut)
			}
			os.WriteFile(path, b, 0o640)
		})
	}
}

// TestCorruptFrame: a frame whose checksum does not match ends the
// replay there, so a flipped bit never becomes a wrong count.
func TestCorruptFrame(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir)
	c.Record("linux-64/foo-1.0-0.conda", "a", false, day0)
	c.Flush()
	c.Record("linux-64/foo-1.0-0.conda", "a", false, day0)
	c.Close()
	path := filepath.Join(dir, LogName)
	b, _ := os.ReadFile(path)
	b[len(b)-1] ^= 0x40 // the second frame's count
	os.WriteFile(path, b, 0o640)
	c = open(t, dir)
	defer c.Close()
	if c.Total() != 1 {
		t.Errorf("total %d after a corrupt frame, want 1", c.Total())
	}
}

// TestCompaction: once the log has grown, it is rewritten as one frame;
// days past the retention are folded into day 0, and no count is lost
// or counted twice.
func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(Options{Dir: dir, FlushEvery: time.Hour, Retention: 10})
	if err != nil {
		t.Fatal(err)
	}
	old := day0.Add(-30 * 24 * time.Hour)
	c.Record("linux-64/foo-1.0-0.conda", "a", false, old)
	now := time.Now()
	var want uint64 = 1
	for i := range 40000 {
		c.Record("linux-64/foo-1.0-0.conda", "a", false, now)
		want++
		if i%1000 == 0 {
			c.Flush()
		}
	}
	before := c.log.size
	c.Flush()
	if err := c.compact(now); err != nil {
		t.Fatal(err)
	}
	if c.log.size >= before {
		t.Errorf("log of %d bytes not smaller after compaction (%d)", before, c.log.size)
	}
	c.Record("linux-64/foo-1.0-0.conda", "a", false, now)
	want++
	c.Close()
	c = open(t, dir)
	defer c.Close()
	if c.Total() != want || c.File("linux-64/foo-1.0-0.conda") != want {
		t.Errorf("after compaction and reopen: total %d, want %d", c.Total(), want)
	}
	if _, got := c.Sum([]string{"linux-64/foo-1.0-0.conda"}, 0, 0); got[0] != 1 {
		t.Errorf("day 0 (older than the retention) holds %d, want 1", got[0])
	}
}

func TestCountable(t *testing.T) {
	for _, tc := range []struct {
		rel, file string
		ok        bool
	}{
		{"linux-64/foo-1.0-0.conda", "linux-64/foo-1.0-0.conda", true},
		{"label/dev/noarch/foo-1.0-0.tar.bz2", "noarch/foo-1.0-0.tar.bz2", true},
		{"linux-64/repodata.json", "", false},
		{"linux-64/", "", false},
		{"nosuch/foo-1.0-0.conda", "", false},
		{"channeldata.json", "", false},
		{"linux-64/foo-1.0-0.conda.sigs", "", false},
	} {
		file, ok := Countable(tc.rel)
		if file != tc.file || ok != tc.ok {
			t.Errorf("Countable(%q) = %q, %v; want %q, %v", tc.rel, file, ok, tc.file, tc.ok)
		}
	}
}

// TestSum adds up the counts of the files a restricted token may see.
func TestSum(t *testing.T) {
	c := open(t, t.TempDir())
	defer c.Close()
	c.Record("linux-64/foo-1.0-0.conda", "a", false, day0)
	c.Record("osx-64/foo-1.0-0.conda", "a", false, day0)
	c.Record("osx-64/foo-1.0-0.conda", "a", false, day0.Add(24*time.Hour))
	d := DayOf(day0)
	total, days := c.Sum([]string{"osx-64/foo-1.0-0.conda", "noarch/none-1-0.conda"}, d-1, d+1)
	if total != 2 || !slices.Equal(days, []uint64{0, 1, 1}) {
		t.Errorf("Sum = %d, %v; want 2, [0 1 1]", total, days)
	}
}
