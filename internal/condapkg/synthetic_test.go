package condapkg_test

import (
	"archive/tar"
	"bytes"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// TestSynthetic covers hostile and malformed packages that the real corpus
// lacks. Each is judged both from a file and while streaming.
func TestSynthetic(t *testing.T) {
	testneed.Tool(t, "bzip2", "bzip2")
	good := pkgtest.Simple("demo", "1.0", "0", "linux-64")
	small := condapkg.DefaultLimits()
	small.MaxScanBytes = 1 << 20
	tests := []struct {
		name   string
		file   string // filename to inspect under
		build  func(t testing.TB) []byte
		lim    *condapkg.Limits
		reason string // "" means valid
	}{
		{"valid tar.bz2", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte { return pkgtest.TarBz2(t, good) }, nil, ""},
		{"valid conda", "demo-1.0-0.conda", func(t testing.TB) []byte { return pkgtest.Conda(t, good) }, nil, ""},
		{"name mismatch", "other-1.0-0.conda", func(t testing.TB) []byte {
			s := good
			s.Name = "other"
			s.Index = map[string]any{"name": "demo"}
			return pkgtest.Conda(t, s)
		}, nil, `filename says name "other" but info/index.json says "demo"`},
		{"version mismatch", "demo-2.0-0.tar.bz2", func(t testing.TB) []byte {
			s := good
			s.Version = "2.0"
			s.Index = map[string]any{"version": "1.0"}
			return pkgtest.TarBz2(t, s)
		}, nil, `filename says version "2.0"`},
		{"build mismatch", "demo-1.0-1.conda", func(t testing.TB) []byte {
			s := good
			s.Build = "1"
			s.Index = map[string]any{"build": "0"}
			return pkgtest.Conda(t, s)
		}, nil, `filename says build "1"`},
		{"subdir traversal", "demo-1.0-0.conda", func(t testing.TB) []byte {
			s := good
			s.Subdir = "../../etc"
			return pkgtest.Conda(t, s)
		}, nil, `subdir "../../etc" in info/index.json is not an allowed platform subdir`},
		{"subdir dotdot suffix", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte {
			s := good
			s.Subdir = "linux-64/../.."
			return pkgtest.TarBz2(t, s)
		}, nil, `subdir "linux-64/../.."`},
		{"subdir not a string", "demo-1.0-0.conda", func(t testing.TB) []byte {
			s := good
			s.Index = map[string]any{"subdir": 64}
			return pkgtest.Conda(t, s)
		}, nil, `"subdir" is not a string`},
		{"index not an object", "demo-1.0-0.conda", func(t testing.TB) []byte {
			s := good
			s.RawIndex = []byte(`["demo"]`)
			return pkgtest.Conda(t, s)
		}, nil, "is not a JSON object"},
		{"index not JSON", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte {
			s := good
			s.RawIndex = []byte(`{"name": "demo",`)
			return pkgtest.TarBz2(t, s)
		}, nil, "is not a JSON object"},
		{"index too large", "demo-1.0-0.conda", func(t testing.TB) []byte {
			s := good
			s.Index = map[string]any{"pad": strings.Repeat("x", 2<<20)}
			return pkgtest.Conda(t, s)
		}, nil, "info/index.json is 2097", // ... bytes, over the limit
		},
		{"paths.json malformed", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte {
			s := good
			s.Info = []pkgtest.Member{{Name: "info/paths.json", Data: []byte(`{"paths": [`)}}
			return pkgtest.TarBz2(t, s)
		}, nil, "info/paths.json is not valid JSON"},
		{"paths.json trailing data", "demo-1.0-0.conda", func(t testing.TB) []byte {
			s := good
			s.Info = []pkgtest.Member{{Name: "info/paths.json", Data: []byte(`{} {}`)}}
			return pkgtest.Conda(t, s)
		}, nil, "info/paths.json is not valid JSON: trailing data"},
		{"index.json symlink", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte {
			return pkgtest.Bzip2(t, pkgtest.Tar(t, pkgtest.Member{Name: "info/index.json", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}))
		}, nil, "info/index.json is not a regular file"},
		{"index.json hardlink", "demo-1.0-0.conda", func(t testing.TB) []byte {
			s := good
			s.OmitIndex = true
			s.Info = []pkgtest.Member{{Name: "info/index.json", Typeflag: tar.TypeLink, Linkname: "info/other"}}
			return pkgtest.Conda(t, s)
		}, nil, "info/index.json is not a regular file"},
		{"duplicate index.json", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte {
			s := good
			s.Info = []pkgtest.Member{{Name: "info/index.json", Data: s.IndexJSON()}}
			return pkgtest.TarBz2(t, s)
		}, nil, "duplicate info/index.json"},
		{"payload before info", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte {
			// Still valid: found within the scan limit.
			return pkgtest.Bzip2(t, pkgtest.Tar(t, pkgtest.Member{Name: "lib/a", Data: []byte("a")}, pkgtest.Member{Name: "info/index.json", Data: good.IndexJSON()}))
		}, nil, ""},
		{"bzip2 bomb before info", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte {
			return pkgtest.Bzip2(t, pkgtest.Tar(t, pkgtest.Member{Name: "lib/zeros", Data: make([]byte, 8<<20)}, pkgtest.Member{Name: "info/index.json", Data: good.IndexJSON()}))
		}, &small, "no info/index.json within the first 1048576 decompressed bytes"},
		{"zstd bomb in info", "demo-1.0-0.conda", func(t testing.TB) []byte {
			s := good
			s.Info = []pkgtest.Member{{Name: "info/zeros", Data: make([]byte, 8<<20)}}
			s.OmitIndex = true
			return pkgtest.Conda(t, s)
		}, &small, "within the first 1048576 decompressed bytes"},
		{"too many members", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte {
			var ms []pkgtest.Member
			for range 200 {
				ms = append(ms, pkgtest.Member{Name: "lib/f", Data: nil})
			}
			return pkgtest.Bzip2(t, pkgtest.Tar(t, ms...))
		}, &condapkg.Limits{MaxScanBytes: 1 << 30, MaxMembers: 100, MaxIndexJSON: 1 << 20, MaxPathsJSON: 1 << 20}, "no info/index.json within the first 100 members"},
		{"truncated tar.bz2", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte {
			b := pkgtest.TarBz2(t, good)
			return b[:len(b)/2]
		}, nil, "demo-1.0-0.tar.bz2: "},
		{"truncated conda", "demo-1.0-0.conda", func(t testing.TB) []byte {
			b := pkgtest.Conda(t, good)
			return b[:len(b)-30]
		}, nil, "corrupt zip archive"},
		{"duplicate zip entry", "demo-1.0-0.conda", func(t testing.TB) []byte {
			e := pkgtest.CondaEntries(t, good)
			return pkgtest.Zip(t, append(e, e[2])...)
		}, nil, `duplicate zip entry "info-demo-1.0-0.tar.zst"`},
		{"zip entry with path", "demo-1.0-0.conda", func(t testing.TB) []byte {
			e := pkgtest.CondaEntries(t, good)
			return pkgtest.Zip(t, append(e, pkgtest.ZipEntry{Name: "../../evil", Data: []byte("x")})...)
		}, nil, `unexpected zip entry "../../evil"`},
		{"inner name differs", "demo-1.0-0.conda", func(t testing.TB) []byte {
			s := good
			s.Build = "1"
			e := pkgtest.CondaEntries(t, s)
			return pkgtest.Zip(t, e...)
		}, nil, `unexpected zip entry "pkg-demo-1.0-1.tar.zst"`},
		{"conda info not zstd", "demo-1.0-0.conda", func(t testing.TB) []byte {
			e := pkgtest.CondaEntries(t, good)
			e[2].Data = pkgtest.Tar(t, pkgtest.Member{Name: "info/index.json", Data: good.IndexJSON()})
			return pkgtest.Zip(t, e...)
		}, nil, "corrupt archive"},
		{"gzip under tar.bz2", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte {
			return []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0}
		}, nil, "not bzip2-compressed: gzip-compressed"},
		{"git lfs pointer", "demo-1.0-0.conda", func(t testing.TB) []byte {
			return []byte("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
		}, nil, "a Git LFS pointer"},
		{"tar.bz2 under conda", "demo-1.0-0.conda", func(t testing.TB) []byte { return pkgtest.TarBz2(t, good) }, nil, "not a zip archive: bzip2-compressed"},
		{"conda under tar.bz2", "demo-1.0-0.tar.bz2", func(t testing.TB) []byte { return pkgtest.Conda(t, good) }, nil, "not bzip2-compressed: a zip archive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fn, err := condapkg.ParseFilename(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			lim := condapkg.DefaultLimits()
			if tt.lim != nil {
				lim = *tt.lim
			}
			data := tt.build(t)
			check := func(how string, info *condapkg.Info, err error) {
				t.Helper()
				if tt.reason == "" {
					if err != nil {
						t.Fatalf("%s: %v", how, err)
					}
					if info.Subdir != "linux-64" {
						t.Errorf("%s: subdir %q", how, info.Subdir)
					}
					return
				}
				if err == nil || !condapkg.IsInvalid(err) || !strings.Contains(err.Error(), tt.reason) {
					t.Fatalf("%s: err = %v, want a validation error containing %q", how, err, tt.reason)
				}
			}
			info, err := condapkg.Inspect(fn, bytes.NewReader(data), int64(len(data)), lim)
			check("Inspect", info, err)

			s := condapkg.NewScanner(fn, lim)
			defer s.Close()
			_, err = s.Write(data)
			if err == nil {
				info, err = s.Finish(bytes.NewReader(data), int64(len(data)))
			}
			check("Scanner", info, err)
		})
	}
}
