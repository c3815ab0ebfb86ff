package server

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
)

// FuzzCheckJSON holds the in-place key check to encoding/json's own
// reading of the same bytes: it never panics, and it accepts exactly the
// single JSON values, nested at most maxJSONDepth deep, in which no
// object holds a key twice once decoded.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{`{"to":"dev"}`, `{"to":"a","to":"b"}`, `{"to":"a","t\u006f":"b"}`, `{} {}`, `[{"a":1},{"a":1}]`,
		`{"a":{"b":[1,2,{"c":null,"c":true}]}}`, `"x"`, `-1.5e3`, `{"a\"b":1,"a\"b":2}`, `[[[[]]]]`, ` {"a" : [ ] } `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := checkJSON(b, nil) == nil
		want := uniqueKeys(b)
		if got != want {
			t.Fatalf("checkJSON(%q) accepted %v, want %v", b, got, want)
		}
	})
}

// uniqueKeys is the oracle: encoding/json's tokens of b.
func uniqueKeys(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // values are not checked here, only keys
	type frame struct {
		keys   map[string]bool
		object bool
		key    bool // the next string token is a key
	}
	var stack []frame
	done := false // a whole value has been read
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return done
		}
		if err != nil || done {
			return false
		}
		top := len(stack) - 1
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxJSONDepth {
				return false
			}
			if top >= 0 && stack[top].object {
				stack[top].key = true // after this value, a key
			}
			stack = append(stack, frame{keys: map[string]bool{}, object: tok == json.Delim('{'), key: true})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:top]
		default:
			if top >= 0 && stack[top].object {
				if s, ok := tok.(string); ok && stack[top].key {
					if stack[top].keys[s] {
						return false
					}
					stack[top].keys[s] = true
				}
				stack[top].key = !stack[top].key
			}
		}
		done = len(stack) == 0
	}
}
