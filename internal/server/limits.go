package server

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// AuthLimiter refuses, with 429, every request from an address that has
// failed authentication too often: at most Limit failures per Window.
// Only failures count, so clients that authenticate are never slowed; and
// a limited address is refused before its token is checked, so that
// answers cannot be used to keep guessing at full speed.
//
// An IPv6 address counts by its IPv6Prefix (a /64 by default): one host
// is usually given a whole /64, and would otherwise rotate through it,
// an address per try, without limit. An IPv4-mapped IPv6 address counts
// as the IPv4 address it is.
type AuthLimiter struct {
	Limit  int
	Window time.Duration
	// IPv6Prefix is the prefix length IPv6 addresses are counted by;
	// 0 means DefaultIPv6Prefix.
	IPv6Prefix int

	mu    sync.Mutex
	addrs map[string][]time.Time
}

// DefaultIPv6Prefix is the prefix IPv6 clients are counted by, unless
// configured otherwise: a /64, what one host or site is usually given.
const DefaultIPv6Prefix = 64

// key is what failures from addr count against: the IPv4 address, or
// the IPv6 address's prefix. Anything that is not an IP address counts
// as itself.
func (l *AuthLimiter) key(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is4() {
		return ip.String()
	}
	bits := l.IPv6Prefix
	if bits <= 0 || bits > 128 {
		bits = DefaultIPv6Prefix
	}
	p, _ := ip.Prefix(bits) // cannot fail: an IPv6 address, 0 < bits <= 128
	return p.String()
}

// maxTrackedAddrs bounds the limiter's memory under a spray of addresses.
const maxTrackedAddrs = 100_000

// Blocked reports whether addr is over the limit and, if so, when it may
// try again.
func (l *AuthLimiter) Blocked(addr string, now time.Time) (time.Duration, bool) {
	if l == nil || l.Limit <= 0 {
		return 0, false
	}
	addr = l.key(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	fails := l.prune(addr, now)
	if len(fails) < l.Limit {
		return 0, false
	}
	return fails[len(fails)-l.Limit].Add(l.Window).Sub(now), true
}

// Fail records a failed authentication from addr.
func (l *AuthLimiter) Fail(addr string, now time.Time) {
	if l == nil || l.Limit <= 0 {
		return
	}
	addr = l.key(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addrs == nil {
		l.addrs = make(map[string][]time.Time)
	}
	if _, ok := l.addrs[addr]; !ok && len(l.addrs) >= maxTrackedAddrs {
		for a := range l.addrs {
			l.prune(a, now)
		}
		for a := range l.addrs { // still full: forget an arbitrary one
			if len(l.addrs) < maxTrackedAddrs {
				break
			}
			delete(l.addrs, a)
		}
	}
	l.addrs[addr] = append(l.prune(addr, now), now)
}

// prune drops failures older than the window; l.mu is held.
func (l *AuthLimiter) prune(addr string, now time.Time) []time.Time {
	fails := l.addrs[addr]
	i := 0
	for i < len(fails) && now.Sub(fails[i]) >= l.Window {
		i++
	}
	fails = fails[i:]
	if len(fails) == 0 {
		delete(l.addrs, addr)
		return nil
	}
	l.addrs[addr] = fails
	return fails
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// errTooSlow is returned by a rateReader whose client sends too slowly.
var errTooSlow = errors.New("upload slower than min_upload_rate")

// rateReader cuts a request body that arrives slower than min bytes per
// second: a client trickling a body would otherwise hold an upload slot
// (and a file) open for ever. Only time spent waiting for the client
// counts: when the server itself falls behind (a busy disk throttling its
// writes), the bytes pile up in the socket and are not the client's fault.
// Reads have a deadline at most one window away, so a client that sends
// nothing at all is cut too. (The deadline is moved only when half of it
// is used up: setting it on every read of a fast upload is measurable.)
// With min or window 0 the rate is not checked.
//
// Until authenticated is called, reads also have the hard deadline
// until, past which the body fails with authTimeout (see admission.go).
type rateReader struct {
	r        io.Reader
	rc       *http.ResponseController
	min      int64
	window   time.Duration
	waited   time.Duration
	n        int64
	deadline time.Time

	until       time.Time
	authTimeout error
}

func (rr *rateReader) Read(p []byte) (int, error) {
	start := time.Now()
	if !rr.until.IsZero() && !start.Before(rr.until) {
		return 0, rr.authTimeout
	}
	want := rr.deadline
	if rr.window > 0 && rr.deadline.Sub(start) < rr.window/2 {
		want = start.Add(rr.window)
	}
	if !rr.until.IsZero() && (want.IsZero() || want.After(rr.until)) {
		want = rr.until
	}
	if !want.Equal(rr.deadline) {
		rr.deadline = want
		rr.rc.SetReadDeadline(want)
	}
	n, err := rr.r.Read(p)
	rr.waited += time.Since(start)
	rr.n += int64(n)
	if rr.min > 0 && rr.window > 0 && rr.waited >= rr.window {
		if float64(rr.n) < float64(rr.min)*rr.waited.Seconds() {
			return n, errTooSlow
		}
		rr.waited, rr.n = 0, 0
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		if !rr.until.IsZero() {
			return n, rr.authTimeout
		}
		return n, errTooSlow
	}
	return n, err
}

// authenticated lifts the auth deadline: the request has a token.
func (rr *rateReader) authenticated() {
	rr.until = time.Time{}
	if rr.window <= 0 || rr.min <= 0 {
		rr.window = 0
		rr.rc.SetReadDeadline(time.Time{})
	}
	rr.deadline = time.Time{}
}

// ConnLimiter bounds open connections. Up to Max, connections are served
// as usual; beyond Max each gets one 503 answer and is closed; beyond
// 2×Max new connections are closed at once, so that a flood cannot use up
// file descriptors.
type ConnLimiter struct {
	Max    int
	active atomic.Int64
}

// Active returns the number of open connections.
func (c *ConnLimiter) Active() int64 { return c.active.Load() }

// Listener wraps l so that connections over the hard limit are dropped.
func (c *ConnLimiter) Listener(l net.Listener) net.Listener {
	if c == nil || c.Max <= 0 {
		return l
	}
	return &limitListener{Listener: l, c: c}
}

// ConnState is an http.Server ConnState hook that counts connections.
func (c *ConnLimiter) ConnState(_ net.Conn, s http.ConnState) {
	if c == nil {
		return
	}
	switch s {
	case http.StateNew:
		c.active.Add(1)
	case http.StateClosed, http.StateHijacked:
		c.active.Add(-1)
	}
}

// over reports whether the server is past its soft limit.
func (c *ConnLimiter) over() bool { return c != nil && c.Max > 0 && c.active.Load() > int64(c.Max) }

type limitListener struct {
	net.Listener
	c *ConnLimiter
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.c.active.Load() >= int64(2*l.c.Max) {
			conn.Close()
			continue
		}
		return conn, nil
	}
}
