package store

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzAppendElements: whatever is added to whatever array is stored, the
// result is a JSON array that starts with the old one's bytes (less its
// closing bracket), holds every old element, then every new element
// not already there, once.
func FuzzAppendElements(f *testing.F) {
	f.Add([]byte(nil), []byte(`[{"a":1}]`))
	f.Add([]byte(`[{"a":1}]`), []byte(`[{"a": 1}, {"b":2}]`))
	f.Add([]byte("[ ]\n"), []byte(`[{"b":2},{"b":2}]`))
	f.Add([]byte("[{\"x\" : [1,2]} ]  "), []byte(`[]`))
	f.Fuzz(func(t *testing.T, old, add []byte) {
		var have, more []json.RawMessage
		if old != nil && json.Unmarshal(old, &have) != nil || json.Unmarshal(add, &more) != nil {
			if _, _, err := AppendElements(old, add); err == nil {
				t.Fatal("no error for an input that is not a JSON array")
			}
			return
		}
		out, changed, err := AppendElements(old, add)
		if err != nil {
			t.Fatal(err)
		}
		var got []json.RawMessage
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("result %q is not a JSON array: %v", out, err)
		}
		if !changed {
			if !bytes.Equal(out, old) {
				t.Fatal("unchanged, but the bytes differ")
			}
			return
		}
		if len(have) > 0 {
			trimmed := bytes.TrimRight(old, " \t\r\n")
			if !bytes.HasPrefix(out, trimmed[:len(trimmed)-1]) {
				t.Fatalf("old bytes %q not kept in %q", old, out)
			}
		}
		seen := map[string]bool{}
		for i, e := range got {
			c := compact(e)
			if seen[c] && i >= len(have) {
				t.Fatalf("%s added twice", e)
			}
			seen[c] = true
		}
		for _, e := range more {
			if !seen[compact(e)] {
				t.Fatalf("%s not added", e)
			}
		}
	})
}
