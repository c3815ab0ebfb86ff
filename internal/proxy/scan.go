package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxValue bounds one value of an index document as the filter holds it:
// a record, or a top-level key's value other than the package maps.
const maxValue = 64 << 20

var errValueTooLarge = fmt.Errorf("a value of the document is over %d MiB", maxValue>>20)

// scanner reads a JSON document value by value, without decoding the
// values it is only asked to delimit: the filter's way through a
// repodata.json of a million records, at the speed of a byte loop. What
// it delimits is checked as JSON where it is kept (json.Valid or
// json.Unmarshal), so a malformed value is never passed on.
type scanner struct {
	r   *bufio.Reader
	buf []byte
}

func newScanner(r io.Reader) *scanner { return &scanner{r: bufio.NewReaderSize(r, 1<<20)} }

// peek skips white space and returns the next byte, unread.
func (s *scanner) peek() (byte, error) {
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			return 0, err
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c, s.r.UnreadByte()
	}
}

// expect reads the byte c, after white space.
func (s *scanner) expect(c byte) error {
	if got, err := s.peek(); err != nil || got != c {
		return fmt.Errorf("want %q: %w", c, errNotObject)
	}
	s.r.ReadByte()
	return nil
}

// object reads an object, calling member with each key, after which
// member reads the value.
func (s *scanner) object(member func(key string) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if c, err := s.peek(); err == nil && c == '}' {
		s.r.ReadByte()
		return nil
	}
	for {
		key, err := s.key()
		if err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		if more, err := s.next('}'); err != nil || !more {
			return err
		}
	}
}

// next reads a ',' and reports true, or a closing delim and reports false.
func (s *scanner) next(delim byte) (bool, error) {
	c, err := s.peek()
	if err != nil {
		return false, err
	}
	s.r.ReadByte()
	switch c {
	case ',':
		return true, nil
	case delim:
		return false, nil
	}
	return false, fmt.Errorf("want ',' or %q: %w", delim, errNotObject)
}

// key reads an object key and its ':'.
func (s *scanner) key() (string, error) {
	raw, err := s.value()
	if err != nil {
		return "", err
	}
	var k string
	if len(raw) == 0 || raw[0] != '"' {
		return "", errNotObject
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		k = string(raw[1 : len(raw)-1])
	} else if err := json.Unmarshal(raw, &k); err != nil {
		return "", errNotObject
	}
	return k, s.expect(':')
}

// value delimits the next value and returns its bytes, valid until the
// next call.
func (s *scanner) value() ([]byte, error) {
	if _, err := s.peek(); err != nil {
		return nil, err
	}
	s.buf = s.buf[:0]
	depth := 0
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			if err == io.EOF && depth == 0 && len(s.buf) > 0 {
				return s.buf, nil // a literal ending the input
			}
			return nil, errors.Join(errNotObject, err)
		}
		if len(s.buf) >= maxValue {
			return nil, errValueTooLarge
		}
		if depth == 0 && len(s.buf) > 0 && bytes.IndexByte([]byte(",:}] \t\r\n"), c) >= 0 {
			// The end of a literal.
			return s.buf, s.r.UnreadByte()
		}
		s.buf = append(s.buf, c)
		switch c {
		case '"':
			if err := s.rest(); err != nil {
				return nil, err
			}
			if depth == 0 {
				return s.buf, nil
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return s.buf, nil
			}
			if depth < 0 {
				return nil, errNotObject
			}
		}
	}
}

// rest appends the rest of a string, up to its closing quote, a buffer at
// a time.
func (s *scanner) rest() error {
	for {
		chunk, err := s.r.ReadSlice('"')
		if len(s.buf)+len(chunk) > maxValue {
			return errValueTooLarge
		}
		s.buf = append(s.buf, chunk...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			return errors.Join(errNotObject, err)
		}
		// The quote ends the string unless an odd number of
		// backslashes escapes it.
		n := 0
		for i := len(s.buf) - 2; i >= 0 && s.buf[i] == '\\'; i-- {
			n++
		}
		if n%2 == 0 {
			return nil
		}
	}
}
