package repodata_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/corpus"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
)

// TestChanneldataMatchesCondaIndex indexes the whole corpus with
// channeldata on and compares channeldata.json with what the real
// conda-index wrote (--channeldata), name by name and field by field.
// The timestamp of a name with several .tar.bz2 versions is not compared:
// conda-index's depends on Python's hash seed (testdata/PROVENANCE.md §6).
func TestChanneldataMatchesCondaIndex(t *testing.T) {
	root, subdirs := channel(t)
	files := repodata.DefaultFiles()
	files.Channeldata = true
	x := repodata.New(root, condapkg.DefaultLimits(), quiet(), repodata.WithFiles(files))
	for _, sd := range slices.Sorted(func(yield func(string) bool) {
		for s := range subdirs {
			if !yield(s) {
				return
			}
		}
	}) {
		if err := x.Run(context.Background(), sd); err != nil {
			t.Fatal(err)
		}
	}
	got := readJSON(t, filepath.Join(root, "channeldata.json")).(map[string]any)
	want := readJSON(t, filepath.Join(corpus.Dir(), "expected", "generated__conda-index-13bd599__corpus-all-modern", "raw", "channeldata.json")).(map[string]any)
	if !reflect.DeepEqual(got["subdirs"], want["subdirs"]) || got["channeldata_version"] != want["channeldata_version"] {
		t.Errorf("subdirs %v version %v, want %v %v", got["subdirs"], got["channeldata_version"], want["subdirs"], want["channeldata_version"])
	}
	gp, wp := got["packages"].(map[string]any), want["packages"].(map[string]any)
	for name, w := range wp {
		t.Run(name, func(t *testing.T) {
			g, ok := gp[name].(map[string]any)
			if !ok {
				t.Fatal("missing")
			}
			w := w.(map[string]any)
			if name == "dummy-package" || name == "run_exports_versions" || name == "test-package" {
				delete(g, "timestamp")
				delete(w, "timestamp")
			}
			if !reflect.DeepEqual(g, w) {
				gb, _ := json.Marshal(g)
				wb, _ := json.Marshal(w)
				t.Errorf("\ngot:  %s\nwant: %s", gb, wb)
			}
		})
	}
	for name := range gp {
		if _, ok := wp[name]; !ok {
			t.Errorf("%s is not in conda-index's channeldata.json", name)
		}
	}
	// Off again: the file goes, rather than go stale.
	y := repodata.New(root, condapkg.DefaultLimits(), quiet())
	if err := y.Run(context.Background(), "noarch"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "channeldata.json")); !os.IsNotExist(err) {
		t.Errorf("channeldata.json left after turning it off: %v", err)
	}
}
