package repodata_test

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
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

// TestCurrentRepodataMatchesCondaIndex indexes the whole corpus with
// current_repodata on and compares each subdir's current_repodata.json
// with what the real conda-index wrote. One difference is known and
// pinned: conda-index left win-64's only zlib build out, though by its
// own algorithm (the newest version of every name) it belongs in; this
// indexer keeps it, and a superset is safe, since the classic solver
// falls back to repodata.json only for what current_repodata lacks.
func TestCurrentRepodataMatchesCondaIndex(t *testing.T) {
	known := map[string]string{"win-64": "zlib-1.2.11-h62dcd97_3.tar.bz2"}
	root, subdirs := channel(t)
	files := repodata.DefaultFiles()
	files.CurrentRepodata = true
	x := repodata.New(root, condapkg.DefaultLimits(), quiet(), repodata.WithFiles(files))
	expected := filepath.Join(corpus.Dir(), "expected", "generated__conda-index-13bd599__corpus-all")
	for sd := range subdirs {
		if err := x.Run(context.Background(), sd); err != nil {
			t.Fatal(err)
		}
		t.Run(sd, func(t *testing.T) {
			got := readJSON(t, filepath.Join(root, sd, "current_repodata.json")).(map[string]any)
			want := readJSON(t, filepath.Join(expected, sd, "current_repodata.json")).(map[string]any)
			for _, k := range []string{"packages", "packages.conda"} {
				g, w := got[k].(map[string]any), want[k].(map[string]any)
				gk, wk := slices.Sorted(maps.Keys(g)), slices.Sorted(maps.Keys(w))
				if fn, ok := known[sd]; ok && k == "packages" {
					if _, in := g[fn]; !in {
						t.Errorf("%s: the known extra %s is gone; drop it from the known list", sd, fn)
					}
					gk = slices.DeleteFunc(gk, func(s string) bool { return s == fn })
				}
				if !slices.Equal(gk, wk) {
					t.Errorf("%s: %v\nwant %v", k, gk, wk)
					continue
				}
				for fn := range w {
					gr, wr := g[fn].(map[string]any), w[fn].(map[string]any)
					if !reflect.DeepEqual(gr, wr) {
						t.Errorf("%s %s:\ngot  %v\nwant %v", k, fn, gr, wr)
					}
				}
			}
			for _, k := range []string{"info", "removed", "repodata_version"} {
				if !reflect.DeepEqual(got[k], want[k]) {
					t.Errorf("%s = %v, want %v", k, got[k], want[k])
				}
			}
			if zst := unzstd(t, mustRead(t, filepath.Join(root, sd, "current_repodata.json.zst"))); !bytes.Equal(zst, mustRead(t, filepath.Join(root, sd, "current_repodata.json"))) {
				t.Error("current_repodata.json.zst differs from current_repodata.json")
			}
		})
	}
}
