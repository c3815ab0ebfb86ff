package repodata_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
)

// FuzzShardKey: whatever package name the filename rules accept (case,
// "-" against "_", dots, length), its shard is keyed by exactly that name,
// as conda-index keys shards by index.json's name; the shard file is named
// by the sha256 of its bytes; and two names that differ only in case or
// punctuation never share a shard.
func FuzzShardKey(f *testing.F) {
	for _, s := range []string{"zlib", "Zlib", "py-yaml", "py_yaml", "a.b", "_r-mutex", "x", strings.Repeat("long", 60), "NumPy"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		files := []string{name + "-1.0-0.conda", strings.ToUpper(name) + "-1.0-0.tar.bz2", strings.ReplaceAll(name, "-", "_") + "-2.0-0.conda"}
		root := t.TempDir()
		dir := filepath.Join(root, "noarch")
		os.MkdirAll(dir, 0o755)
		x := repodata.New(root, condapkg.DefaultLimits(), quiet())
		want := map[string]bool{}
		for _, fn := range files {
			parsed, err := condapkg.ParseFilename(fn)
			if err != nil {
				continue
			}
			p := filepath.Join(dir, fn)
			if err := os.WriteFile(p, []byte("placeholder"), 0o644); err != nil {
				t.Skip("name not usable as a file name here")
			}
			fi, _ := os.Stat(p)
			idx, _ := json.Marshal(map[string]any{"name": parsed.Name, "version": parsed.Version, "build": parsed.Build, "build_number": 0, "subdir": "noarch"})
			if err := x.NotePackage(index.Package{Subdir: "noarch", Filename: fn, Info: fi, IndexJSON: idx, Size: fi.Size(),
				MD5: strings.Repeat("0", 32), SHA256: strings.Repeat("0", 64)}); err != nil {
				t.Fatal(err)
			}
			want[parsed.Name] = true
		}
		if len(want) == 0 {
			return
		}
		if err := x.Run(context.Background(), "noarch"); err != nil {
			t.Fatal(err)
		}
		shards := decodeShardIndex(t, dir)["shards"].(map[string]any)
		if len(shards) != len(want) {
			t.Fatalf("%d shards for names %v", len(shards), want)
		}
		for n, sum := range shards {
			if !want[n] {
				t.Fatalf("shard key %q is no package's name (%v)", n, want)
			}
			doc := readShardFile(t, dir, sum.([]byte)).(map[string]any)
			for _, key := range []string{"packages", "packages.conda"} {
				for fn, rec := range doc[key].(map[string]any) {
					if got := rec.(map[string]any)["name"]; got != n {
						t.Fatalf("shard %q holds %s named %q", n, fn, got)
					}
				}
			}
		}
	})
}
