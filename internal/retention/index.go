package retention

import (
	"encoding/json"
	"strconv"
)

// indexScanner reads what a pass needs of a repodata.json, the filenames
// of "packages", "packages.conda" and "removed" and each record's
// "build_number", in one pass over the bytes, skipping everything else
// unparsed: at 100,000 packages, decoding the whole document with
// encoding/json cost more than the index run it follows. Anything it does
// not expect makes it give up, and the caller decodes with encoding/json.
type indexScanner struct {
	b   []byte
	i   int
	bad bool
}

// scanIndex returns the build numbers by filename and the removed
// filenames, and false if b is not what it expects.
func scanIndex(b []byte) (map[string]int, map[string]bool, bool) {
	s := &indexScanner{b: b}
	numbers, removed := map[string]int{}, map[string]bool{}
	s.members(func(key []byte) {
		switch string(key) {
		case "packages", "packages.conda":
			s.members(func(fn []byte) {
				n := 0
				s.members(func(field []byte) {
					if string(field) != "build_number" {
						s.skip()
						return
					}
					n = s.number()
				})
				numbers[string(fn)] = n
			})
		case "removed":
			s.strings(func(fn []byte) { removed[string(fn)] = true })
		default:
			s.skip()
		}
	})
	s.ws()
	return numbers, removed, !s.bad && s.i == len(s.b)
}

func (s *indexScanner) ws() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\n' || s.b[s.i] == '\t' || s.b[s.i] == '\r') {
		s.i++
	}
}

// next skips white space and consumes c, or marks the scan bad.
func (s *indexScanner) next(c byte) bool {
	s.ws()
	if s.bad || s.i >= len(s.b) || s.b[s.i] != c {
		s.bad = true
		return false
	}
	s.i++
	return true
}

func (s *indexScanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		s.bad = true
		return 0
	}
	return s.b[s.i]
}

// str reads a string, unquoting it only if it has escapes: the bytes
// are the document's own unless it has.
func (s *indexScanner) str() []byte {
	start, esc := s.skipString()
	if s.bad {
		return nil
	}
	if !esc {
		return s.b[start : s.i-1]
	}
	var out string
	if err := json.Unmarshal(s.b[start-1:s.i], &out); err != nil {
		s.bad = true
	}
	return []byte(out)
}

// skipString passes over a string, and returns where its content starts
// and whether it has escapes.
func (s *indexScanner) skipString() (start int, esc bool) {
	if !s.next('"') {
		return 0, false
	}
	start = s.i
	for ; s.i < len(s.b) && s.b[s.i] != '"'; s.i++ {
		if s.b[s.i] == '\\' {
			esc = true
			s.i++
		}
	}
	if s.i >= len(s.b) {
		s.bad = true
		return 0, false
	}
	s.i++
	return start, esc
}

// members reads an object, calling f with each key, positioned at its
// value, which f must consume.
func (s *indexScanner) members(f func(key []byte)) {
	if !s.next('{') || s.peek() == '}' {
		s.i++
		return
	}
	for !s.bad {
		key := s.str()
		if !s.next(':') {
			return
		}
		f(key)
		if s.peek() == ',' {
			s.i++
			continue
		}
		s.next('}')
		return
	}
}

// strings reads an array of strings.
func (s *indexScanner) strings(f func([]byte)) {
	if !s.next('[') || s.peek() == ']' {
		s.i++
		return
	}
	for !s.bad {
		f(s.str())
		if s.peek() == ',' {
			s.i++
			continue
		}
		s.next(']')
		return
	}
}

// number reads a non-negative integer.
func (s *indexScanner) number() int {
	s.ws()
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	n, err := strconv.Atoi(string(s.b[start:s.i]))
	if err != nil {
		s.bad = true
	}
	return n
}

// skip skips one value of any kind, strings and nesting included.
func (s *indexScanner) skip() {
	s.ws()
	depth := 0
	for s.i < len(s.b) && !s.bad {
		switch c := s.b[s.i]; c {
		case '"':
			s.skipString()
			if depth == 0 {
				return
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return // the end of the enclosing value: an empty skip
			}
			depth--
			if depth == 0 {
				s.i++
				return
			}
		case ',':
			if depth == 0 {
				return
			}
		}
		s.i++
	}
	if depth != 0 {
		s.bad = true
	}
}
