// Package owners says who may publish which conda package name: the name
// patterns a token or trusted publisher is limited to, and the owners of
// each name, which the first upload may claim (PyPI's model).
//
// A name pattern is an exact conda name or a glob with path.Match's syntax
// (*, ? and [...] classes). Conda names are lowercase ASCII letters,
// digits, '-', '_' and '.' (conda-build's naming conventions, and the
// draft CEP on names); a pattern must be made of those and the glob
// characters, so "NumPy" or a Cyrillic look-alike is refused at config
// load, and a package name is matched as it is: "MyPkg" does not match
// "mypkg", so a limited token can never publish a name with upper case.
// Conda treats "my_pkg" and "my-pkg" as two names, and so do patterns.
//
// Owners are kept per folded name (lower case, with '_' and '.' as '-'),
// so that look-alikes collide: whoever owns "my-pkg" also owns "my_pkg"
// and "My.Pkg", and nobody else can claim them.
//
// The owners live in one small JSON file, replaced atomically on every
// change under a mutex, so that a claim is atomic among concurrent
// uploads and a crash leaves the old file or the new one. If the file is
// lost it is rebuilt from the audit log.
package owners

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
)

// Modes of [policy] owners.
const (
	// ModeConfig: owners are only what the admin API sets; uploads
	// claim nothing.
	ModeConfig = "config"
	// ModeFirstUpload: the first token or publisher to publish a name
	// that has no owner becomes its owner.
	ModeFirstUpload = "first-upload"
)

// CheckPattern reports whether p is a valid name pattern: lowercase
// conda name characters and glob characters, with path.Match's syntax.
func CheckPattern(p string) error {
	if p == "" {
		return errors.New("empty pattern")
	}
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		case r == '*', r == '?', r == '[', r == ']', r == '^':
		default:
			return fmt.Errorf("pattern %q: %q is not a lowercase conda name character or a glob character", p, r)
		}
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("pattern %q: %w", p, err)
	}
	return nil
}

// Match reports whether name matches one of patterns; no patterns means
// every name. Patterns are checked by CheckPattern at config load, so an
// error here cannot happen and counts as no match.
func Match(patterns []string, name string) bool {
	if patterns == nil {
		return true
	}
	for _, p := range patterns {
		if ok, err := path.Match(p, name); ok && err == nil {
			return true
		}
	}
	return false
}

// Fold is the key of a name's owners: lower case, with '_' and '.' as
// '-', so that look-alike names share their owners.
func Fold(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '_' || r == '.':
			return '-'
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return r
	}, name)
}

// File is the document of owners.json.
type File struct {
	Version int `json:"version"`
	// Packages maps a folded name to its owners: token names, and
	// "oidc:<publisher>" for trusted publishers.
	Packages map[string][]string `json:"packages"`
}

// Store holds the owners of every name, and the file they live in.
type Store struct {
	path string
	// wmu serialises changes, and so the file's writes: a claim
	// holds it from its check to the end of its write. mu guards m,
	// and is held only to read it or to apply a change already
	// written, so that checks never wait for a write.
	wmu sync.Mutex
	mu  sync.RWMutex
	m   map[string][]string
}

// Open reads the owners file at path. If it does not exist, the owners
// are rebuilt by replaying events (nil for none) and written.
func Open(p string, events []Event) (*Store, error) {
	s := &Store{path: p, m: map[string][]string{}}
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		for _, e := range events {
			s.apply(e)
		}
		if len(s.m) == 0 {
			return s, nil
		}
		return s, s.write(encode(s.m, "", nil))
	case err != nil:
		return nil, fmt.Errorf("owners: %w", err)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("owners: %s: %w", p, err)
	}
	for name, who := range f.Packages {
		if len(who) > 0 {
			s.m[Fold(name)] = slices.Clone(who)
		}
	}
	return s, nil
}

// Of returns the owners of name, in a new slice; empty if nobody owns it.
func (s *Store) Of(name string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]string{}, s.m[Fold(name)]...)
}

// Owns reports whether owner may publish name: nobody owns it, or owner
// is one of its owners.
func (s *Store) Owns(name, owner string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	who := s.m[Fold(name)]
	return len(who) == 0 || slices.Contains(who, owner)
}

// Claim makes owner the owner of name if it has none, durably, and
// returns name's owners after the claim, and whether this call claimed
// it. Concurrent claims of one name are serialised: exactly one wins.
func (s *Store) Claim(name, owner string) ([]string, bool, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	key := Fold(name)
	if who := s.m[key]; len(who) > 0 {
		return slices.Clone(who), false, nil
	}
	if err := s.set(key, []string{owner}); err != nil {
		return nil, false, err
	}
	return []string{owner}, true, nil
}

// Change applies an admin change (Add, Remove or Transfer) and returns
// name's owners after it, and whether they changed: a change that
// changes nothing is not written.
func (s *Store) Change(e Event) ([]string, bool, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	key := Fold(e.Name)
	cur := s.m[key]
	next := e.next(cur)
	if slices.Equal(cur, next) {
		return slices.Clone(cur), false, nil
	}
	if err := s.set(key, next); err != nil {
		return nil, false, err
	}
	return slices.Clone(next), true, nil
}

// List returns every owned name (folded) and its owners, sorted by name.
func (s *Store) List() []Owned {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Owned, 0, len(s.m))
	for n, who := range s.m {
		out = append(out, Owned{Name: n, Owners: slices.Clone(who)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Owned is one name and its owners.
type Owned struct {
	Name   string   `json:"name"`
	Owners []string `json:"owners"`
}

// set replaces key's owners: first in the file, then in memory, so that
// a change that could not be written is not made. s.wmu is held, so m
// changes under no one else: it is read here without mu.
func (s *Store) set(key string, owners []string) error {
	if err := s.write(encode(s.m, key, owners)); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(owners) == 0 {
		delete(s.m, key)
	} else {
		s.m[key] = owners
	}
	return nil
}

// encode is the owners file of m with key's owners replaced (none: key
// left out). Names are written in map order: sorting 100,000 of them on
// every claim would cost more than the write.
func encode(m map[string][]string, key string, owners []string) []byte {
	buf := make([]byte, 0, 64+len(m)*32)
	buf = append(buf, `{"version":1,"packages":{`...)
	put := func(k string, v []string) {
		if buf[len(buf)-1] != '{' {
			buf = append(buf, ',')
		}
		buf = appendString(buf, k)
		buf = append(buf, ':', '[')
		for i, o := range v {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, o)
		}
		buf = append(buf, ']')
	}
	for k, v := range m {
		if k != key {
			put(k, v)
		}
	}
	if len(owners) > 0 {
		put(key, owners)
	}
	return append(buf, "}}\n"...)
}

// appendString appends s as a JSON string: as it is when it is plain
// printable ASCII (every conda name, and token names as they are
// usually written), else by encoding/json.
func appendString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

func (s *Store) write(b []byte) error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return fmt.Errorf("owners: %w", err)
	}
	if err := atomicfile.Write(s.path, b); err != nil {
		return fmt.Errorf("owners: %w", err)
	}
	return nil
}
