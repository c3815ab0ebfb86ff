package repodata_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/corpus"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// channel places every valid corpus package in a fresh channel, by subdir.
func channel(t *testing.T) (string, map[string]bool) {
	t.Helper()
	root := t.TempDir()
	subdirs := map[string]bool{}
	for _, p := range corpus.Load(t, "pkgs") {
		dst := filepath.Join(root, p.Subdir, p.Name())
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p.Path())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		subdirs[p.Subdir] = true
	}
	return root, subdirs
}

func readJSON(t *testing.T, path string) any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// TestMatchesCondaIndex indexes the whole corpus and compares every
// subdir's repodata.json with what the real conda-index wrote for it.
func TestMatchesCondaIndex(t *testing.T) {
	root, subdirs := channel(t)
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	for sd := range subdirs {
		if err := x.Run(context.Background(), sd); err != nil {
			t.Fatal(err)
		}
	}
	expected := filepath.Join(corpus.Dir(), "expected", "generated__conda-index-13bd599__corpus-all")
	for sd := range subdirs {
		t.Run(sd, func(t *testing.T) {
			got := readJSON(t, filepath.Join(root, sd, "repodata.json"))
			want := readJSON(t, filepath.Join(expected, sd, "repodata.json"))
			if !reflect.DeepEqual(got, want) {
				g, _ := json.MarshalIndent(got, "", " ")
				w, _ := json.MarshalIndent(want, "", " ")
				t.Errorf("repodata.json differs from conda-index's\ngot:  %s\nwant: %s", g, w)
			}
		})
	}
}

// TestEmptySubdir checks the shape conda-index gives an empty subdir.
func TestEmptySubdir(t *testing.T) {
	root := t.TempDir()
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	if err := x.Run(context.Background(), "noarch"); err != nil {
		t.Fatal(err)
	}
	got := readJSON(t, filepath.Join(root, "noarch", "repodata.json"))
	want := readJSON(t, filepath.Join(corpus.Dir(), "expected", "test_index_format__monolithic_index.json"))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestReconcile checks that packages added and removed by hand, behind the
// cache's back, are picked up; that a corrupt cache is rebuilt; and that a
// package in the wrong subdir or a bad file is left out.
func TestReconcile(t *testing.T) {
	root := t.TempDir()
	sd := filepath.Join(root, "osx-64")
	if err := os.MkdirAll(sd, 0o755); err != nil {
		t.Fatal(err)
	}
	copyPkg := func(rel, dir string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(corpus.Dir(), rel))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(rel)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyPkg("conda-pkgs/cph/mock-2.0.0-py37_1000.conda", sd)
	copyPkg("conda-pkgs/conda-index/fly-2.5.2-0.tar.bz2", sd)
	keys := func(x *repodata.Writer) []string {
		t.Helper()
		if err := x.Run(context.Background(), "osx-64"); err != nil {
			t.Fatal(err)
		}
		doc := readJSON(t, filepath.Join(sd, "repodata.json")).(map[string]any)
		var names []string
		for _, sec := range []string{"packages", "packages.conda"} {
			for k := range doc[sec].(map[string]any) {
				names = append(names, k)
			}
		}
		return names
	}
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	if got := keys(x); len(got) != 2 {
		t.Fatalf("first update lists %v", got)
	}
	// Added and removed by hand; a linux-64 package misplaced in osx-64;
	// a file that is not a package.
	copyPkg("conda-pkgs/conda-index/test_index_of_removed_pkg-1.0-1.tar.bz2", sd)
	copyPkg("conda-pkgs/quetz/other-package-0.2-0.conda", sd)
	if err := os.WriteFile(filepath.Join(sd, "junk-1-0.conda"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(sd, "fly-2.5.2-0.tar.bz2")); err != nil {
		t.Fatal(err)
	}
	want := []string{"test_index_of_removed_pkg-1.0-1.tar.bz2", "mock-2.0.0-py37_1000.conda"}
	if got := keys(x); !reflect.DeepEqual(got, want) {
		t.Fatalf("after changes by hand: %v, want %v", got, want)
	}
	// A fresh process trusts a valid cache: a package whose bytes were
	// replaced behind its back, with size and mtime kept, is listed from
	// its cached record instead of being read again (and refused).
	mock := filepath.Join(sd, "mock-2.0.0-py37_1000.conda")
	orig := mustRead(t, mock)
	fi, _ := os.Stat(mock)
	os.WriteFile(mock, make([]byte, len(orig)), 0o644)
	os.Chtimes(mock, fi.ModTime(), fi.ModTime())
	var logs strings.Builder
	fresh := repodata.New(root, condapkg.DefaultLimits(), slog.New(slog.NewTextHandler(&logs, nil)))
	if got := keys(fresh); !reflect.DeepEqual(got, want) {
		t.Fatalf("from cache: %v, want %v\n%s", got, want, logs.String())
	}
	if strings.Contains(logs.String(), "unusable") || strings.Contains(logs.String(), "left out") {
		t.Errorf("valid cache not used:\n%s", logs.String())
	}
	os.WriteFile(mock, orig, 0o644)
	os.Chtimes(mock, fi.ModTime(), fi.ModTime())
	// ...but not a corrupt one, nor a record that lies about its file: a
	// changed file (new mtime) is read again.
	cache := filepath.Join(sd, repodata.CacheDir, "records.jsonl")
	if err := os.WriteFile(cache, []byte("{\"version\":3}\n{\"name\":\"mock-2.0.0-py37_1000.conda\",\"size\":1}\n{\"name\":\"x\""), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := keys(repodata.New(root, condapkg.DefaultLimits(), quiet())); !reflect.DeepEqual(got, want) {
		t.Fatalf("after corrupt cache: %v, want %v", got, want)
	}
	if b := mustRead(t, cache); !strings.HasPrefix(string(b), "{\"version\":3}\n") || strings.Contains(string(b), `"size":1}`) {
		t.Fatalf("cache not rewritten: %s", b)
	}
	// A torn last line, as a crash mid-append leaves, costs nothing.
	f, _ := os.OpenFile(cache, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"name":"torn`)
	f.Close()
	if got := keys(repodata.New(root, condapkg.DefaultLimits(), quiet())); !reflect.DeepEqual(got, want) {
		t.Fatalf("after torn line: %v, want %v", got, want)
	}
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(sd, "mock-2.0.0-py37_1000.conda"), future, future); err != nil {
		t.Fatal(err)
	}
	if got := keys(x); !reflect.DeepEqual(got, want) {
		t.Fatalf("after touch: %v, want %v", got, want)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
