package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/conda-upload-server/conda-upload-server/internal/channel"
)

// The benchmarks measure the proxy against same-run baselines; run them
// once: go test ./internal/proxy -run '^$' -bench . -benchtime 1x

// randomFile writes size random bytes to path and returns their sha256.
func randomFile(b *testing.B, path string, size int64) string {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	r := rand.NewChaCha8([32]byte{7})
	if _, err := io.CopyN(io.MultiWriter(f, h), r, size); err != nil {
		b.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// syntheticUpstream serves a linux-64 whose repodata.json(.zst) lists
// files; every filename is served the bytes of data.
func syntheticUpstream(b *testing.B, data string, records func(w io.Writer)) *upstream {
	b.Helper()
	u := &upstream{root: b.TempDir()}
	dir := filepath.Join(u.root, "linux-64")
	os.MkdirAll(dir, 0o755)
	f, _ := os.Create(filepath.Join(dir, "repodata.json.zst"))
	zw, _ := zstd.NewWriter(f)
	bw := bufio.NewWriterSize(zw, 1<<20)
	bw.WriteString(`{"info":{"subdir":"linux-64"},"packages":{},"packages.conda":{`)
	records(bw)
	bw.WriteString(`},"repodata_version":1}`)
	bw.Flush()
	zw.Close()
	f.Close()
	u.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".conda") {
			http.ServeFile(w, r, data)
			return
		}
		http.FileServer(http.Dir(u.root)).ServeHTTP(w, r)
	}))
	b.Cleanup(u.srv.Close)
	return u
}

func writeRecord(w io.Writer, name string, i int, sum string, size int64) {
	fmt.Fprintf(w, `"%s-1.%d-h%08x_0.conda":{"build":"h%08x_0","build_number":0,"depends":["python >=3.10","numpy >=1.26","libgcc-ng >=12"],"license":"BSD-3-Clause","md5":"0123456789abcdef0123456789abcdef","name":"%s","sha256":"%s","size":%d,"subdir":"linux-64","timestamp":1700000000000,"version":"1.%d"}`,
		name, i%20, i, i, name, sum, size, i%20)
}

// peakRSS resets the process's peak RSS (VmHWM) and returns a function
// that reads it, in MiB.
func peakRSS(b *testing.B) func() float64 {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset the peak RSS: %v", err)
	}
	return func() float64 {
		s, _ := os.ReadFile("/proc/self/status")
		for line := range strings.Lines(string(s)) {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.Atoi(strings.Fields(v)[0])
				return float64(kb) / 1024
			}
		}
		return 0
	}
}

func download(b *testing.B, c *http.Client, url string) int64 {
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("%s: %d %v", url, resp.StatusCode, err)
	}
	return n
}

// BenchmarkPackage100MiB: a 100 MiB package fetched directly from the
// upstream, through the proxy on first fetch, from its cache, and from a
// local channel.
func BenchmarkPackage100MiB(b *testing.B) {
	const size = 100 << 20
	data := filepath.Join(b.TempDir(), "pkg-1.0-h00000000_0.conda")
	sum := randomFile(b, data, size)
	u := syntheticUpstream(b, data, func(w io.Writer) { writeRecord(w, "pkg", 0, sum, size) })
	fn := "pkg-1.0-h00000000_0.conda"
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			download(b, u.srv.Client(), u.srv.URL+"/linux-64/"+fn)
		}
	})
	f := newFrontB(b, u)
	b.Run("proxy-first", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			settle(f.p, "linux-64/"+fn)
			f.p.lru.purge()
			b.StartTimer()
			download(b, http.DefaultClient, f.srv.URL+"/linux-64/"+fn)
		}
	})
	b.Run("proxy-cached", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			download(b, http.DefaultClient, f.srv.URL+"/linux-64/"+fn)
		}
	})
	ch, err := channel.Open(filepath.Dir(data), false)
	if err != nil {
		b.Fatal(err)
	}
	os.MkdirAll(filepath.Join(filepath.Dir(data), "linux-64"), 0o755)
	os.Link(data, filepath.Join(filepath.Dir(data), "linux-64", fn))
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch.Serve(w, r, strings.TrimPrefix(r.URL.Path, "/"))
	}))
	defer local.Close()
	b.Run("local", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			download(b, http.DefaultClient, local.URL+"/linux-64/"+fn)
		}
	})
}

