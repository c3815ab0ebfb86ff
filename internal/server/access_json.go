package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Every JSON body the server reads goes through checkJSON (decodeJSON for
// those decoded into a struct here), because
// encoding/json is lenient in two ways that let one body mean two things:
// it matches object keys to struct fields case-insensitively, even with
// DisallowUnknownFields (so {"TO": "dev2"} sets To), and it keeps the last
// of duplicate keys (so {"to": "dev", "to": "main"} is read as main, while
// a proxy or an audit reader may see dev). Here a key must be exactly one
// of the names the body's type declares, and no object anywhere in the
// body may hold a key twice.

// maxJSONDepth bounds the nesting of a body: no call's body nests deeper
// than a patch's record fields do, a few levels.
const maxJSONDepth = 64

// decodeJSON decodes b, exactly one JSON value, into v, a pointer.
func decodeJSON(b []byte, v any) error {
	if err := checkJSON(b, reflect.TypeOf(v)); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// checkJSON checks that b is exactly one JSON value whose object keys are
// exact and unique, as type t (a struct, map, slice, or pointer to one)
// names them; values that t does not describe may hold any keys, once.
// It scans b in place, without building its values: a patch can be tens
// of MiB.
func checkJSON(b []byte, t reflect.Type) error {
	if !json.Valid(b) {
		dec := json.NewDecoder(bytes.NewReader(b))
		var v any
		if err := dec.Decode(&v); err != nil {
			return err
		}
		return errors.New("body holds more than one JSON value")
	}
	k := keyChecker{b: b}
	return k.value(t, 0)
}

// keyChecker walks a valid JSON document.
type keyChecker struct {
	b    []byte
	i    int
	path [][]byte   // the keys above the value being read, for messages
	keys [][][]byte // each depth's keys, reused from object to object
}

func (k *keyChecker) space() {
	for k.i < len(k.b) && (k.b[k.i] == ' ' || k.b[k.i] == '\t' || k.b[k.i] == '\r' || k.b[k.i] == '\n') {
		k.i++
	}
}

// value reads one value, checking the keys of its objects against t (nil
// for any value).
func (k *keyChecker) value(t reflect.Type, depth int) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	k.space()
	switch k.b[k.i] {
	case '{', '[':
		if depth >= maxJSONDepth {
			return fmt.Errorf("body nests deeper than %d levels", maxJSONDepth)
		}
		if k.b[k.i] == '{' {
			return k.object(t, depth+1)
		}
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for k.i++; k.next(']'); {
			if err := k.value(elem, depth+1); err != nil {
				return err
			}
		}
	case '"':
		k.str()
	default: // a number, true, false or null
		for k.i < len(k.b) && !strings.ContainsRune(",]} \t\r\n", rune(k.b[k.i])) {
			k.i++
		}
	}
	return nil
}

// next skips a comma and reports whether another member follows before
// end, which it consumes.
func (k *keyChecker) next(end byte) bool {
	k.space()
	if k.b[k.i] == ',' {
		k.i++
		k.space()
	}
	if k.b[k.i] == end {
		k.i++
		return false
	}
	return true
}

// object reads an object whose '{' is next.
func (k *keyChecker) object(t reflect.Type, depth int) error {
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case t != nil && t.Kind() == reflect.Struct:
		fields = jsonFields(t)
	case t != nil && t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	for len(k.keys) <= depth {
		k.keys = append(k.keys, nil)
	}
	keys := k.keys[depth][:0]
	for k.i++; k.next('}'); {
		key := k.key()
		k.space()
		k.i++ // ':'
		vt := elem
		if fields != nil {
			ft, ok := fields[string(key)]
			if !ok {
				return fmt.Errorf("unknown field %q (the fields are %s, matched exactly)", k.where(key), names(fields))
			}
			vt = ft
		}
		keys = append(keys, key)
		k.path = append(k.path, key)
		if err := k.value(vt, depth); err != nil {
			return err
		}
		k.path = k.path[:len(k.path)-1]
	}
	k.keys[depth] = keys
	slices.SortFunc(keys, bytes.Compare)
	for i := 1; i < len(keys); i++ {
		if bytes.Equal(keys[i-1], keys[i]) {
			return fmt.Errorf("key %q is given twice", k.where(keys[i]))
		}
	}
	return nil
}

// key reads a string, decoded if it holds escapes (encoding/json reads
// "t\u006f" as "to").
func (k *keyChecker) key() []byte {
	start := k.i
	k.str()
	raw := k.b[start+1 : k.i-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	var s string
	json.Unmarshal(k.b[start:k.i], &s) // valid: checked by json.Valid
	return []byte(s)
}

// str reads a string whose '"' is next.
func (k *keyChecker) str() {
	for k.i++; k.b[k.i] != '"'; k.i++ {
		if k.b[k.i] == '\\' {
			k.i++
		}
	}
	k.i++
}

// where names a key by its path, for a message.
func (k *keyChecker) where(key []byte) string {
	return oneLine(string(bytes.Join(append(slices.Clone(k.path), key), []byte("."))))
}

// jsonFields maps the JSON names of a struct's exported fields to their
// types, as encoding/json names them.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// names lists a struct's JSON names, for a message.
func names(fields map[string]reflect.Type) string {
	var ns []string
	for _, n := range slices.Sorted(maps.Keys(fields)) {
		ns = append(ns, strconv.Quote(n))
	}
	return strings.Join(ns, ", ")
}
