package retention_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/retention"
)

// condaOrder is conda's own documented version order, oldest first
// (conda/models/version.py, VersionOrder's docstring), less the
// versions it calls equal to the one before, and with the corner cases
// of the issue: rc before the release, post after it, an epoch above all.
var condaOrder = []string{
	"0.4", "0.4.1.rc", "0.4.1", "0.5a1", "0.5b3", "0.5C1", "0.5", "0.9.6", "0.960923",
	"1.0rc1", "1.0", "1.0.post1", "1.1dev1", "1.1_", "1.1a1", "1.1.0dev1", "1.1.a1", "1.1.0rc1", "1.1.0",
	"1.1.0post1", "1.1post1", "1996.07.12", "1!0.1", "1!0.4.1", "1!3.1.1.6", "2!0.4.1",
}

func files(versions []string, stored time.Time) []retention.File {
	var fs []retention.File
	for _, v := range versions {
		fs = append(fs, retention.File{Filename: fmt.Sprintf("pkg-%s-h0_0.conda", v), Name: "pkg", Version: v, Build: "h0_0", Stored: stored})
	}
	return fs
}

func removed(rs []retention.Removal) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Filename)
	}
	slices.Sort(out)
	return out
}

// TestPlanVersionOrder keeps the newest builds by conda's order, whatever
// the order of the files and however their mtimes lie.
func TestPlanVersionOrder(t *testing.T) {
	now := time.Now()
	for keep := 1; keep <= len(condaOrder); keep += 4 {
		fs := files(condaOrder, now)
		for i := range fs {
			// The oldest version was stored last: mtime must not count.
			fs[i].Stored = now.Add(-time.Duration(i) * time.Minute)
		}
		rand.Shuffle(len(fs), func(i, j int) { fs[i], fs[j] = fs[j], fs[i] })
		rules := retention.Rules{{Label: "nightly", KeepLast: keep}}
		got := removed(rules.Plan("nightly", "linux-64", fs, now))
		var want []string
		for _, f := range files(condaOrder[:len(condaOrder)-keep], now) {
			want = append(want, f.Filename)
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("keep_last %d: removed %v, want %v", keep, got, want)
		}
	}
}

// TestPlanRules covers build numbers, variants, both formats, max_age,
// package globs and main.
func TestPlanRules(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	old := now.Add(-40 * 24 * time.Hour)
	f := func(fn, name, v string, n int, stored time.Time) retention.File {
		return retention.File{Filename: fn, Name: name, Version: v, Number: n, Stored: stored}
	}
	set := []retention.File{
		f("a-1.0-py311_1.conda", "a", "1.0", 1, old),
		f("a-1.0-py312_1.conda", "a", "1.0", 1, old), // a variant of the same build
		f("a-1.0-py311_1.tar.bz2", "a", "1.0", 1, old),
		f("a-1.0-py311_0.conda", "a", "1.0", 0, now), // rebuilt before: older by build number
		f("a-0.9-py311_7.conda", "a", "0.9", 7, now),
		f("b-2.0-0.conda", "b", "2.0", 0, old),
		f("b-1.0-0.conda", "b", "1.0", 0, now),
		f("c-1.0-0.conda", "c", "not a version!", 0, old),
	}
	tests := []struct {
		name  string
		label string
		rules retention.Rules
		want  []string
	}{
		{"keep one build, its variants and formats together", "nightly", retention.Rules{{Label: "nightly", KeepLast: 1}},
			[]string{"a-0.9-py311_7.conda", "a-1.0-py311_0.conda", "b-1.0-0.conda"}},
		{"keep two", "nightly", retention.Rules{{Label: "nightly", KeepLast: 2}},
			[]string{"a-0.9-py311_7.conda"}},
		{"max_age alone", "nightly", retention.Rules{{Label: "nightly", MaxAge: 30 * 24 * time.Hour}},
			[]string{"a-1.0-py311_1.conda", "a-1.0-py311_1.tar.bz2", "a-1.0-py312_1.conda", "b-2.0-0.conda"}},
		{"package glob", "nightly", retention.Rules{{Label: "nightly", Packages: []string{"b*"}, KeepLast: 1}},
			[]string{"b-1.0-0.conda"}},
		{"first matching rule wins", "nightly", retention.Rules{{Label: "nightly", Packages: []string{"a"}, KeepLast: 3}, {Label: "*", KeepLast: 1}},
			[]string{"b-1.0-0.conda"}},
		{"label glob", "pr-12", retention.Rules{{Label: "pr-*", KeepLast: 1}},
			[]string{"a-0.9-py311_7.conda", "a-1.0-py311_0.conda", "b-1.0-0.conda"}},
		{"other label", "dev", retention.Rules{{Label: "nightly", KeepLast: 1}}, nil},
		{"a glob never matches main", "main", retention.Rules{{Label: "*", KeepLast: 1}}, nil},
		{"main when named", "main", retention.Rules{{Label: "main", KeepLast: 1}},
			[]string{"a-0.9-py311_7.conda", "a-1.0-py311_0.conda", "b-1.0-0.conda"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := removed(tc.rules.Plan(tc.label, "linux-64", set, now))
			if !slices.Equal(got, tc.want) {
				t.Errorf("removed %v, want %v", got, tc.want)
			}
		})
	}
}

// TestEmptyTrash removes the trash's date folders whose day ended more
// than trash_retention ago, with what they held, and nothing else.
func TestEmptyTrash(t *testing.T) {
	root := t.TempDir()
	put := func(rel string, size int) {
		p := filepath.Join(root, ".trash", rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, make([]byte, size), 0o644)
	}
	put("2026-11-05/nightly/linux-64/a-1-0.conda", 100)
	put("2026-11-05/main/noarch/b-1-0.conda", 20)
	put("2026-11-06/nightly/linux-64/c-1-0.conda", 7) // ends 2026-11-07, 29d 12h ago
	put("keep-me/x", 1)
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	e, err := retention.EmptyTrash(root, 30*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if e != (retention.Emptied{Days: 1, Files: 2, Bytes: 120}) {
		t.Errorf("emptied %+v", e)
	}
	des, _ := os.ReadDir(filepath.Join(root, ".trash"))
	var left []string
	for _, de := range des {
		left = append(left, de.Name())
	}
	if !slices.Equal(left, []string{"2026-11-06", "keep-me"}) {
		t.Errorf("left %v", left)
	}
}
