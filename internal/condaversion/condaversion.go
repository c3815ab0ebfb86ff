// Package condaversion orders conda version strings as conda does
// (conda.models.version.VersionOrder), and matches dependency specs
// against package records as conda's MatchSpec does (Spec), for the index
// files that pick versions: channeldata.json names each package's newest
// version, and current_repodata.json keeps the newest of each package and
// the versions their dependencies need. An order that differed from
// conda's, even in corner cases like "1.0rc1" against "1.0.post1", would
// pick other versions than conda-index does.
package condaversion

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

var (
	checkRe = regexp.MustCompile(`^[\*\.\+!_0-9a-z]+$`)
	splitRe = regexp.MustCompile(`([0-9]+|[*]+|[^0-9*]+)`)
)

// part is one run of a version component: a number or a string. "post"
// is infinity, and "dev" sorts before every other string.
type part struct {
	str   string
	num   float64
	isStr bool
}

// Version is a parsed version string.
type Version struct {
	version, local [][]part
}

// Parse parses a conda version string.
func Parse(s string) (Version, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	if v == "" {
		return Version{}, errors.New("empty version string")
	}
	invalid := !checkRe.MatchString(v)
	if invalid && strings.Contains(v, "-") && !strings.Contains(v, "_") {
		v = strings.ReplaceAll(v, "-", "_")
		invalid = !checkRe.MatchString(v)
	}
	if invalid {
		return Version{}, fmt.Errorf("version %q: invalid character(s)", s)
	}
	epoch := "0"
	if e, rest, ok := strings.Cut(v, "!"); ok {
		if strings.Contains(rest, "!") {
			return Version{}, fmt.Errorf("version %q: duplicated epoch separator '!'", s)
		}
		if !isDigits(e) {
			return Version{}, fmt.Errorf("version %q: epoch must be an integer", s)
		}
		epoch, v = e, rest
	}
	var local []string
	if main, l, ok := strings.Cut(v, "+"); ok {
		if strings.Contains(l, "+") {
			return Version{}, fmt.Errorf("version %q: duplicated local version separator '+'", s)
		}
		local = strings.Split(strings.ReplaceAll(l, "_", "."), ".")
		v = main
	}
	if v == "" {
		return Version{}, fmt.Errorf("version %q: missing version before local version separator '+'", s)
	}
	var split []string
	if strings.HasSuffix(v, "_") {
		split = strings.Split(strings.ReplaceAll(v[:len(v)-1], "_", "."), ".")
		split[len(split)-1] += "_"
	} else {
		split = strings.Split(strings.ReplaceAll(v, "_", "."), ".")
	}
	out := Version{}
	var err error
	if out.version, err = components(append([]string{epoch}, split...)); err != nil {
		return Version{}, fmt.Errorf("version %q: %w", s, err)
	}
	if local != nil {
		if out.local, err = components(local); err != nil {
			return Version{}, fmt.Errorf("version %q: %w", s, err)
		}
	}
	return out, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// components splits each component into runs of digits and non-digits;
// one that starts with a letter gets a leading 0, so that numbers and
// strings stay in phase.
func components(cs []string) ([][]part, error) {
	out := make([][]part, len(cs))
	for i, c := range cs {
		runs := splitRe.FindAllString(c, -1)
		if len(runs) == 0 {
			return nil, errors.New("empty version component")
		}
		var ps []part
		if !(c[0] >= '0' && c[0] <= '9') {
			ps = append(ps, part{})
		}
		for _, r := range runs {
			switch {
			case isDigits(r):
				n, err := strconv.ParseFloat(r, 64)
				if err != nil {
					return nil, err
				}
				ps = append(ps, part{num: n})
			case r == "post":
				ps = append(ps, part{num: math.Inf(1)})
			case r == "dev":
				ps = append(ps, part{str: "DEV", isStr: true})
			default:
				ps = append(ps, part{str: r, isStr: true})
			}
		}
		out[i] = ps
	}
	return out, nil
}

// cmpPart compares two runs: a string is less than a number, strings
// compare as strings and numbers as numbers.
func cmpPart(a, b part) int {
	switch {
	case a.isStr && b.isStr:
		return strings.Compare(a.str, b.str)
	case a.isStr:
		return -1
	case b.isStr:
		return 1
	case a.num < b.num:
		return -1
	case a.num > b.num:
		return 1
	}
	return 0
}

func cmpLists(x, y [][]part) int {
	for i := 0; i < max(len(x), len(y)); i++ {
		var a, b []part
		if i < len(x) {
			a = x[i]
		}
		if i < len(y) {
			b = y[i]
		}
		for j := 0; j < max(len(a), len(b)); j++ {
			pa, pb := part{}, part{} // the fill value is 0
			if j < len(a) {
				pa = a[j]
			}
			if j < len(b) {
				pb = b[j]
			}
			if c := cmpPart(pa, pb); c != 0 {
				return c
			}
		}
	}
	return 0
}

// Compare returns -1, 0 or 1 as v sorts before, with or after w.
func (v Version) Compare(w Version) int {
	if c := cmpLists(v.version, w.version); c != 0 {
		return c
	}
	return cmpLists(v.local, w.local)
}

// Compare orders two version strings; one that does not parse sorts
// before one that does, and two that do not compare as strings.
func Compare(a, b string) int {
	va, errA := Parse(a)
	vb, errB := Parse(b)
	switch {
	case errA != nil && errB != nil:
		return strings.Compare(a, b)
	case errA != nil:
		return -1
	case errB != nil:
		return 1
	}
	return va.Compare(vb)
}
