package mirror_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/mirror"
	"github.com/conda-upload-server/conda-upload-server/internal/s3test"
)

// BenchmarkBurstLag adds, indexes and marks 100 packages one after
// another, as a burst of uploads does, with the mirror running, and
// reports how long each waited until the bucket held it: p50 and max.
func BenchmarkBurstLag(b *testing.B) {
	g := s3test.Start(b, bucket)
	for range b.N {
		c := newChannel(b)
		m, err := mirror.New(config(g), c.root, quiet())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { m.Run(ctx, time.Hour); close(done) }()
		type pending struct {
			fn    string
			start time.Time
		}
		var all []pending
		for i := range 100 {
			fn := c.add(b, fmt.Sprintf("lag%d", i%10), fmt.Sprintf("1.%d", i))
			c.index(b, "linux-64")
			all = append(all, pending{fn, time.Now()})
			m.Mark("linux-64")
		}
		lags := make([]time.Duration, len(all))
		left := len(all)
		for deadline := time.Now().Add(2 * time.Minute); left > 0; time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("the mirror did not catch up")
			}
			for i, p := range all {
				if lags[i] == 0 && m.Has("linux-64", p.fn) {
					lags[i] = time.Since(p.start)
					left--
				}
			}
		}
		cancel()
		<-done
		slices.Sort(lags)
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "max-ms")
	}
}

// BenchmarkLargePackage syncs one 1 GiB package (hashed, then uploaded
// with its sha256) to the bucket on loopback, and reports the rate; the
// baseline, in the same run, is a plain copy of the file on the same
// disk, the ceiling of any upload that ends on it.
func BenchmarkLargePackage(b *testing.B) {
	g := s3test.Start(b, bucket)
	c := newChannel(b)
	dir := filepath.Join(c.root, "linux-64")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	const size = 1 << 30
	f, err := os.Create(filepath.Join(dir, "big-1.0-0.conda"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	b.Run("disk-copy", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			src, err := os.Open(filepath.Join(dir, "big-1.0-0.conda"))
			if err != nil {
				b.Fatal(err)
			}
			dst, err := os.Create(filepath.Join(g.Dir, "copy"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(dst, src); err != nil {
				b.Fatal(err)
			}
			dst.Sync()
			dst.Close()
			src.Close()
			os.Remove(dst.Name())
		}
	})
	b.Run("sync", func(b *testing.B) { syncLarge(b, g, c) })
}

func syncLarge(b *testing.B, g *s3test.Gateway, c *channelEnv) {
	const size = 1 << 30
	b.SetBytes(size)
	for range b.N {
		b.StopTimer()
		os.RemoveAll(filepath.Join(g.Dir, bucket, "ch"))
		os.Remove(filepath.Join(c.root, mirror.StateDir, "state.json"))
		m, err := mirror.New(config(g), c.root, quiet())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := m.Sync(context.Background(), "linux-64"); err != nil {
			b.Fatal(err)
		}
	}
}
