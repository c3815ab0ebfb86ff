package repodata_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/corpus"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
)

// hotfixChannel places conda-index's hotfix test packages, of the given
// extensions, in a fresh channel's osx-64.
func hotfixChannel(t *testing.T, exts ...string) string {
	t.Helper()
	root := t.TempDir()
	src := filepath.Join(corpus.Dir(), "conda-pkgs", "conda-index", "hotfix", "osx-64")
	des, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "osx-64"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		for _, ext := range exts {
			if strings.HasSuffix(de.Name(), ext) {
				b, err := os.ReadFile(filepath.Join(src, de.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, "osx-64", de.Name()), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return root
}

func patchedFixture(name string) string {
	return filepath.Join(corpus.Dir(), "expected", "conda-index__index_hotfix_pkgs-patched", "osx-64", name)
}

func repodataOf(t *testing.T, dir string) map[string]any {
	t.Helper()
	return readJSON(t, filepath.Join(dir, "repodata.json")).(map[string]any)
}

// TestPatchMatchesCondaIndex indexes conda-index's hotfix packages with
// the instructions of its own patch tests and compares repodata.json with
// what conda-index's _apply_instructions makes of its unpatched index. The
// .zst must hold the same bytes, and the shards the patched records.
func TestPatchMatchesCondaIndex(t *testing.T) {
	root := hotfixChannel(t, ".tar.bz2")
	dir := filepath.Join(root, "osx-64")
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	ctx := context.Background()
	if err := x.Run(ctx, "osx-64"); err != nil {
		t.Fatal(err)
	}
	unpatched := filepath.Join(corpus.Dir(), "expected", "conda-index__index_hotfix_pkgs", "osx-64", "repodata.json")
	if got, want := repodataOf(t, dir), readJSON(t, unpatched); !reflect.DeepEqual(got, want) {
		t.Fatalf("unpatched index differs from conda-index's:\ngot  %v\nwant %v", got, want)
	}
	if err := os.WriteFile(filepath.Join(dir, "patch_instructions.json"), mustRead(t, patchedFixture("patch_instructions.json")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := x.Run(ctx, "osx-64"); err != nil {
		t.Fatal(err)
	}
	got, want := repodataOf(t, dir), readJSON(t, patchedFixture("repodata.json")).(map[string]any)
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Errorf("patched repodata.json differs from conda-index's\ngot:  %s\nwant: %s", g, w)
	}
	if zst := unzstd(t, mustRead(t, filepath.Join(dir, "repodata.json.zst"))); !bytes.Equal(zst, mustRead(t, filepath.Join(dir, "repodata.json"))) {
		t.Error("repodata.json.zst does not hold repodata.json's bytes")
	}
	shards := decodeShardIndex(t, dir)["shards"].(map[string]any)
	if _, ok := shards["remove_test"]; ok {
		t.Error("the shard index still names remove_test, which the patch removes")
	}
	for name, fn := range map[string]string{
		"revoke_test":         "revoke_test-1.0-0.tar.bz2",
		"hotfix_depends_test": "hotfix_depends_test-1.0-dummy_0.tar.bz2",
		"track_features_test": "track_features_test-1.0-0.tar.bz2",
	} {
		sum, ok := shards[name].([]byte)
		if !ok {
			t.Errorf("the shard index has no %s", name)
			continue
		}
		rec := readShardFile(t, dir, sum).(map[string]any)["packages"].(map[string]any)[fn].(map[string]any)
		w := want["packages"].(map[string]any)[fn].(map[string]any)
		for _, k := range []string{"depends", "revoked", "features", "track_features"} {
			if !reflect.DeepEqual(rec[k], w[k]) {
				t.Errorf("shard %s: %s = %v, want %v", name, k, rec[k], w[k])
			}
		}
	}
}

// TestPatchBothFormats checks what conda-index's
// test_channel_patch_instructions_json asserts: instructions written for
// .tar.bz2 files apply to their .conda twins too.
func TestPatchBothFormats(t *testing.T) {
	root := hotfixChannel(t, ".tar.bz2", ".conda")
	dir := filepath.Join(root, "osx-64")
	if err := os.WriteFile(filepath.Join(dir, "patch_instructions.json"), mustRead(t, patchedFixture("patch_instructions.json")), 0o644); err != nil {
		t.Fatal(err)
	}
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	if err := x.Run(context.Background(), "osx-64"); err != nil {
		t.Fatal(err)
	}
	rd := repodataOf(t, dir)
	for _, f := range []struct{ key, ext string }{{"packages", ".tar.bz2"}, {"packages.conda", ".conda"}} {
		t.Run(f.key, func(t *testing.T) {
			pkgs := rd[f.key].(map[string]any)
			rec := func(stem string) map[string]any {
				r, ok := pkgs[stem+f.ext].(map[string]any)
				if !ok {
					t.Fatalf("%s%s is not in %s", stem, f.ext, f.key)
				}
				return r
			}
			if _, ok := rec("track_features_test-1.0-0")["track_features"]; ok {
				t.Error("track_features not removed")
			}
			h := rec("hotfix_depends_test-1.0-dummy_0")
			if _, ok := h["features"]; ok {
				t.Error("features not removed")
			}
			if !reflect.DeepEqual(h["depends"], []any{"zlib", "dummy"}) {
				t.Errorf("depends = %v", h["depends"])
			}
			if deps := rec("revoke_test-1.0-0")["depends"].([]any); !slices.Contains(deps, any("package_has_been_revoked")) || !slices.Contains(deps, any("zlib")) {
				t.Errorf("revoked depends = %v", deps)
			}
			if _, ok := pkgs["remove_test-1.0-0"+f.ext]; ok {
				t.Error("remove_test still listed")
			}
		})
	}
	if got := rd["removed"]; !reflect.DeepEqual(got, []any{"remove_test-1.0-0.conda", "remove_test-1.0-0.tar.bz2"}) {
		t.Errorf("removed = %v", got)
	}
}

// TestPatchChanges checks that a changed patch file is applied at the
// next run, a removed one undoes itself, and a corrupt one fails the run
// and leaves the index as it was.
func TestPatchChanges(t *testing.T) {
	root := hotfixChannel(t, ".tar.bz2")
	dir := filepath.Join(root, "osx-64")
	pf := filepath.Join(dir, "patch_instructions.json")
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	ctx := context.Background()
	steps := []struct {
		name     string
		patch    string // "" removes the file
		wantErr  bool
		removed  []any
		revoked  bool
		trackFtr bool
	}{
		{name: "none", trackFtr: true, removed: []any{}},
		{name: "remove", patch: `{"patch_instructions_version":1,"remove":["remove_test-1.0-0.tar.bz2"]}`, trackFtr: true, removed: []any{"remove_test-1.0-0.tar.bz2"}},
		{name: "revoke instead", patch: `{"patch_instructions_version":1,"revoke":["revoke_test-1.0-0.tar.bz2"]}`, trackFtr: true, revoked: true, removed: []any{}},
		{name: "corrupt", patch: `{"patch_instructions_version":1,"revoke":`, wantErr: true, trackFtr: true, revoked: true, removed: []any{}},
		{name: "null field", patch: `{"patch_instructions_version":1,"packages":{"track_features_test-1.0-0.tar.bz2":{"track_features":null}}}`, removed: []any{}},
		{name: "deleted", trackFtr: true, removed: []any{}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.patch == "" {
				os.Remove(pf)
			} else if err := os.WriteFile(pf, []byte(s.patch), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := x.Run(ctx, "osx-64"); (err != nil) != s.wantErr {
				t.Fatalf("run: %v, want error %v", err, s.wantErr)
			}
			rd := repodataOf(t, dir)
			pkgs := rd["packages"].(map[string]any)
			if !reflect.DeepEqual(rd["removed"], s.removed) {
				t.Errorf("removed = %v, want %v", rd["removed"], s.removed)
			}
			if _, ok := pkgs["remove_test-1.0-0.tar.bz2"]; ok == (len(s.removed) > 0) {
				t.Errorf("remove_test listed: %v", ok)
			}
			if r := pkgs["revoke_test-1.0-0.tar.bz2"].(map[string]any)["revoked"]; (r == true) != s.revoked {
				t.Errorf("revoked = %v, want %v", r, s.revoked)
			}
			if _, ok := pkgs["track_features_test-1.0-0.tar.bz2"].(map[string]any)["track_features"]; ok != s.trackFtr {
				t.Errorf("track_features present: %v, want %v", ok, s.trackFtr)
			}
			shards := decodeShardIndex(t, dir)["shards"].(map[string]any)
			if _, ok := shards["remove_test"]; ok == (len(s.removed) > 0) {
				t.Errorf("shard index names remove_test: %v", ok)
			}
		})
	}
}
