package stats

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// BenchmarkDownload measures the download path: GETs of a 100 KiB
// package over loopback HTTP, with no counting (the baseline), and with
// each one counted and flushed to the log every 50 ms (far more often
// than the default, to make the flush's share visible). Compare the
// two in one run; the ratio is what counting costs.
//
// The choice of store was made with this benchmark and BenchmarkFlush,
// against go.etcd.io/bbolt in a scratch module (BENCHMARKS.md).
func BenchmarkDownload(b *testing.B) {
	body := make([]byte, 100<<10)
	files := make([]string, 1000)
	for i := range files {
		files[i] = fmt.Sprintf("/linux-64/pkg%d-1.0-0.conda", i)
	}
	run := func(b *testing.B, c *Counter) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write(body)
			if file, ok := Countable(strings.TrimPrefix(r.URL.Path, "/")); ok && c != nil {
				c.Record(file, r.RemoteAddr, false, time.Now())
			}
		}))
		defer srv.Close()
		cl := srv.Client()
		var i int
		for b.Loop() {
			i++
			resp, err := cl.Get(srv.URL + files[i%len(files)])
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	b.Run("baseline", func(b *testing.B) { run(b, nil) })
	b.Run("counted", func(b *testing.B) {
		c, err := Open(Options{Dir: b.TempDir(), FlushEvery: 50 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		run(b, c)
	})
}

// BenchmarkFlush measures one flush of 1,000 distinct files' counts.
func BenchmarkFlush(b *testing.B) {
	c, err := Open(Options{Dir: b.TempDir(), FlushEvery: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	now := time.Now()
	for b.Loop() {
		for i := range 1000 {
			c.Record(fmt.Sprintf("linux-64/pkg%d-1.0-0.conda", i*7), "a", false, now)
		}
		if err := c.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}
