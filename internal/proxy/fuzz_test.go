package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
)

// FuzzFilter: whatever an upstream's repodata.json holds, what the filter
// writes is one valid JSON object whose records all have valid filenames
// of served packages, with sha256 and size.
func FuzzFilter(f *testing.F) {
	f.Add([]byte(`{"info":{"subdir":"linux-64"},"packages":{"a-1-0.tar.bz2":{"name":"a","sha256":"` + zeros + `","size":1}},"packages.conda":{},"repodata_version":1}`))
	f.Add([]byte(`{"packages":{"../x-1-0.tar.bz2":{"name":"x"}},"removed":["a"],"info":{"base_url":"https://x/"}}`))
	f.Add([]byte(`{"packages.conda":{"b-1-0.conda":{"name":"b","subdir":"noarch","sha256":"` + zeros + `","size":2}}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		keep := func(name string) bool { return !strings.HasPrefix(name, "x") }
		var seen []string
		_, err := filter(bytes.NewReader(in), &out, "linux-64", keep, true, func(fn string, r record) error {
			seen = append(seen, fn)
			if len(r.Sha256) != 64 || r.Size <= 0 || !keep(r.Name) {
				t.Errorf("record %s passed on: %+v", fn, r)
			}
			return nil
		})
		if err != nil {
			return
		}
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
			t.Fatalf("output is not a JSON object: %v\n%s", err, out.Bytes())
		}
		served := map[string]bool{}
		for _, key := range []string{"packages", "packages.conda"} {
			var recs map[string]json.RawMessage
			if raw, ok := doc[key]; ok {
				if err := json.Unmarshal(raw, &recs); err != nil {
					t.Fatalf("%s: %v", key, err)
				}
			}
			for fn := range recs {
				served[fn] = true
				if f, err := condapkg.ParseFilename(fn); err != nil || !keep(f.Name) {
					t.Errorf("served %q", fn)
				}
			}
		}
		// A filename twice in the document is served twice (clients keep
		// one); the set passed on is the set served.
		for _, fn := range seen {
			if !served[fn] {
				t.Errorf("%s passed on, not served", fn)
			}
		}
		if len(served) > len(seen) {
			t.Errorf("%d records served, %d passed on", len(served), len(seen))
		}
	})
}

// TestFilterBoundsValues: one record, or any other value, larger than
// maxValue is refused before the filter holds it all.
func TestFilterBoundsValues(t *testing.T) {
	for _, head := range []string{`{"packages":{"a-1-0.conda":{"x":"`, `{"removed":["`} {
		in := io.MultiReader(strings.NewReader(head), io.LimitReader(repeat('a'), maxValue+1), strings.NewReader(`"}}}`))
		_, err := filter(in, io.Discard, "linux-64", func(string) bool { return true }, false, nil)
		if !errors.Is(err, errValueTooLarge) {
			t.Errorf("%s...: %v, want errValueTooLarge", head, err)
		}
	}
}

type repeat byte

func (r repeat) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(r)
	}
	return len(b), nil
}

// FuzzChannelData: whatever an upstream's channeldata.json holds, what
// the filter writes is one valid JSON object whose packages are all
// valid names the proxy serves, each with an object as its summary.
func FuzzChannelData(f *testing.F) {
	if b, err := os.ReadFile(realChannelData); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"channeldata_version":1,"packages":{"a":{"version":"1"},"xb":{}},"subdirs":["noarch"]}`))
	f.Add([]byte(`{"packages":{"../a":{}},"packages":{}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		keep := func(name string) bool { return !strings.HasPrefix(name, "x") }
		if _, err := filterChannelData(bytes.NewReader(in), &out, keep); err != nil {
			return
		}
		var doc struct {
			Packages map[string]json.RawMessage `json:"packages"`
		}
		if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
			t.Fatalf("output is not a JSON object: %v\n%s", err, out.Bytes())
		}
		for name, raw := range doc.Packages {
			if !validName(name) || !keep(name) || raw[0] != '{' {
				t.Errorf("served %q: %s", name, raw)
			}
		}
	})
}
