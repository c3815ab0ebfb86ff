package condapkg_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/corpus"
)

func TestParseFilename(t *testing.T) {
	tests := []struct {
		in      string
		want    condapkg.Filename
		wantErr string
	}{
		{in: "mock-2.0.0-py37_1000.conda", want: condapkg.Filename{Name: "mock", Version: "2.0.0", Build: "py37_1000", Format: condapkg.Conda}},
		{in: "stub-depends-run_exports-1.0.0-h00ce149_0.tar.bz2", want: condapkg.Filename{Name: "stub-depends-run_exports", Version: "1.0.0", Build: "h00ce149_0", Format: condapkg.TarBz2}},
		{in: "_r-mutex-1.0.1-anacondar_1.tar.bz2", want: condapkg.Filename{Name: "_r-mutex", Version: "1.0.1", Build: "anacondar_1", Format: condapkg.TarBz2}},
		{in: "pkg-1!2.0+local-0.conda", want: condapkg.Filename{Name: "pkg", Version: "1!2.0+local", Build: "0", Format: condapkg.Conda}},
		{in: "", wantErr: "no filename"},
		{in: "../evil-1.0-0.conda", wantErr: "path separator"},
		{in: "..\\evil-1.0-0.conda", wantErr: "path separator"},
		{in: "/etc/evil-1.0-0.conda", wantErr: "path separator"},
		{in: "%2e%2e%2fevil-1.0-0.conda", wantErr: `contains '%'`},
		{in: "evil\x00-1.0-0.conda", wantErr: "control character"},
		{in: "evil\n-1.0-0.conda", wantErr: "control character"},
		{in: "evil\xc0\xae-1.0-0.conda", wantErr: "not valid UTF-8"},
		{in: "evil\u2215x-1.0-0.conda", wantErr: "non-ASCII"},
		{in: "ｅvil-1.0-0.conda", wantErr: "non-ASCII"},
		{in: "evil-1.0-0.tar.gz", wantErr: "does not end in .tar.bz2 or .conda"},
		{in: "evil-1.0-0.zip", wantErr: "does not end in"},
		{in: "evil.conda", wantErr: "not name-version-build"},
		{in: "evil-1.0.conda", wantErr: "not name-version-build"},
		{in: "evil-1.0-.conda", wantErr: "empty name, version or build"},
		{in: "-1.0-0.conda", wantErr: "empty name, version or build"},
		{in: ".hidden-1.0-0.conda", wantErr: "must start with"},
		{in: "a..b-1.0-0.conda", wantErr: `contains ".."`},
		{in: "with space-1.0-0.conda", wantErr: "contains ' '"},
		{in: strings.Repeat("a", 250) + "-1-0.conda", wantErr: "longer than 255"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := condapkg.ParseFilename(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFilename(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				if !condapkg.IsInvalid(err) {
					t.Errorf("error %v is not a validation error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

// TestCorpusGood inspects every valid package of the corpus both ways: as a
// file on disk, and streamed through a Scanner in small writes.
func TestCorpusGood(t *testing.T) {
	for _, p := range corpus.Load(t, "pkgs") {
		t.Run(p.File, func(t *testing.T) {
			fn, err := condapkg.ParseFilename(p.Name())
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(p.Path())
			if err != nil {
				t.Fatal(err)
			}
			info, err := condapkg.Inspect(fn, bytes.NewReader(data), int64(len(data)), condapkg.DefaultLimits())
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if info.Subdir != p.Subdir {
				t.Errorf("Inspect subdir = %q, want %q", info.Subdir, p.Subdir)
			}
			info, err = scan(fn, data, 997)
			if err != nil {
				t.Fatalf("Scanner: %v", err)
			}
			if info.Subdir != p.Subdir {
				t.Errorf("Scanner subdir = %q, want %q", info.Subdir, p.Subdir)
			}
		})
	}
}

func scan(fn condapkg.Filename, data []byte, chunk int) (*condapkg.Info, error) {
	s := condapkg.NewScanner(fn, condapkg.DefaultLimits())
	defer s.Close()
	for rest := data; len(rest) > 0; {
		n := min(chunk, len(rest))
		if _, err := s.Write(rest[:n]); err != nil {
			return nil, err
		}
		rest = rest[n:]
	}
	return s.Finish(bytes.NewReader(data), int64(len(data)))
}

// TestCorpusBad checks the decision for every malformed or unusual file of
// the corpus. Most have names that are not name-version-build, which the
// server refuses first (see the server tests); here each is inspected under
// a well-formed name too, so that its content is what gets judged.
func TestCorpusBad(t *testing.T) {
	want := map[string]struct{ name, reason string }{
		"bad-pkgs/conda-index/bad_package.tar.bz2":                   {"x-1-0.tar.bz2", `not bzip2-compressed: not an archive (starts with "not_a_valid_bz2\n")`},
		"bad-pkgs/conda-index/another_bad_package.conda":             {"x-1-0.conda", "an empty file"},
		"bad-pkgs/conda-index/nano-2.4.1-0.tar.bz2":                  {"", `has no "subdir" (a legacy package)`},
		"bad-pkgs/conda-index/a.tar.bz2":                             {"x-1-0.tar.bz2", "no info/index.json; not a conda package"},
		"bad-pkgs/conda-index/subfolder.tar.bz2":                     {"x-1-0.tar.bz2", "no info/index.json; not a conda package"},
		"bad-pkgs/conda-build-75d5e9d/fly-2.5.2-0.tar.bz2":           {"", "not bzip2-compressed: an uncompressed tar"},
		"bad-pkgs/cph/pkg_with_unicode.conda":                        {"pkg_with_unicode-1-0.conda", `unexpected zip entry "info-pkg_with_unicode.tar.zst"`},
		"bad-pkgs/cph/pkg_with_unicode.tar.bz2":                      {"x-1-0.tar.bz2", "no info/index.json"},
		"bad-pkgs/conda/arch-package-1.0-0.conda":                    {"", `subdir "linux-fake" in info/index.json is not an allowed platform subdir`},
		"bad-pkgs/mamba/repodata.tar.bz2":                            {"x-1-0.tar.bz2", "no info/index.json"},
		"bad-pkgs/rattler/ca-certificates-2024.7.4-hbcca054_0.conda": {"", `unexpected zip entry "Users/jcorreia/Downloads/`},
		"bad-pkgs/rattler/sparse/info-only-1.0.0-0.conda":            {"", `no zip entry "pkg-info-only-1.0.0-0.tar.zst"`},
		// Parsed fine (zip64 sizes in the local header), refused for the
		// missing subdir like every rattler sparse file.
		"bad-pkgs/rattler/sparse/zip64-test-1.0.0-0.conda":    {"", `has no "subdir"`},
		"bad-pkgs/rattler/sparse/dotslash-test-1.0.0-0.conda": {"", `has ./info/index.json but no info/index.json`},
		// Payload links are never extracted, so they are harmless here.
		"bad-pkgs/rattler/sparse/symlink-test-1.0.0-0.conda": {"", `has no "subdir"`},
		// The info member comes after a 150 KB payload: still found.
		"bad-pkgs/rattler/sparse/sparse-test-1.0.0-0.conda": {"", `has no "subdir"`},
		"bad-pkgs/anaconda-client/foo-0.1-0.tar.bz2":        {"", `has no "subdir"`},
	}
	seen := 0
	for _, p := range corpus.Load(t, "bad") {
		t.Run(p.File, func(t *testing.T) {
			w, ok := want[p.File]
			if !ok {
				t.Fatalf("no decision recorded for %s (%s)", p.File, p.Note)
			}
			seen++
			name := w.name
			if name == "" {
				name = p.Name()
			}
			fn, err := condapkg.ParseFilename(name)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(p.Path())
			if err != nil {
				t.Fatal(err)
			}
			_, err = condapkg.Inspect(fn, bytes.NewReader(data), int64(len(data)), condapkg.DefaultLimits())
			if err == nil || !condapkg.IsInvalid(err) || !strings.Contains(err.Error(), w.reason) {
				t.Fatalf("Inspect error = %v, want a validation error containing %q", err, w.reason)
			}
			if strings.Contains(err.Error(), "\n") && !strings.Contains(w.reason, "\n") {
				t.Errorf("reason is not one line: %q", err)
			}
			_, err = scan(fn, data, 4096)
			if err == nil || !strings.Contains(err.Error(), w.reason) {
				t.Fatalf("Scanner error = %v, want one containing %q", err, w.reason)
			}
		})
	}
	if seen != len(want) {
		t.Errorf("checked %d bad files, have decisions for %d", seen, len(want))
	}
}

// TestScannerStopsEarly checks that an invalid .tar.bz2 is refused from its
// first bytes, and that a valid one stops being decoded once its info/
// section has been read: the scanner then takes any amount of payload.
func TestScannerStopsEarly(t *testing.T) {
	fn, _ := condapkg.ParseFilename("x-1-0.tar.bz2")
	s := condapkg.NewScanner(fn, condapkg.DefaultLimits())
	defer s.Close()
	_, err := s.Write(append([]byte{0x1f, 0x8b, 8, 0}, make([]byte, 4096)...))
	if err == nil || !strings.Contains(err.Error(), "gzip-compressed") {
		t.Fatalf("Write of gzip data: err = %v, want gzip-compressed", err)
	}

	data, err := os.ReadFile(corpus.Dir() + "/conda-pkgs/cph/mock-2.0.0-py37_1000.tar.bz2")
	if err != nil {
		t.Fatal(err)
	}
	fn, _ = condapkg.ParseFilename("mock-2.0.0-py37_1000.tar.bz2")
	s = condapkg.NewScanner(fn, condapkg.DefaultLimits())
	defer s.Close()
	if _, err := s.Write(data); err != nil {
		t.Fatal(err)
	}
	// Garbage after the stream is never decoded once info/ is done.
	for range 64 {
		if _, err := s.Write(make([]byte, 1<<20)); err != nil {
			t.Fatalf("Write after info/: %v", err)
		}
	}
	info, err := s.Finish(bytes.NewReader(data), int64(len(data)))
	if err != nil || info.Subdir != "osx-64" {
		t.Fatalf("Finish = %v, %v", info, err)
	}
}

// TestReadError checks that an I/O error reading a package is reported as
// such, not as an invalid package.
func TestReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	fn, _ := condapkg.ParseFilename("x-1-0.tar.bz2")
	_, err := condapkg.Inspect(fn, failingReaderAt{boom}, 1000, condapkg.DefaultLimits())
	if !errors.Is(err, boom) || condapkg.IsInvalid(err) {
		t.Fatalf("err = %v, want the read error", err)
	}
}

type failingReaderAt struct{ err error }

func (f failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, f.err }

var _ io.ReaderAt = failingReaderAt{}
