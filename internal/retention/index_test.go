package retention

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// TestScanIndex reads conda-index's own repodata.json files (testdata)
// and tricky hand-written ones as encoding/json does (decodeIndex), and
// gives up on what it does not expect.
func TestScanIndex(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/expected/*/*/repodata.json")
	more, _ := filepath.Glob("../../testdata/expected/*/*/*/repodata.json")
	files = append(files, more...)
	if len(files) < 5 {
		t.Fatalf("only %d repodata.json files in testdata", len(files))
	}
	var docs [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	docs = append(docs,
		[]byte(`{"info":{"subdir":"noarch","x":[{"}":"]"}]},"packages":{},"packages.conda":{"a\u002d1-1-0.conda":{"depends":["b \"q\"", "c"],"build_number":12,"n":null,"f":1.5e3,"t":true}},"removed":["x-1-0.conda"],"repodata_version":1}`),
		[]byte(` { "packages" : { "a-1-0.tar.bz2" : { "build_number" : 3 } } , "removed" : [ ] } `),
	)
	for i, b := range docs {
		n, r, ok := scanIndex(b)
		if !ok {
			t.Errorf("doc %d: gave up", i)
			continue
		}
		wn, wr, err := decodeIndex(b)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(n, wn) || !maps.Equal(r, wr) {
			t.Errorf("doc %d: read %v %v; encoding/json %v %v", i, n, r, wn, wr)
		}
	}
	for _, bad := range []string{``, `{`, `{"packages":{"a":{"build_number":-1}}}`, `{"packages":{"a":{"build_number":"1"}}}`, `{"removed":[1]}`, `{"a":"b"`, `{"a":[}`} {
		if _, _, ok := scanIndex([]byte(bad)); ok {
			t.Errorf("%q: did not give up", bad)
		}
	}
}
