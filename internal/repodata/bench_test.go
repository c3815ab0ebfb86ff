package repodata_test

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
)

// fill writes n small valid packages into root/linux-64.
func fill(b *testing.B, root string, n int) {
	b.Helper()
	dir := filepath.Join(root, "linux-64")
	os.MkdirAll(dir, 0o755)
	for i := range n {
		s := pkgtest.Simple(fmt.Sprintf("pkg%05d", i), "1.0", "0", "linux-64")
		s.Index = map[string]any{"depends": []string{"python >=3.10", "numpy >=1.26", "libgcc-ng >=12"}}
		if err := os.WriteFile(filepath.Join(dir, s.Stem()+".conda"), pkgtest.Conda(b, s), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddOne measures what the server does after storing a package in
// a subdir that already holds n: prime the record, update the subdir.
func BenchmarkAddOne(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			root := b.TempDir()
			fill(b, root, n)
			x := repodata.New(root, condapkg.DefaultLimits(), quiet())
			ctx := context.Background()
			if err := x.Run(ctx, "linux-64"); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				b.StopTimer()
				s := pkgtest.Simple("new", "1.0", fmt.Sprint(i), "linux-64")
				i++
				data := pkgtest.Conda(b, s)
				path := filepath.Join(root, "linux-64", s.Stem()+".conda")
				os.WriteFile(path, data, 0o644)
				fi, _ := os.Stat(path)
				m, sh := md5.Sum(data), sha256.Sum256(data)
				b.StartTimer()
				err := x.NotePackage(index.Package{Subdir: "linux-64", Filename: s.Stem() + ".conda", Info: fi,
					IndexJSON: s.IndexJSON(), Size: fi.Size(), MD5: hex.EncodeToString(m[:]), SHA256: hex.EncodeToString(sh[:])})
				if err != nil {
					b.Fatal(err)
				}
				if err := x.Run(ctx, "linux-64"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRebuild10000 indexes a subdir of 10,000 packages with no cache,
// as after the cache was lost.
func BenchmarkRebuild10000(b *testing.B) {
	root := b.TempDir()
	fill(b, root, 10000)
	for b.Loop() {
		os.RemoveAll(filepath.Join(root, "linux-64", repodata.CacheDir))
		x := repodata.New(root, condapkg.DefaultLimits(), quiet())
		if err := x.Run(context.Background(), "linux-64"); err != nil {
			b.Fatal(err)
		}
	}
}
