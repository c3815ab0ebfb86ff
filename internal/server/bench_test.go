package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// BenchmarkUpload measures one upload end to end through the real handler
// behind TLS on loopback: multipart parsing, hashing, inspection, publish
// (fsync, link) and the built-in index run. Profile it with -cpuprofile
// to see what bounds the upload rate.
func BenchmarkUpload(b *testing.B) {
	for _, size := range []int64{1 << 20, 100 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			e := start(b, func(o *server.Options) { o.Limits.MaxUploadSize = 1 << 30 })
			// One body for every round, built before the clock (and
			// the profile) start; the stored copy is removed between
			// rounds, so that each upload is a new package.
			var pkg bytes.Buffer
			pkgtest.LargeConda(b, pkgtest.Simple("bench", "1.0", "0", "linux-64"), size, &pkg)
			ct, body := form(part{name: "token", data: []byte(token)}, part{name: "artifact", filename: "bench-1.0-0.conda", data: pkg.Bytes()})
			stored := filepath.Join(e.root, "linux-64", "bench-1.0-0.conda")
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				os.Remove(stored)
				req, _ := http.NewRequest(http.MethodPost, e.url, bytes.NewReader(body))
				req.Header.Set("Content-Type", ct)
				b.StartTimer()
				resp, err := e.client.Do(req)
				if err != nil || resp.StatusCode != 201 {
					b.Fatalf("%v %v", resp, err)
				}
				resp.Body.Close()
			}
		})
	}
}

// BenchmarkUploadIndexed measures what a CI job waits for: one small
// package uploaded over TLS into a subdir that already holds n packages,
// until the response says "indexed", with every index file rewritten
// (repodata.json and .zst, shards and their index, run_exports.json).
func BenchmarkUploadIndexed(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			root := pkgtest.ScaleChannel(b, n)
			e := startAt(b, root, 0)
			// startAt indexes noarch only: index linux-64 before timing.
			if err := e.ix.Index(context.Background(), "linux-64"); err != nil {
				b.Fatal(err)
			}
			pb := pkgtest.NewBuilder(b)
			defer pb.Close()
			var added []string
			defer func() {
				for _, p := range added {
					os.Remove(p)
				}
				e.ix.Index(context.Background(), "linux-64") // leave the shared channel as it was
			}()
			var times []time.Duration
			i := n
			for b.Loop() {
				b.StopTimer()
				s := pkgtest.ScaleSpec(i)
				i++
				ct, body := form(part{name: "token", data: []byte(token)}, part{name: "artifact", filename: s.Stem() + ".conda", data: pb.Conda(b, s)})
				added = append(added, filepath.Join(root, "linux-64", s.Stem()+".conda"))
				req, _ := http.NewRequest(http.MethodPost, e.url, bytes.NewReader(body))
				req.Header.Set("Content-Type", ct)
				b.StartTimer()
				start := time.Now()
				resp, err := e.client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				var res struct{ Indexed bool }
				json.NewDecoder(resp.Body).Decode(&res)
				resp.Body.Close()
				if resp.StatusCode != 201 || !res.Indexed {
					b.Fatalf("status %d, indexed %v", resp.StatusCode, res.Indexed)
				}
				times = append(times, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
		})
	}
}
