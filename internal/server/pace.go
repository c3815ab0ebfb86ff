package server

import (
	"net/http"
	"sync"
	"time"
)

// pacer shares a byte rate among all download bodies, but only while an
// upload is in flight. On a small host, TLS for a few fast downloads
// takes every core, and an upload, which must hash and sync what it
// receives, would slow to a fraction of its speed; uploads are what CI
// jobs wait on, so while one runs, downloads yield. With no upload in
// flight, downloads are not limited at all.
type pacer struct {
	rate   float64 // bytes per second; 0 paces nothing
	active func() bool
	// now and sleep are the clock (time.Now and time.Sleep if nil).
	now   func() time.Time
	sleep func(time.Duration)

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// burst is how far a download may run ahead of the rate.
const burst = 256 << 10

// wait blocks until n bytes may be sent.
func (p *pacer) wait(n int) {
	if p == nil || p.rate <= 0 || !p.active() {
		return
	}
	p.mu.Lock()
	now := time.Now()
	if p.now != nil {
		now = p.now()
	}
	if p.last.IsZero() {
		p.tokens, p.last = burst, now
	}
	p.tokens = min(burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
	p.last = now
	p.tokens -= float64(n)
	var sleep time.Duration
	if p.tokens < 0 {
		sleep = time.Duration(-p.tokens / p.rate * float64(time.Second))
	}
	p.mu.Unlock()
	if sleep <= 0 {
		return
	}
	if p.sleep != nil {
		p.sleep(sleep)
	} else {
		time.Sleep(sleep)
	}
}

// pacedWriter sends a download body through the pacer, in pieces small
// enough that an upload starting mid-download is felt at once. It has no
// ReadFrom, so that io.Copy goes through Write.
type pacedWriter struct {
	http.ResponseWriter
	p *pacer
}

func (w pacedWriter) Write(b []byte) (int, error) {
	const piece = 32 << 10
	written := 0
	for len(b) > 0 {
		n := min(len(b), piece)
		w.p.wait(n)
		m, err := w.ResponseWriter.Write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

func (w pacedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
