package condapkg_test

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// BenchmarkInspectLarge inspects 1 GiB packages of both formats, from disk
// and, for .tar.bz2, streamed through a Scanner as an upload is. The
// figure to read is time per package: it must not grow with the payload,
// because the payload is never decompressed.
func BenchmarkInspectLarge(b *testing.B) {
	testneed.Tool(b, "bzip2", "bzip2")
	const size = 1 << 30
	spec := pkgtest.Simple("big", "1.0", "0", "linux-64")
	dir := b.TempDir()
	for _, ext := range []string{".tar.bz2", ".conda"} {
		path := filepath.Join(dir, "big-1.0-0"+ext)
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		bw := bufio.NewWriterSize(f, 1<<20)
		if ext == ".conda" {
			pkgtest.LargeConda(b, spec, size, bw)
		} else {
			pkgtest.LargeTarBz2(b, spec, size, bw)
		}
		bw.Flush()
		f.Close()
		fn, _ := condapkg.ParseFilename(filepath.Base(path))
		fi, _ := os.Stat(path)
		b.Run("file"+ext, func(b *testing.B) {
			f, _ := os.Open(path)
			defer f.Close()
			for b.Loop() {
				info, err := condapkg.Inspect(fn, f, fi.Size(), condapkg.DefaultLimits())
				if err != nil || info.Subdir != "linux-64" {
					b.Fatal(info, err)
				}
			}
			b.ReportMetric(float64(fi.Size())/(1<<20), "MiB/pkg")
		})
		if ext != ".tar.bz2" {
			continue
		}
		b.Run("stream"+ext, func(b *testing.B) {
			f, _ := os.Open(path)
			defer f.Close()
			b.SetBytes(fi.Size())
			buf := make([]byte, 1<<20)
			for b.Loop() {
				s := condapkg.NewScanner(fn, condapkg.DefaultLimits())
				if _, err := io.CopyBuffer(s, io.NewSectionReader(f, 0, fi.Size()), buf); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Finish(f, fi.Size()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
