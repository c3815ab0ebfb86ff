package web

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/channel"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/stats"
)

// rss returns the process's resident set in bytes, after a collection
// that returns what it can to the system.
func rss(b *testing.B) float64 {
	runtime.GC()
	debug.FreeOSMemory()
	s, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(s))
	pages, _ := strconv.ParseFloat(f[1], 64)
	return pages * float64(os.Getpagesize())
}

// BenchmarkPagesAt100k serves the pages of a subdir of 100,000 packages
// (5,000 names of 20 versions, pkgtest.ScaleChannel) over loopback HTTP,
// with the plain repodata.json download of the same subdir as the
// baseline in the same run. It reports each one's p50 and the RSS the
// pages add over the indexer alone (its model, and what serving leaves).
// Targets (issue 27): p50 ≤ 50 ms per page, RSS growth ≤ 32 MiB.
func BenchmarkPagesAt100k(b *testing.B) {
	root := pkgtest.ScaleChannel(b, 100_000)
	x := repodata.New(root, condapkg.DefaultLimits(), slog.New(slog.DiscardHandler))
	if err := x.Run(context.Background(), "linux-64"); err != nil {
		b.Fatal(err)
	}
	ch, err := channel.Open(root, false)
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	sc, err := stats.Open(stats.Options{Dir: b.TempDir(), FlushEvery: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close()
	before := rss(b)
	ui, err := New(Options{Source: x, Stats: sc})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	ui.cat.get()
	b.Logf("model of 100,000 files built in %v", time.Since(start))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if Wants(r) {
			if err := ui.Serve(w, r, Access{}); err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
			}
			return
		}
		ch.Serve(w, r, strings.TrimPrefix(r.URL.Path, "/"))
	}))
	defer srv.Close()
	for _, tc := range []struct{ name, path string }{
		{"repodata.json", "/linux-64/repodata.json"},
		{"home", "/"},
		{"search", "/?q=pkg0249"},
		{"search-summary", "/?q=nothing-matches-this"},
		{"package", "/packages/pkg02500"},
		{"subdir", "/linux-64/?page=1000"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var times []time.Duration
			for b.Loop() {
				t0 := time.Now()
				req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
				req.Header.Set("Accept", "text/html")
				resp, err := srv.Client().Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || n == 0 {
					b.Fatalf("GET %s: %d, %d bytes", tc.path, resp.StatusCode, n)
				}
				times = append(times, time.Since(t0))
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
		})
	}
	b.Logf("RSS: %.1f MiB with the indexer alone, %.1f MiB more with the pages built and served",
		before/(1<<20), (rss(b)-before)/(1<<20))
}
