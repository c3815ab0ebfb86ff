package condaversion

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

// Spec is a conda match spec as packages write their dependencies
// ("python >=3.9,<3.10.0a0", "zlib 1.2.*", "pkg 1.0 h1234_0", "pkg=1.0"),
// reduced to what matching a package record needs: the name, a version
// spec and a build string glob.
type Spec struct {
	Name    string
	version *versionSpec // nil matches every version
	build   string       // a glob; "" matches every build
}

// ParseSpec parses a dependency spec as conda's MatchSpec does for the
// forms packages use; a channel prefix ("conda-forge::") is dropped.
func ParseSpec(s string) (Spec, error) {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "::"); i >= 0 {
		s = s[i+2:]
	}
	if s == "" || strings.ContainsAny(s, "[]") {
		return Spec{}, fmt.Errorf("match spec %q: not supported", s)
	}
	var name, rest string
	if i := strings.IndexAny(s, " =<>!~"); i >= 0 {
		name, rest = s[:i], strings.TrimSpace(s[i:])
	} else {
		name = s
	}
	sp := Spec{Name: name}
	if rest == "" {
		return sp, nil
	}
	version, build := splitVersionBuild(rest)
	// conda reads "=1.2.3" as "1.2.3*", and "==1.2.3" with no build as
	// "1.2.3".
	if strings.HasPrefix(version, "=") {
		test := version[1:]
		switch {
		case strings.HasPrefix(version, "==") && build == "":
			version = version[2:]
		case !strings.ContainsAny(test, "=,|"):
			if build == "" && !strings.HasSuffix(test, "*") {
				version = test + "*"
			} else {
				version = test
			}
		}
	}
	if version != "" {
		vs, err := parseVersionSpec(version)
		if err != nil {
			return Spec{}, fmt.Errorf("match spec %q: %w", s, err)
		}
		sp.version = vs
	}
	sp.build = build
	return sp, nil
}

