package server

import (
	"io"
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

// sendWriter sends a download body in pieces of sendPiece bytes: each
// waits for the pacer, small enough that an upload starting
// mid-download is felt at once, and then must be taken by the client
// within the send timeout.
type sendWriter struct {
	http.ResponseWriter
	p *pacer
	// rc sets the deadlines; timeout 0 sets none.
	rc      *http.ResponseController
	timeout time.Duration
	// sendfile says that the connection is plain HTTP/1.x, whose
	// ReadFrom sends a file without copying it.
	sendfile bool
}

// extend moves the send deadline to a timeout from now.
func (w *sendWriter) extend() {
	if w.timeout > 0 {
		w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	}
}

func (w *sendWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := min(len(b), sendPiece)
		w.p.wait(n)
		w.extend()
		m, err := w.ResponseWriter.Write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

// pieces holds the buffers that file bodies are copied through.
var pieces = sync.Pool{New: func() any { return new([sendPiece]byte) }}

// ReadFrom sends a file in pieces: through the server's ReadFrom (and so
// sendfile) on plain HTTP/1.x, else through Write with a pooled buffer,
// where io.Copy would allocate one per call.
func (w *sendWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok || !w.sendfile {
		buf := pieces.Get().(*[sendPiece]byte)
		defer pieces.Put(buf)
		return io.CopyBuffer(struct{ io.Writer }{w}, src, buf[:])
	}
	var total int64
	for {
		w.p.wait(sendPiece)
		w.extend()
		n, err := rf.ReadFrom(io.LimitReader(src, sendPiece))
		total += n
		if err != nil || n < sendPiece {
			return total, err
		}
	}
}

func (w *sendWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
