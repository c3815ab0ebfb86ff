package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// DefaultStallTimeout is how long an upstream's body may send nothing
// before the fetch is cut, when Upstream.StallTimeout is zero.
const DefaultStallTimeout = time.Minute

var (
	errStalled  = errors.New("the upstream sent nothing for too long")
	errTooLarge = errors.New("the upstream sent more than the limit")
)

// newClient returns an HTTP client of an upstream: no proxy from the
// environment, no transparent decompression (a body is read as sent,
// under its own bounds), and redirects only to the upstream's own host
// and port or to one of redirect_hosts, over the upstream's scheme or
// https. Host and port both must match, since the sandbox lets the
// server connect to those ports only.
//
// bulk is the client of packages: HTTP/1.1 only. Go's HTTP/2 client
// moves a large body through flow-control windows and a pipe, and
// reading a 100 MiB package over it cost the proxy up to a fifth more
// CPU, and the upstream two to three times as much, as over HTTP/1.1
// (BENCHMARKS.md); index files and shards, many and small, keep HTTP/2.
func newClient(up Upstream, base *url.URL, bulk bool) *http.Client {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(!bulk)
	tr := &http.Transport{
		Protocols:             &protocols,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: up.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > 5 {
				return &Error{Status: http.StatusBadGateway, Msg: "the upstream redirected more than 5 times"}
			}
			if err := reachable(up, base, req.URL, "redirected to"); err != nil {
				return err
			}
			if hostPort(req.URL) != hostPort(base) {
				// The credentials are the upstream's alone: Go
				// would send them to its host on another port.
				req.Header.Del("Authorization")
			}
			return nil
		},
	}
}

// reachable says whether the server may fetch u for the upstream up at
// base: over base's scheme or https, from base's own host and port or a
// host and port of redirect_hosts. It holds for redirects and for a
// shard index's shards_base_url alike; what says which it is.
func reachable(up Upstream, base, u *url.URL, what string) error {
	h := hostPort(u)
	switch {
	case u.Scheme != base.Scheme && u.Scheme != "https":
		return &Error{Status: http.StatusBadGateway, Msg: "the upstream " + what + " " + u.Scheme}
	case h != hostPort(base) && !slices.Contains(up.RedirectHosts, h):
		return &Error{Status: http.StatusBadGateway, Msg: fmt.Sprintf("the upstream %s %s, which is not in redirect_hosts", what, h)}
	}
	return nil
}

// hostPort is u's host, in lower case, and port, its scheme's if it
// names none, as net.JoinHostPort writes them.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// fetch is one request to the upstream in flight; its body is read
// through it, under the fetch's time and stall bounds.
type fetch struct {
	resp   *http.Response
	body   io.Reader
	cancel context.CancelCauseFunc
	stall  *time.Timer
	n      int64
	p      *Proxy
	// stallFor is how long the body may send nothing.
	stallFor time.Duration
	// bodyErr is the error reading the body failed with, if it did.
	bodyErr error
}

// get requests rawURL, of the upstream, with If-None-Match if etag is set.
// A transport failure is the upstream being unreachable.
func (p *Proxy) get(ctx context.Context, rawURL, etag string) (*fetch, error) {
	return p.request(ctx, p.client, rawURL, etag)
}

// getPackage requests the package at rawURL, over HTTP/1.1 (newClient).
func (p *Proxy) getPackage(ctx context.Context, rawURL string) (*fetch, error) {
	return p.request(ctx, p.bulk, rawURL, "")
}

func (p *Proxy) request(ctx context.Context, client *http.Client, rawURL, etag string) (*fetch, error) {
	timeout, stall := p.up.FetchTimeout, p.up.StallTimeout
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	ctx, cancelCause := context.WithCancelCause(ctx)
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, timeout, errStalled)
	cancel := func(cause error) { cancelCause(cause); cancelTimeout() }
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	// The credentials go to the upstream's own host and port only, not
	// to a CDN's shards_base_url.
	switch {
	case hostPort(req.URL) != hostPort(p.base):
	case p.up.Username != "":
		req.SetBasicAuth(p.up.Username, p.up.Password)
	case p.up.Token != "":
		req.Header.Set("Authorization", "Bearer "+p.up.Token)
	}
	req.Header.Set("User-Agent", "conda-upload-server-proxy")
	f := &fetch{cancel: cancel, p: p, stallFor: stall}
	f.stall = time.AfterFunc(stall, func() { cancel(errStalled) })
	resp, err := client.Do(req)
	if err != nil {
		f.close()
		var e *Error
		if errors.As(err, &e) {
			p.log.Warn("refused a redirect of the upstream", "url", rawURL, "err", e.Msg)
			p.obs.UpstreamError(p.up.Name, "redirect")
			return nil, e
		}
		return nil, p.unreachable(ctx, err)
	}
	f.resp = resp
	f.body = &stallReader{f: f, d: stall}
	return f, nil
}

// unreachable is the error of a fetch that did not reach the upstream,
// or was cut: 504 if it timed out, else 502.
func (p *Proxy) unreachable(ctx context.Context, err error) error {
	p.reached(err)
	if errors.Is(context.Cause(ctx), errStalled) {
		p.obs.UpstreamError(p.up.Name, "timeout")
		return &Error{Status: http.StatusGatewayTimeout, Msg: "the upstream is too slow", Err: err}
	}
	p.obs.UpstreamError(p.up.Name, "unreachable")
	return &Error{Status: http.StatusBadGateway, Msg: "the upstream cannot be reached", Err: err}
}

// readErr is the error of reading a fetch's body.
func (f *fetch) readErr(err error) error {
	if errors.Is(err, errTooLarge) || errors.Is(err, errDigest) {
		f.p.obs.UpstreamError(f.p.up.Name, "invalid")
		return &Error{Status: http.StatusBadGateway, Msg: "the upstream sent a bad response", Err: err}
	}
	return f.p.unreachable(f.resp.Request.Context(), err)
}

// status is the error of an answer other than want.
func (f *fetch) status(what string) error {
	if f.resp.StatusCode == http.StatusNotFound {
		return errNotFound
	}
	err := fmt.Errorf("%s: the upstream answered %s", what, f.resp.Status)
	if f.resp.StatusCode >= 500 {
		f.p.reached(err)
	}
	f.p.obs.UpstreamError(f.p.up.Name, "status")
	return &Error{Status: http.StatusBadGateway, Msg: err.Error()}
}

func (f *fetch) close() {
	f.stall.Stop()
	if f.resp != nil {
		f.resp.Body.Close()
	}
	f.cancel(nil)
}

// idle stops the stall clock while the reader waits on its own side
// (the cache's disk, a client), and starts it again after.
func (f *fetch) idle(waiting bool) {
	if waiting {
		f.stall.Stop()
	} else {
		f.stall.Reset(f.stallFor)
	}
}

// limited is f's body, cut with errTooLarge past max bytes.
func (f *fetch) limited(max int64) io.Reader { return &limitReader{r: f.body, left: max} }

type stallReader struct {
	f *fetch
	d time.Duration
}

func (s *stallReader) Read(b []byte) (int, error) {
	n, err := s.f.resp.Body.Read(b)
	if err != nil && err != io.EOF {
		s.f.bodyErr = err
	}
	if n > 0 {
		s.f.stall.Reset(s.d)
		s.f.n += int64(n)
		s.f.p.obs.Fetched(s.f.p.up.Name, int64(n))
	}
	return n, err
}

type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(b []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(b)) > l.left {
		b = b[:l.left]
	}
	n, err := l.r.Read(b)
	l.left -= int64(n)
	return n, err
}
