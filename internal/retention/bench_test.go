package retention_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/retention"
)

// BenchmarkPass100k measures a retention pass over a label subdir of
// 100,000 packages (5,000 names of 20 versions, pkgtest.ScaleChannel):
// the plan, which is what a pass after an index run costs when nothing is
// due (keep_last = 20) and when three quarters are due (keep_last = 5;
// the deletes themselves are the admin API's, one file each). Next to it,
// as the baseline of the same run, the index run that follows one
// removal from that subdir with the built-in indexer.
func BenchmarkPass100k(b *testing.B) {
	const n = 100000
	shared := pkgtest.ScaleChannel(b, n)
	// A hard-linked copy, with the indexer's cache: the shared channel
	// is left as it is for other benchmarks.
	root := b.TempDir()
	if out, err := exec.Command("cp", "-al", filepath.Join(shared, "linux-64"), root).CombinedOutput(); err != nil {
		b.Fatalf("copy: %v %s", err, out)
	}
	x := repodata.New(root, condapkg.DefaultLimits(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	if err := x.Run(ctx, "linux-64"); err != nil {
		b.Fatal(err)
	}
	for _, keep := range []int{20, 5} {
		b.Run("plan-keep"+map[int]string{20: "20", 5: "5"}[keep], func(b *testing.B) {
			p := retention.New(retention.Options{Root: root, Subdirs: []string{"linux-64"},
				Rules: retention.Rules{{Label: "main", KeepLast: keep}}})
			var removed int
			b.ReportAllocs()
			for b.Loop() {
				rs, err := p.Plan("linux-64")
				if err != nil {
					b.Fatal(err)
				}
				removed = len(rs)
			}
			b.ReportMetric(float64(removed), "removals")
		})
	}
	b.Run("index-run-after-one-removal", func(b *testing.B) {
		dir := filepath.Join(root, "linux-64")
		des, _ := os.ReadDir(dir)
		var victim string
		for _, de := range des {
			if filepath.Ext(de.Name()) == ".conda" {
				victim = de.Name()
				break
			}
		}
		aside := filepath.Join(root, victim)
		b.ReportAllocs()
		var total time.Duration
		for b.Loop() {
			b.StopTimer()
			os.Rename(filepath.Join(dir, victim), aside)
			b.StartTimer()
			start := time.Now()
			if err := x.Run(ctx, "linux-64"); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			b.StopTimer()
			os.Rename(aside, filepath.Join(dir, victim))
			if err := x.Run(ctx, "linux-64"); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}