// splitVersionBuild splits "1.0 py_0", "1.0=py_0" or ">=1,<2" into the
// version and the build string.
func splitVersionBuild(s string) (string, string) {
	if f := strings.Fields(s); len(f) >= 2 {
		return strings.Join(f[:len(f)-1], ""), f[len(f)-1]
	}
	// "=1.0=py_0": a build after a second '=' that follows no operator.
	if strings.Count(s, "=") >= 2 {
		i := strings.LastIndexByte(s, '=')
		if prev := s[i-1]; !strings.ContainsRune("=!<>~|,", rune(prev)) && !strings.ContainsAny(s[i+1:], "<>!~,|") {
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

// Match reports whether a record of name, version and build satisfies
// the spec.
func (sp Spec) Match(name, version, build string) bool {
	if sp.Name != "*" && sp.Name != name {
		return false
	}
	if sp.build != "" {
		if strings.Contains(sp.build, "*") {
			if ok, _ := path.Match(sp.build, build); !ok {
				return false
			}
		} else if sp.build != build {
			return false
		}
	}
	if sp.version == nil {
		return true
	}
	v, err := Parse(version)
	if err != nil {
		return false
	}
	return sp.version.match(version, v)
}

// versionSpec is conda's VersionSpec: a tree of "|" (any) and ","
// (all) over relations, globs and exact versions.
type versionSpec struct {
	any, all []*versionSpec
	op       string // "==", "!=", "<", "<=", ">", ">=", "=" (starts with), "!=startswith", "~=", "*"
	vo       Version
	regex    *regexp.Regexp
}

var relationRe = regexp.MustCompile(`^(=|==|!=|<=|>=|<|>|~=)([^=<>!~].*)$`)

func parseVersionSpec(s string) (*versionSpec, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("empty version spec")
	}
	if parts := splitTop(s, '|'); len(parts) > 1 {
		vs := &versionSpec{}
		for _, p := range parts {
			sub, err := parseVersionSpec(p)
			if err != nil {
				return nil, err
			}
			vs.any = append(vs.any, sub)
		}
		return vs, nil
	}
	if parts := splitTop(s, ','); len(parts) > 1 {
		vs := &versionSpec{}
		for _, p := range parts {
			sub, err := parseVersionSpec(p)
			if err != nil {
				return nil, err
			}
			vs.all = append(vs.all, sub)
		}
		return vs, nil
	}
	if strings.HasPrefix(s, "(") && strings.HasSuffix(s, ")") {
		return parseVersionSpec(s[1 : len(s)-1])
	}
	switch {
	case strings.ContainsAny(s[:1], "=<>!~"):
		m := relationRe.FindStringSubmatch(s)
		if m == nil {
			return nil, fmt.Errorf("version spec %q: invalid operator", s)
		}
		op, vo := m[1], m[2]
		if strings.HasSuffix(vo, ".*") {
			vo = vo[:len(vo)-2]
			switch op {
			case "!=":
				op = "!=startswith"
			case "~=":
				return nil, fmt.Errorf("version spec %q: invalid operator with '.*'", s)
			}
		}
		v, err := Parse(vo)
		if err != nil {
			return nil, err
		}
		return &versionSpec{op: op, vo: v}, nil
	case s == "*":
		return &versionSpec{op: "*"}, nil
	case strings.Contains(strings.TrimRight(s, "*"), "*"):
		rx := strings.NewReplacer(".", `\.`, "+", `\+`, "*", ".*").Replace(s)
		re, err := regexp.Compile("^(?:" + rx + ")$")
		if err != nil {
			return nil, err
		}
		return &versionSpec{regex: re}, nil
	case strings.HasSuffix(s, "*"):
		vo := strings.TrimSuffix(strings.TrimSuffix(s, "*"), ".")
		v, err := Parse(vo)
		if err != nil {
			return nil, err
		}
		return &versionSpec{op: "=", vo: v}, nil
	}
	v, err := Parse(s)
	if err != nil {
		return nil, err
	}
	return &versionSpec{op: "==", vo: v}, nil
}

// splitTop splits s at sep outside parentheses.
func splitTop(s string, sep byte) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case sep:
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func (vs *versionSpec) match(raw string, v Version) bool {
	switch {
	case vs.any != nil:
		for _, s := range vs.any {
			if s.match(raw, v) {
				return true
			}
		}
		return false
	case vs.all != nil:
		for _, s := range vs.all {
			if !s.match(raw, v) {
				return false
			}
		}
		return true
	case vs.regex != nil:
		return vs.regex.MatchString(raw)
	}
	c := v.Compare(vs.vo)
	switch vs.op {
	case "*":
		return true
	case "==":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	case "=":
		return v.StartsWith(vs.vo)
	case "!=startswith":
		return !v.StartsWith(vs.vo)
	case "~=":
		return c >= 0 && v.StartsWith(vs.vo.parent())
	}
	return false
}

// parent drops the last component, for "~=": ~=1.4.5 means >=1.4.5 and
// 1.4.*.
func (v Version) parent() Version {
	p := v
	if len(p.local) > 0 {
		p.local = p.local[:len(p.local)-1]
	} else if len(p.version) > 1 {
		p.version = p.version[:len(p.version)-1]
	}
	return p
}

// StartsWith is conda's VersionOrder.startswith: whether v matches w up
// to w's last element, as "1.2.*" matches 1.2 and 1.2.3.
func (v Version) StartsWith(w Version) bool {
	t1, t2 := v.version, w.version
	if len(w.local) > 0 {
		if cmpLists(v.version, w.version) != 0 {
			return false
		}
		t1, t2 = v.local, w.local
	}
	nt := len(t2) - 1
	if nt < 0 {
		return true
	}
	if cmpLists(head(t1, nt), t2[:nt]) != 0 {
		return false
	}
	var v1 []part
	if len(t1) > nt {
		v1 = t1[nt]
	}
	v2 := t2[nt]
	n := len(v2) - 1
	if cmpLists([][]part{headParts(v1, n)}, [][]part{v2[:n]}) != 0 {
		return false
	}
	c1 := part{}
	if len(v1) > n {
		c1 = v1[n]
	}
	c2 := v2[n]
	if c2.isStr {
		return c1.isStr && strings.HasPrefix(c1.str, c2.str)
	}
	return !c1.isStr && c1.num == c2.num
}

func head(t [][]part, n int) [][]part {
	if len(t) > n {
		return t[:n]
	}
	return t
}

func headParts(t []part, n int) []part {
	if len(t) > n {
		return t[:n]
	}
	return t
}
