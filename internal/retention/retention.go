// Package retention decides which builds of a label go, and empties the
// trash. Nightly and dev labels otherwise grow until the disk is full:
// nothing else in the server ever removes a package.
//
// A rule keeps, per package name and subdir of a label, the newest
// keep_last builds and none older than max_age. "Newest" is conda's own
// order (condaversion, the port of conda's VersionOrder), then the build
// number: a file's mtime says when it came, not what it is, and a
// rebuild of an old version must not push out a newer one. The variants
// of one build (the same version and build number, other build strings,
// such as py311_0 and py312_0) are one build: they stay or go together.
//
// What goes is deleted through the same crash-safe delete as the admin
// API (a hard link into .trash, then the label's link removed), so a build
// that another label holds, through its own hard link, is never lost, and
// a crash in the middle leaves every file whole in the label or the trash.
package retention

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condaversion"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// Rule is one [[retention]] entry of the config.
type Rule struct {
	// Label is a label name or a glob of them ("pr-*"). A glob never
	// matches main: main is pruned only by a rule that names it.
	Label string
	// Packages, if set, limits the rule to the package names that match
	// one of these globs.
	Packages []string
	// KeepLast, if above zero, keeps that many of the newest builds.
	KeepLast int
	// MaxAge, if above zero, removes builds stored longer ago.
	MaxAge time.Duration
}

// coversLabel reports whether the rule's label (or glob) matches label.
// Only a rule that names main matches main.
func (r Rule) coversLabel(label string) bool {
	if label == store.MainLabel {
		return r.Label == store.MainLabel
	}
	ok, _ := path.Match(r.Label, label)
	return ok
}

// Matches reports whether the rule covers package name in label.
func (r Rule) Matches(label, name string) bool {
	if !r.coversLabel(label) {
		return false
	}
	if len(r.Packages) == 0 {
		return true
	}
	for _, g := range r.Packages {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// Rules are the retention rules in config order: the first that matches
// a label and package name applies to it.
type Rules []Rule

// For returns the rule for name in label, if any.
func (rs Rules) For(label, name string) (Rule, bool) {
	for _, r := range rs {
		if r.Matches(label, name) {
			return r, true
		}
	}
	return Rule{}, false
}

// Ages reports whether a rule with a max_age may apply to label: only
// then does a pass need the files' times.
func (rs Rules) Ages(label string) bool {
	for _, r := range rs {
		if r.MaxAge > 0 && r.coversLabel(label) {
			return true
		}
	}
	return false
}

// Covers reports whether any rule may apply to label.
func (rs Rules) Covers(label string) bool {
	for _, r := range rs {
		if r.coversLabel(label) {
			return true
		}
	}
	return false
}

// File is a package file of a label's subdir.
type File struct {
	Filename string
	Name     string
	Version  string
	// Build is the build string; Number the build number.
	Build  string
	Number int
	// Stored is when the file came into the channel (its mtime).
	Stored time.Time
}

// Removal is a file that a rule removes, and why.
type Removal struct {
	Label    string `json:"label"`
	Subdir   string `json:"subdir"`
	Filename string `json:"filename"`
	Reason   string `json:"reason"`
}

// build is the files of one version and build number of a package.
type build struct {
	version condaversion.Version
	number  int
	files   []File
	stored  time.Time // the newest file's
}

// Plan returns the files of label's subdir that the rules remove, in
// filename order. Files whose version conda cannot parse are kept.
func (rs Rules) Plan(label, subdir string, files []File, now time.Time) []Removal {
	byName := slices.Clone(files)
	slices.SortFunc(byName, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	var out []Removal
	versions := map[string]*condaversion.Version{}
	for start := 0; start < len(byName); {
		end := start + 1
		for end < len(byName) && byName[end].Name == byName[start].Name {
			end++
		}
		fs := byName[start:end]
		start = end
		r, ok := rs.For(label, fs[0].Name)
		if !ok {
			continue
		}
		for i, b := range newestFirst(fs, versions) {
			why := r.why(i, b, now)
			if why == "" {
				continue
			}
			for _, f := range b.files {
				out = append(out, Removal{Label: label, Subdir: subdir, Filename: f.Filename, Reason: why})
			}
		}
	}
	slices.SortFunc(out, func(a, b Removal) int { return strings.Compare(a.Filename, b.Filename) })
	return out
}

// why says why the rule removes the build of rank i (0 is the newest),
// or "" if it keeps it.
func (r Rule) why(i int, b build, now time.Time) string {
	if r.KeepLast > 0 && i >= r.KeepLast {
		return fmt.Sprintf("newer %d of its builds kept (keep_last = %d, rule for label %q)", r.KeepLast, r.KeepLast, r.Label)
	}
	if age := now.Sub(b.stored); r.MaxAge > 0 && age > r.MaxAge {
		return fmt.Sprintf("stored %s ago, over max_age = %s (rule for label %q)", days(age), days(r.MaxAge), r.Label)
	}
	return ""
}

// days writes a duration as whole days, or hours below a day.
func days(d time.Duration) string {
	if d >= 24*time.Hour {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return d.Round(time.Minute).String()
}

// newestFirst groups files into builds and orders them newest first:
// conda's version order, then the build number. Files whose version does
// not parse are left out, and so kept. versions caches the parsed
// versions (nil for one that does not parse): a channel has far fewer
// version strings than files.
func newestFirst(files []File, versions map[string]*condaversion.Version) []build {
	type key struct {
		version string
		number  int
	}
	idx := make(map[key]int, len(files))
	bs := make([]build, 0, len(files))
	for _, f := range files {
		k := key{f.Version, f.Number}
		i, ok := idx[k]
		if !ok {
			v, seen := versions[f.Version]
			if !seen {
				if pv, err := condaversion.Parse(f.Version); err == nil {
					v = &pv
				}
				versions[f.Version] = v
			}
			if v == nil {
				continue
			}
			i = len(bs)
			idx[k] = i
			bs = append(bs, build{version: *v, number: f.Number})
		}
		bs[i].files = append(bs[i].files, f)
		if f.Stored.After(bs[i].stored) {
			bs[i].stored = f.Stored
		}
	}
	slices.SortStableFunc(bs, func(a, b build) int {
		if c := b.version.Compare(a.version); c != 0 {
			return c
		}
		return cmp.Compare(b.number, a.number)
	})
	return bs
}
