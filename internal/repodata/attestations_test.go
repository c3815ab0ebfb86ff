package repodata_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
)

// TestAttestationsSHA256: a record has attestations_sha256 if and only if
// its package has a current sidecar, naming its bytes, in repodata.json,
// its .zst and the package's shard; it follows each addition, survives a
// patch, goes when the sidecar goes, and is never taken from the package.
func TestAttestationsSHA256(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "linux-64")
	plain := put(t, root, "plain", "1.0", "")
	attested := put(t, root, "attested", "1.0", "")
	// A package that claims an attestation in its own index.json.
	s := pkgtest.Simple("forged", "1.0", "0", "linux-64")
	s.Info[0].Data = []byte(`{"name": "forged", "version": "1.0", "build": "0", "build_number": 0, "subdir": "linux-64", "depends": [], "attestations_sha256": "` + sidecar.Digest([]byte("[]")) + `"}`)
	if err := os.WriteFile(filepath.Join(dir, s.Stem()+".conda"), pkgtest.Conda(t, s), 0o644); err != nil {
		t.Fatal(err)
	}
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	run := func() {
		t.Helper()
		if err := x.Run(context.Background(), "linux-64"); err != nil {
			t.Fatal(err)
		}
	}
	// want checks every index file's record of each package.
	want := func(what string, sha map[string]string) {
		t.Helper()
		rd := repodataOf(t, dir)
		var zst map[string]any
		if err := json.Unmarshal(unzstd(t, mustRead(t, filepath.Join(dir, "repodata.json.zst"))), &zst); err != nil {
			t.Fatal(err)
		}
		for fn, w := range sha {
			name := fn[:len(fn)-len("-1.0-0.conda")]
			for src, rec := range map[string]any{
				"repodata.json":     rd["packages.conda"].(map[string]any)[fn],
				"repodata.json.zst": zst["packages.conda"].(map[string]any)[fn],
				"shard":             shardRecord(t, dir, name, fn),
			} {
				got, has := rec.(map[string]any)["attestations_sha256"]
				if w == "" && has || w != "" && got != w {
					t.Errorf("%s: %s: %s has attestations_sha256 %v, want %q", what, src, fn, got, w)
				}
			}
		}
	}
	run()
	want("no sidecars", map[string]string{filepath.Base(plain): "", filepath.Base(attested): "", "forged-1.0-0.conda": ""})

	first, err := sidecar.Add(attested, []byte(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	run()
	want("a sidecar", map[string]string{filepath.Base(plain): "", filepath.Base(attested): first.SHA256})
	second, err := sidecar.Add(attested, []byte(`{"n":2}`))
	if err != nil {
		t.Fatal(err)
	}
	run()
	want("an addition", map[string]string{filepath.Base(attested): second.SHA256})

	// A fresh writer reads it from its cache, and a patch keeps it.
	x = repodata.New(root, condapkg.DefaultLimits(), quiet())
	patch := `{"patch_instructions_version": 1, "packages.conda": {"attested-1.0-0.conda": {"depends": ["zlib"]}}}`
	if err := os.WriteFile(filepath.Join(dir, "patch_instructions.json"), []byte(patch), 0o644); err != nil {
		t.Fatal(err)
	}
	run()
	want("patched, from the cache", map[string]string{filepath.Base(attested): second.SHA256})
	if deps := repodataOf(t, dir)["packages.conda"].(map[string]any)["attested-1.0-0.conda"].(map[string]any)["depends"]; len(deps.([]any)) != 1 {
		t.Errorf("the patch was not applied: %v", deps)
	}

	paths, _ := sidecar.Paths(attested)
	for _, p := range paths {
		os.Remove(p)
	}
	run()
	want("sidecar removed", map[string]string{filepath.Base(attested): ""})
}

// shardRecord returns the record of fn in the shard of name.
func shardRecord(t *testing.T, dir, name, fn string) any {
	t.Helper()
	sum := decodeShardIndex(t, dir)["shards"].(map[string]any)[name].([]byte)
	return readShardFile(t, dir, sum).(map[string]any)["packages.conda"].(map[string]any)[fn]
}