// settle waits for the fetch of key to end: the client has its last byte
// before the proxy has made the file durable, and a purge before then
// would leave the next request waiting on that fsync, or served from the
// cache, instead of measuring a first fetch.
func settle(p *Proxy, key string) {
	for p.flights.busy(key) {
		time.Sleep(time.Millisecond)
	}
}

func newFrontB(b *testing.B, u *upstream) *front {
	up := Upstream{Name: "cf", URL: u.srv.URL, Subdirs: []string{"linux-64"}, RootCAs: certPool(u.srv),
		IndexTTL: time.Hour, FetchTimeout: 10 * time.Minute, MaxIndexSize: 2 << 30}
	return startFrontB(b, up, b.TempDir())
}

// BenchmarkRefresh1M: refreshing and filtering a subdir of 1,000,000
// records, against downloading and decompressing its repodata.json.zst.
func BenchmarkRefresh1M(b *testing.B) {
	const n = 1_000_000
	u := syntheticUpstream(b, "/dev/null", func(w io.Writer) {
		for i := range n {
			if i > 0 {
				io.WriteString(w, ",")
			}
			writeRecord(w, fmt.Sprintf("pkg%05d", i/20), i, strings.Repeat("ab", 32), 1000+int64(i))
		}
	})
	fi, _ := os.Stat(filepath.Join(u.root, "linux-64", "repodata.json.zst"))
	b.Logf("repodata.json.zst: %d MiB", fi.Size()>>20)
	b.Run("download-decompress", func(b *testing.B) {
		for b.Loop() {
			resp, err := u.srv.Client().Get(u.srv.URL + "/linux-64/repodata.json.zst")
			if err != nil {
				b.Fatal(err)
			}
			zr, _ := zstd.NewReader(resp.Body, zstd.WithDecoderConcurrency(1))
			m, _ := io.Copy(io.Discard, zr)
			zr.Close()
			resp.Body.Close()
			b.ReportMetric(float64(m>>20), "MiB-json")
		}
	})
	for _, tc := range []struct {
		name    string
		include []string
	}{{"refresh-filter-1pct", []string{"pkg00[0-4]*"}}, {"refresh-all", nil}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				up := Upstream{Name: "cf", URL: u.srv.URL, Subdirs: []string{"linux-64"}, RootCAs: certPool(u.srv),
					IndexTTL: time.Hour, FetchTimeout: 10 * time.Minute, MaxIndexSize: 2 << 30, Include: tc.include}
				f := startFrontB(b, up, b.TempDir())
				peak := peakRSS(b)
				b.StartTimer()
				download(b, http.DefaultClient, f.srv.URL+"/linux-64/repodata.json")
				b.ReportMetric(peak(), "peak-RSS-MiB")
			}
		})
	}
}

// BenchmarkConcurrent1GiB: peak RSS while 8 clients each fetch a 1 GiB
// package no one fetched before.
func BenchmarkConcurrent1GiB(b *testing.B) {
	const size, clients = 1 << 30, 8
	data := filepath.Join(b.TempDir(), "data")
	sum := randomFile(b, data, size)
	u := syntheticUpstream(b, data, func(w io.Writer) {
		for i := range clients {
			if i > 0 {
				io.WriteString(w, ",")
			}
			writeRecord(w, fmt.Sprintf("big%d", i), i, sum, size)
		}
	})
	f := newFrontB(b, u)
	download(b, http.DefaultClient, f.srv.URL+"/linux-64/repodata.json")
	b.SetBytes(size * clients)
	for b.Loop() {
		b.StopTimer()
		f.p.lru.purge()
		peak := peakRSS(b)
		b.StartTimer()
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				download(b, http.DefaultClient, fmt.Sprintf("%s/linux-64/big%d-1.%d-h%08x_0.conda", f.srv.URL, i, i%20, i))
			})
		}
		wg.Wait()
		b.ReportMetric(peak(), "peak-RSS-MiB")
	}
}
