// Package corpus gives tests access to the real conda packages in the
// repository's testdata folder and to what is known about each of them
// (testdata/manifest.json, see testdata/PROVENANCE.md).
package corpus

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Package is one manifest entry.
type Package struct {
	// File is the path below testdata, e.g. "conda-pkgs/cph/mock-2.0.0-py37_1000.conda".
	File     string         `json:"file"`
	Category string         `json:"category"` // "pkgs" or "bad"
	Subdir   string         `json:"subdir"`
	Size     int64          `json:"size"`
	SHA256   string         `json:"sha256"`
	MD5      string         `json:"md5"`
	Note     string         `json:"note"`
	Index    map[string]any `json:"index_json"`
}

// Name returns the package's filename.
func (p Package) Name() string { return filepath.Base(p.File) }

// Path returns the absolute path of the package file.
func (p Package) Path() string { return filepath.Join(Dir(), p.File) }

// Dir returns the absolute path of the repository's testdata folder.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata")
}

// Load reads the manifest and returns its entries of the given category.
func Load(t testing.TB, category string) []Package {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(Dir(), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all []Package
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	var out []Package
	for _, p := range all {
		if p.Category == category {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %q packages in the manifest", category)
	}
	return out
}
