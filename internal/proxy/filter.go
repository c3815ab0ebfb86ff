package proxy

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
)

// A repodata.json of conda-forge is hundreds of MB and a million
// records, so it is filtered as a stream: the decoder holds one record at
// a time, every key but "packages" and "packages.conda" is copied as
// it is, and each record is checked and kept or dropped on its own. Its
// channeldata.json (tens of MB) goes through the same scanner, one
// package's summary at a time.

// record is what the proxy needs of a package's record: to check its
// filename and to verify the package's bytes.
type record struct {
	Name   string `json:"name"`
	Subdir string `json:"subdir"`
	Sha256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// filterStats counts what a filter kept and dropped.
type filterStats struct {
	Kept, Excluded, Invalid int
}

// errNotObject is a document that is not a JSON object of an index
// file's shape.
var errNotObject = errors.New("not a JSON object of an index file's shape")

// filter copies a repodata-shaped JSON document (repodata.json,
// current_repodata.json, run_exports.json) from r to w, keeping the
// records whose package name keep accepts and whose filename is valid
// for subdir. With verify, a record must also have the sha256 and size
// the package will be checked against, and each kept record is passed to
// seen. An absolute info.base_url (CEP-15) is dropped, so that clients
// fetch packages through the proxy.
func filter(r io.Reader, w io.Writer, subdir string, keep func(string) bool, verify bool, seen func(fn string, rec record) error) (filterStats, error) {
	var st filterStats
	err := document(r, w, func(sc *scanner, bw *bufio.Writer, key string) error {
		if key == "packages" || key == "packages.conda" {
			return filterPackages(sc, bw, key, subdir, keep, verify, seen, &st)
		}
		return copyValue(sc, bw, key == "info")
	})
	return st, err
}

// filterChannelData copies a channeldata.json from r to w, keeping under
// "packages" (a map of package name to summary) the names keep accepts;
// every other key is copied as it is. Unlike a repodata record, a name
// that could not be a package's is not dropped alone: the whole document
// is refused, since it is not what a channel's indexer writes.
func filterChannelData(r io.Reader, w io.Writer, keep func(string) bool) (filterStats, error) {
	var st filterStats
	err := document(r, w, func(sc *scanner, bw *bufio.Writer, key string) error {
		if key != "packages" {
			return copyValue(sc, bw, false)
		}
		bw.WriteByte('{')
		err := sc.object(func(name string) error {
			raw, err := sc.value()
			switch {
			case err != nil:
				return err
			case !validName(name):
				return fmt.Errorf("%q is not a package name: %w", name, errNotObject)
			case !keep(name):
				st.Excluded++
				return nil
			case raw[0] != '{' || !json.Valid(raw):
				return fmt.Errorf("%s: %w", name, errNotObject)
			}
			if st.Kept > 0 {
				bw.WriteByte(',')
			}
			st.Kept++
			writeKey(bw, name)
			_, err = bw.Write(raw)
			return err
		})
		bw.WriteByte('}')
		return err
	})
	return st, err
}

// document copies a JSON object from r to w a key at a time, value
// writing each key's value: copied, or filtered. A key twice, or
// anything after the object, refuses the document.
func document(r io.Reader, w io.Writer, value func(sc *scanner, bw *bufio.Writer, key string) error) error {
	sc := newScanner(r)
	bw := bufio.NewWriterSize(w, 256<<10)
	bw.WriteByte('{')
	keys := map[string]bool{}
	err := sc.object(func(key string) error {
		if keys[key] {
			// Clients would read one of the two, not both.
			return fmt.Errorf("key %q twice: %w", key, errNotObject)
		}
		if len(keys) > 0 {
			bw.WriteByte(',')
		}
		keys[key] = true
		writeKey(bw, key)
		if err := value(sc, bw, key); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := sc.peek(); err != io.EOF {
		return fmt.Errorf("data after the document: %w", errNotObject)
	}
	bw.WriteByte('}')
	return bw.Flush()
}

// filterPackages filters one map of filename to record.
func filterPackages(sc *scanner, bw *bufio.Writer, key, subdir string, keep func(string) bool, verify bool, seen func(string, record) error, st *filterStats) error {
	bw.WriteByte('{')
	n := 0
	err := sc.object(func(fn string) error {
		raw, err := sc.value()
		if err != nil {
			return err
		}
		f, err := condapkg.ParseFilename(fn)
		if err == nil && !keep(f.Name) {
			// Not served: not worth decoding.
			st.Excluded++
			return nil
		}
		var rec record
		if err == nil {
			rec, err = check(f, fn, key, subdir, raw, verify)
		}
		if err != nil {
			st.Invalid++
			return nil
		}
		if seen != nil {
			if err := seen(fn, rec); err != nil {
				return err
			}
		}
		st.Kept++
		if n > 0 {
			bw.WriteByte(',')
		}
		n++
		writeKey(bw, fn)
		_, err = bw.Write(raw)
		return err
	})
	bw.WriteByte('}')
	return err
}

// check validates one record as the proxy would an upload: the filename
// (parsed as f) has the extension of its map and names the record's package;
// the record's subdir, if it says one, is the subdir's.
func check(f condapkg.Filename, fn, key, subdir string, raw json.RawMessage, verify bool) (record, error) {
	if (key == "packages.conda") != (f.Format == condapkg.Conda) {
		return record{}, fmt.Errorf("%s is listed under %s", fn, key)
	}
	rec, err := decodeRecord(raw)
	if err != nil {
		return record{}, fmt.Errorf("%s: %w", fn, err)
	}
	if rec.Name != "" && rec.Name != f.Name {
		return record{}, fmt.Errorf("%s names package %q", fn, rec.Name)
	}
	rec.Name = f.Name
	if rec.Subdir != "" && rec.Subdir != subdir {
		return record{}, fmt.Errorf("%s is of subdir %q", fn, rec.Subdir)
	}
	if verify {
		if b, err := hex.DecodeString(rec.Sha256); err != nil || len(b) != 32 || rec.Size <= 0 {
			return record{}, fmt.Errorf("%s has no valid sha256 and size", fn)
		}
		rec.Sha256 = strings.ToLower(rec.Sha256)
	}
	return rec, nil
}

// decodeRecord reads the fields of a record the proxy needs. They must be
// there by their exact names, once each, as conda's and rattler's parsers
// read them: encoding/json alone would also take "SHA256", or the last of
// two.
func decodeRecord(raw json.RawMessage) (record, error) {
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return rec, err
	}
	return rec, exactKeys(raw, "name", "subdir", "sha256", "size")
}

// exactKeys checks that each of names is, among the keys of the JSON
// object raw (valid JSON), at most once in any case, and then in its own.
func exactKeys(raw []byte, names ...string) error {
	depth, seen := 0, 0
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case '"':
			j := i + 1
			for j < len(raw) && raw[j] != '"' {
				if raw[j] == '\\' {
					j++
				}
				j++
			}
			str := raw[i+1 : min(j, len(raw))]
			if bytes.IndexByte(str, '\\') >= 0 && j < len(raw) {
				var u string
				json.Unmarshal(raw[i:j+1], &u)
				str = []byte(u)
			}
			k := j + 1
			for k < len(raw) && (raw[k] == ' ' || raw[k] == '\t' || raw[k] == '\n' || raw[k] == '\r') {
				k++
			}
			if depth == 1 && k < len(raw) && raw[k] == ':' {
				for n, name := range names {
					if !bytes.EqualFold(str, []byte(name)) {
						continue
					}
					if string(str) != name || seen&(1<<n) != 0 {
						return fmt.Errorf("key %q twice or in another case", name)
					}
					seen |= 1 << n
				}
			}
			i = j
		}
	}
	return nil
}

// copyValue copies a value other than the package maps, checked as JSON;
// of info, without an absolute base_url.
func copyValue(sc *scanner, bw *bufio.Writer, info bool) error {
	raw, err := sc.value()
	if err != nil {
		return err
	}
	if !json.Valid(raw) {
		return errNotObject
	}
	var obj map[string]json.RawMessage
	if info && json.Unmarshal(raw, &obj) == nil {
		if b, ok := obj["base_url"]; ok {
			var s string
			if json.Unmarshal(b, &s) != nil || strings.Contains(s, "://") || strings.HasPrefix(s, "/") {
				delete(obj, "base_url")
				raw, _ = json.Marshal(obj)
			}
		}
	}
	_, err = bw.Write(raw)
	return err
}

func writeKey(bw *bufio.Writer, key string) {
	b, _ := json.Marshal(key)
	bw.Write(b)
	bw.WriteByte(':')
}
