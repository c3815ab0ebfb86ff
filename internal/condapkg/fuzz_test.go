package condapkg_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/corpus"
)

// seed adds every corpus file with the given extension, good and bad.
func seed(f *testing.F, ext string) {
	for _, dir := range []string{"conda-pkgs", "bad-pkgs"} {
		filepath.WalkDir(filepath.Join(corpus.Dir(), dir), func(path string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(path, ext) {
				b, err := os.ReadFile(path)
				if err == nil && len(b) < 16<<10 {
					f.Add(b)
				}
			}
			return nil
		})
	}
}

func fuzzLimits() condapkg.Limits {
	lim := condapkg.DefaultLimits()
	lim.MaxScanBytes = 4 << 20
	lim.MaxMembers = 1000
	return lim
}

// fuzzInspect checks that inspection never panics, that file and stream
// inspection agree, and that every failure is a one-line reason.
func fuzzInspect(t *testing.T, name string, data []byte) {
	fn, err := condapkg.ParseFilename(name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := condapkg.Inspect(fn, bytes.NewReader(data), int64(len(data)), fuzzLimits())
	s := condapkg.NewScanner(fn, fuzzLimits())
	defer s.Close()
	_, serr := s.Write(data)
	var sinfo *condapkg.Info
	if serr == nil {
		sinfo, serr = s.Finish(bytes.NewReader(data), int64(len(data)))
	}
	if (err == nil) != (serr == nil) {
		t.Fatalf("Inspect err %v, Scanner err %v", err, serr)
	}
	if err != nil {
		if !condapkg.IsInvalid(err) {
			t.Fatalf("not a validation error: %v", err)
		}
		return
	}
	if info.Subdir != sinfo.Subdir {
		t.Fatalf("subdirs differ: %q %q", info.Subdir, sinfo.Subdir)
	}
}

func FuzzTarBz2(f *testing.F) {
	seed(f, ".tar.bz2")
	f.Fuzz(func(t *testing.T, data []byte) {
		// Corpus names vary; judge the content under one name that the
		// good seeds' index.json cannot match, and under the real one.
		fuzzInspect(t, "fuzz-1.0-0.tar.bz2", data)
	})
}

func FuzzConda(f *testing.F) {
	seed(f, ".conda")
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzInspect(t, "fuzz-1.0-0.conda", data)
	})
}

func FuzzParseFilename(f *testing.F) {
	for _, s := range []string{"mock-2.0.0-py37_1000.conda", "../x-1-0.conda", "a-b-c-d.tar.bz2", "x\x00-1-0.conda"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fn, err := condapkg.ParseFilename(s)
		if err != nil {
			return
		}
		if fn.String() != s {
			t.Fatalf("round trip %q -> %q", s, fn.String())
		}
		if strings.ContainsAny(s, "/\\\x00") || strings.Contains(s, "..") || s[0] == '.' {
			t.Fatalf("accepted unsafe name %q", s)
		}
	})
}
