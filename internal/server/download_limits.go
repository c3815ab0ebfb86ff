package server

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// DownloadLimits bound what downloads may hold. A client can ask for a
// file on many HTTP/2 streams at once and never read: each such request
// held a handler, an open file and its buffers until the client went
// away, so 80 connections of 250 streams took every file descriptor and
// about 930 MiB. With these limits, a download holds its slot only while
// the client keeps taking its bytes, and the slots are bounded in total
// and per connection; past the bound a download is refused at once with
// 503 and Retry-After. The zero value bounds nothing.
type DownloadLimits struct {
	// MaxConcurrent is how many downloads (files, index files and
	// listings) may be in flight at once; each holds one open file at
	// most. 0: no bound.
	MaxConcurrent int
	// MaxPerConnection is how many of them one connection (its HTTP/2
	// streams) may have in flight. 0: no bound.
	MaxPerConnection int
	// SendTimeout is how long a client may take to accept each piece of
	// a download (sendPiece bytes) or all of a shorter answer, refusals
	// included; past it the HTTP/2 stream is reset or the HTTP/1.1
	// connection closed, and the download's slot and file are released.
	// It is a minimum rate of sendPiece per SendTimeout. 0: no deadline.
	SendTimeout time.Duration
}

// sendPiece is the most a download writes under one deadline (and the
// most the pacer lets through at once).
const sendPiece = 32 << 10

var (
	errDownloadsBusy = &Error{Status: http.StatusServiceUnavailable, Reason: "unavailable",
		Msg: "too many downloads in progress; retry later", RetryAfter: 5 * time.Second}
	errConnDownloadsBusy = &Error{Status: http.StatusServiceUnavailable, Reason: "unavailable",
		Msg: "too many downloads in progress on this connection; retry later", RetryAfter: 5 * time.Second}
)

// downloadSlots counts answers in flight, in total and per connection (by
// remote address and port, which name one TCP connection).
type downloadSlots struct {
	limits DownloadLimits
	// firstFree gives a connection with nothing in flight a slot even
	// past the total: a client that reads what it asked for is never
	// refused because others do not; the total is then at most
	// MaxConcurrent plus one per connection.
	firstFree bool
	mu        sync.Mutex
	total     int
	conns     map[string]int
}

// take reserves a slot for a download on conn, and returns its release.
func (d *downloadSlots) take(conn string) (release func(), err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.limits.MaxConcurrent > 0 && d.total >= d.limits.MaxConcurrent && !(d.firstFree && d.conns[conn] == 0):
		return nil, errDownloadsBusy
	case d.limits.MaxPerConnection > 0 && d.conns[conn] >= d.limits.MaxPerConnection:
		return nil, errConnDownloadsBusy
	}
	d.total++
	d.conns[conn]++
	return func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.total--
		if d.conns[conn]--; d.conns[conn] == 0 {
			delete(d.conns, conn)
		}
	}, nil
}

// sendState is what the download path tells bounded about a request:
// the slot its answer holds until it is out.
type sendState struct {
	release func()
}

type sendStateKey struct{}

// bounded puts a bound on every answer's last bytes. A handler's last
// bytes (a small file, a JSON answer or refusal) go out only after it
// returns; over HTTP/2, a client that opens streams and never reads
// would hold each stream's goroutine and buffers for good, on any route.
// So over HTTP/2 the answer is flushed here, under the send timeout,
// holding a slot: the download's own, or one of the answers finishing,
// bounded in total and per connection like downloads. With none free,
// the stream is reset at once (RST_STREAM) rather than left to wait,
// unless it answers a change that succeeded (an upload stored, say),
// which the client must learn of and which only a token can make.
//
// Over HTTP/1.1 a connection has one answer at a time, bounded by
// max_connections, and the kernel takes its last bytes; a download's
// deadline, which is the connection's, stays until the next request on
// the connection lifts it.
func (s *Server) bounded(next http.Handler) http.Handler {
	timeout := s.o.Limits.Downloads.SendTimeout
	if timeout <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.ProtoMajor == 1 {
			rc.SetWriteDeadline(time.Time{})
		}
		st := &sendState{}
		sw := &recorder{ResponseWriter: w} // for the status
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), sendStateKey{}, st)))
		if r.ProtoMajor == 1 {
			if st.release != nil {
				st.release()
			}
			return
		}
		if st.release == nil {
			release, err := s.finishing.take(r.RemoteAddr)
			safe := r.Method == http.MethodGet || r.Method == http.MethodHead
			switch {
			case err != nil && (safe || sw.status >= 400):
				panic(http.ErrAbortHandler)
			case err != nil:
				release = func() {}
			}
			st.release = release
		}
		defer st.release()
		rc.SetWriteDeadline(time.Now().Add(timeout))
		rc.Flush()
	})
}

// startDownload puts a download under the limits: its answer, whatever
// it is, under a send deadline; a slot, or a 503; and its body through
// the pacer in pieces, each under a deadline of its own. The slot is
// released by bounded once the answer is out, or by the returned
// release if the server has no send timeout.
func (s *Server) startDownload(w http.ResponseWriter, r *http.Request) (_ http.ResponseWriter, release func(), err error) {
	sw := &sendWriter{ResponseWriter: w, p: s.pace, timeout: s.o.Limits.Downloads.SendTimeout,
		sendfile: r.TLS == nil && r.ProtoMajor == 1}
	st, ok := r.Context().Value(sendStateKey{}).(*sendState)
	if ok && sw.timeout > 0 {
		sw.rc = http.NewResponseController(w)
		sw.extend()
	} else {
		sw.timeout = 0
	}
	release, err = s.sending.take(r.RemoteAddr)
	if err == errConnDownloadsBusy {
		// Over HTTP/2 this sends GOAWAY after the answer: a connection
		// that asks for more than its share opens no more streams.
		w.Header().Set("Connection", "close")
	}
	if err != nil {
		return nil, nil, err
	}
	if st != nil && sw.timeout > 0 {
		st.release, release = release, func() {}
	}
	return sw, release, nil
}
