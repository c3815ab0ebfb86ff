package repodata_test

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
)

// indexedScaleChannel returns a ScaleChannel of n packages whose index
// (and cache) is up to date, and a Writer that has run over it.
func indexedScaleChannel(b *testing.B, n int) (string, *repodata.Writer) {
	b.Helper()
	root := pkgtest.ScaleChannel(b, n)
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	if err := x.Run(context.Background(), "linux-64"); err != nil {
		b.Fatal(err)
	}
	return root, x
}

// reportSizes reports the bytes of repodata.json, its .zst and all shards.
func reportSizes(b *testing.B, dir string) {
	b.Helper()
	size := func(f string) float64 {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			return 0
		}
		return float64(fi.Size())
	}
	b.ReportMetric(size("repodata.json"), "repodata-B")
	b.ReportMetric(size("repodata.json.zst"), "zst-B")
	b.ReportMetric(size(repodata.ShardIndexFile), "shardindex-B")
	// The shards the index names (others wait out their retention).
	var shards float64
	for _, sum := range decodeShardIndex(b, dir)["shards"].(map[string]any) {
		shards += size(hex.EncodeToString(sum.([]byte)) + ".msgpack.zst")
	}
	b.ReportMetric(shards, "shards-B")
}

// BenchmarkAddOne measures what the server does after storing a package in
// a subdir that already holds n: note its record, then a run that writes
// every index file (repodata.json and .zst, its shard and the shard index,
// run_exports.json and .zst).
func BenchmarkAddOne(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			root, x := indexedScaleChannel(b, n)
			dir := filepath.Join(root, "linux-64")
			ctx := context.Background()
			pb := pkgtest.NewBuilder(b)
			defer pb.Close()
			var added []string
			defer func() {
				for _, p := range added {
					os.Remove(p)
				}
				x.Run(ctx, "linux-64") // leave the shared channel as it was
			}()
			i := n
			var times []time.Duration
			for b.Loop() {
				b.StopTimer()
				s := pkgtest.ScaleSpec(i)
				i++
				data := pb.Conda(b, s)
				path := filepath.Join(dir, s.Stem()+".conda")
				os.WriteFile(path, data, 0o644)
				added = append(added, path)
				fi, _ := os.Stat(path)
				m, sh := md5.Sum(data), sha256.Sum256(data)
				b.StartTimer()
				start := time.Now()
				err := x.NotePackage(index.Package{Subdir: "linux-64", Filename: s.Stem() + ".conda", Info: fi,
					IndexJSON: s.IndexJSON(), RunExports: s.Info[len(s.Info)-1].Data,
					Size: fi.Size(), MD5: hex.EncodeToString(m[:]), SHA256: hex.EncodeToString(sh[:])})
				if err != nil {
					b.Fatal(err)
				}
				if err := x.Run(ctx, "linux-64"); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(start))
			}
			b.StopTimer()
			reportSizes(b, dir)
			reportP50(b, times)
		})
	}
}

// reportP50 reports the median of the measured times, which is what the
// targets name: on a shared machine the mean follows the outliers.
func reportP50(b *testing.B, times []time.Duration) {
	if len(times) == 0 {
		return
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
}

// BenchmarkStartRebuild measures the first run of a new process over a
// subdir of 100,000 packages whose cache is up to date: load the cache,
// check every file against it, encode every shard, and write every index
// file.
func BenchmarkStartRebuild(b *testing.B) {
	const n = 100000
	root, _ := indexedScaleChannel(b, n)
	for b.Loop() {
		x := repodata.New(root, condapkg.DefaultLimits(), quiet())
		if err := x.Run(context.Background(), "linux-64"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRebuild10000 indexes a subdir of 10,000 packages with no cache,
// as after the cache was lost: every package is read and hashed again.
func BenchmarkRebuild10000(b *testing.B) {
	root, _ := indexedScaleChannel(b, 10000)
	for b.Loop() {
		os.RemoveAll(filepath.Join(root, "linux-64", repodata.CacheDir))
		x := repodata.New(root, condapkg.DefaultLimits(), quiet())
		if err := x.Run(context.Background(), "linux-64"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkZstdLevel compresses the repodata.json of 100,000 packages at
// each of the encoder's levels, to choose one: it reports the ratio, and
// the time per run is what each run pays.
func BenchmarkZstdLevel(b *testing.B) {
	root, _ := indexedScaleChannel(b, 100000)
	data, err := os.ReadFile(filepath.Join(root, "linux-64", "repodata.json"))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression} {
		b.Run(l.String(), func(b *testing.B) {
			enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(l), zstd.WithEncoderConcurrency(2))
			defer enc.Close()
			var out []byte
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				out = enc.EncodeAll(data, out[:0])
			}
			b.ReportMetric(float64(len(data))/float64(len(out)), "ratio")
		})
	}
}
