// Package server is the HTTP side of the upload service: POST / takes one
// conda package per request, as multipart form data with a token field and
// an artifact file field, exactly as the original server did.
//
// The body is streamed, never held in memory: the token is checked before
// any artifact byte is accepted (from an Authorization: Bearer header, or
// from the token field, which must come first), the artifact streams into
// a temp file while being hashed and, for .tar.bz2, inspected, and only a
// valid package is published. Every response is one JSON object.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/audit"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/form"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/metrics"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

const (
	// envelopeSlack is what the multipart envelope (boundaries, headers,
	// the token field) may add to max_upload_size.
	envelopeSlack = 64 << 10
	// maxParts bounds the form parts of one request.
	maxParts = 8
	// maxFieldLen bounds a non-file form field.
	maxFieldLen = 4 << 10
)

// Options configure a Server.
type Options struct {
	Store   *store.Store
	Auth    *auth.Authenticator
	Indexer *index.Indexer
	// Repodata, if set, is primed with each stored package's record, so
	// the built-in indexer need not read the package again.
	Repodata      *repodata.Index
	Limits        condapkg.Limits
	MaxUploadSize int64
	MaxConcurrent int
	// WaitIndex makes responses wait for the index run that includes
	// the package.
	WaitIndex bool
	Log       *slog.Logger
	// AuthLimiter, if set, rate-limits failed authentication per address.
	AuthLimiter *AuthLimiter
	// MinUploadRate, in bytes per second over each RateWindow, cuts
	// bodies that trickle in. Zero disables it.
	MinUploadRate int64
	RateWindow    time.Duration
	// Conns, if set, is the connection limiter of the http.Server.
	Conns *ConnLimiter
	// Metrics, if set, records requests; MetricsAllow lists who may read
	// GET /metrics on this handler (nobody if empty).
	Metrics      *metrics.Metrics
	MetricsAllow []netip.Prefix
	// Audit, if set, gets one record per upload attempt.
	Audit *audit.Log
	// Ready, if set, says why the server is not ready (GET /readyz).
	Ready func() error
}

// Server handles uploads.
type Server struct {
	o        Options
	auth     atomic.Pointer[auth.Authenticator]
	sem      chan struct{}
	draining atomic.Bool
	mux      *http.ServeMux

	receiving    atomic.Int64 // uploads not yet stored (or refused)
	uploads      atomic.Int64 // packages stored (created or identical)
	failures     atomic.Int64 // refused or failed upload requests
	authFailures atomic.Int64
}

// New returns a Server.
func New(o Options) *Server {
	s := &Server{o: o, sem: make(chan struct{}, o.MaxConcurrent), mux: http.NewServeMux()}
	s.auth.Store(o.Auth)
	s.mux.Handle("/{$}", s.handle(s.root))
	s.mux.Handle("/healthz", s.handle(s.healthz))
	s.mux.Handle("/readyz", s.handle(s.readyz))
	s.mux.Handle("/metrics", s.handle(s.metrics))
	s.mux.Handle("/", s.handle(func(http.ResponseWriter, *http.Request) (any, int, error) {
		return nil, 0, errStatus(http.StatusNotFound, "not found; upload with POST /")
	}))
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Receiving returns the number of uploads still being received or checked,
// for the indexer to wait for before a run.
func (s *Server) Receiving() int64 { return s.receiving.Load() }

// SetAuth replaces the tokens, for a reload; requests in flight keep the
// tokens they started with.
func (s *Server) SetAuth(a *auth.Authenticator) { s.auth.Store(a) }

// Drain makes new requests get 503 while in-flight ones finish.
func (s *Server) Drain() { s.draining.Store(true) }

// Stats are counters for status lines and health checks.
type Stats struct {
	Uploads, Failures, InFlight, AuthFailures int64
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	return Stats{Uploads: s.uploads.Load(), Failures: s.failures.Load(), InFlight: int64(len(s.sem)), AuthFailures: s.authFailures.Load()}
}

// logFields collects what the request log line and audit record say.
type logFields struct {
	token, filename, subdir, sha256 string
	size                            int64
}

type ctxKey struct{}

func fieldsOf(r *http.Request) *logFields {
	f, _ := r.Context().Value(ctxKey{}).(*logFields)
	return f
}

// handle adapts a handler that returns a body or an error, writes the one
// JSON response, and logs one line per request.
func (s *Server) handle(h func(http.ResponseWriter, *http.Request) (any, int, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		lf := &logFields{}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, lf))
		var body any
		var status int
		var err error
		if s.o.Conns.over() {
			w.Header().Set("Connection", "close")
			err = errTooManyConns
		} else {
			body, status, err = h(w, r)
		}
		if err == errHandled {
			return // the handler wrote its own response
		}
		level := slog.LevelInfo
		var errText string
		if err != nil {
			var msg, retry string
			status, msg, retry = statusOf(err)
			if retry != "" {
				w.Header().Set("Retry-After", retry)
			}
			if body == nil {
				body = map[string]any{"error": msg, "status": status}
			}
			errText = err.Error()
			level = slog.LevelWarn
			if status >= 500 {
				level = slog.LevelError
			}
			if r.URL.Path == "/" {
				s.failures.Add(1)
			}
		}
		if r.URL.Path == "/" && r.Method == http.MethodPost {
			reason := resultOf(status, err)
			s.o.Metrics.Upload(strconv.Itoa(status), reason, lf.token, time.Since(start))
			if status == http.StatusUnauthorized || status == http.StatusTooManyRequests || status == http.StatusForbidden {
				s.o.Metrics.AuthFailure()
			}
			if aerr := s.o.Audit.Record(audit.Record{
				Time: start.UTC(), Remote: r.RemoteAddr, Token: lf.token, Filename: lf.filename, Subdir: lf.subdir,
				Size: lf.size, SHA256: lf.sha256, Status: status, Result: reason, Error: errText,
			}); aerr != nil {
				// The upload happened; say so loudly rather than lie
				// to the client about it.
				s.o.Log.Error("audit record not written", "err", aerr)
			}
		}
		// Log before answering, so that the log has the line by the time
		// the client has its response.
		s.o.Log.Log(r.Context(), level, "request",
			"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "status", status,
			"token", lf.token, "subdir", lf.subdir, "filename", lf.filename, "size", lf.size,
			"sha256", lf.sha256, "duration", time.Since(start).Round(time.Microsecond), "err", errText)
		if r.TLS != nil {
			w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		}
		writeJSON(w, status, body)
	})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error","status":500}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return nil, 0, errStatus(http.StatusMethodNotAllowed, "method not allowed; use GET")
	}
	if s.draining.Load() {
		return nil, 0, errShuttingDown
	}
	if s.o.Ready != nil {
		if err := s.o.Ready(); err != nil {
			return nil, 0, &httpError{status: http.StatusServiceUnavailable, msg: "not ready: " + oneLine(err.Error())}
		}
	}
	return map[string]any{"status": "ready"}, http.StatusOK, nil
}

// metrics serves the Prometheus metrics to allowed addresses only.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if s.o.Metrics == nil {
		return nil, 0, errStatus(http.StatusNotFound, "metrics are disabled")
	}
	ip, err := netip.ParseAddr(remoteIP(r))
	allowed := false
	for _, p := range s.o.MetricsAllow {
		if err == nil && p.Contains(ip.Unmap()) {
			allowed = true
		}
	}
	if !allowed {
		return nil, 0, errStatus(http.StatusForbidden, "metrics are not served to this address")
	}
	s.o.Metrics.Handler().ServeHTTP(w, r)
	return nil, 0, errHandled
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return nil, 0, errStatus(http.StatusMethodNotAllowed, "method not allowed; use GET")
	}
	return map[string]any{"status": "ok"}, http.StatusOK, nil
}

// Result is the response body of an upload.
type Result struct {
	Filename string `json:"filename"`
	Subdir   string `json:"subdir"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	MD5      string `json:"md5"`
	// Created is false when a byte-identical package was already stored.
	Created bool `json:"created"`
	// Indexed says whether repodata.json lists the package.
	Indexed bool   `json:"indexed"`
	Indexer string `json:"indexer"`
	Error   string `json:"error,omitempty"`
	Status  int    `json:"status"`
}

func (s *Server) root(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return nil, 0, errStatus(http.StatusMethodNotAllowed, "method not allowed; upload with POST /")
	}
	if s.draining.Load() {
		return nil, 0, errShuttingDown
	}
	ip := remoteIP(r)
	if wait, blocked := s.o.AuthLimiter.Blocked(ip, time.Now()); blocked {
		return nil, 0, &httpError{status: http.StatusTooManyRequests, msg: "too many failed authentications from this address; retry later", retryAfter: retryAfter(wait)}
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		return nil, 0, errBusy
	}
	s.o.Metrics.InFlight(1)
	defer s.o.Metrics.InFlight(-1)
	s.receiving.Add(1)
	var once sync.Once
	stored := func() { once.Do(func() { s.receiving.Add(-1) }) }
	defer stored()
	body, status, err := s.upload(w, r, stored)
	if err != nil {
		if st, _, _ := statusOf(err); st == http.StatusUnauthorized {
			s.o.AuthLimiter.Fail(ip, time.Now())
			s.authFailures.Add(1)
		}
	}
	return body, status, err
}

// upload handles one upload; it calls stored once the package is stored
// (or never, if it is refused).
func (s *Server) upload(w http.ResponseWriter, r *http.Request, stored func()) (any, int, error) {
	lf := fieldsOf(r)
	limit := s.o.MaxUploadSize + envelopeSlack
	if r.ContentLength > limit {
		return nil, 0, store.ErrTooLarge
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	r.Body = struct {
		io.Reader
		io.Closer
	}{newRateReader(body, w, s.o.MinUploadRate, s.o.RateWindow), body}

	authed := false
	var token auth.Token
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return nil, 0, errStatus(http.StatusUnauthorized, "Authorization header must be \"Bearer <token>\"")
		}
		t, err := s.checkToken(strings.TrimSpace(tok), lf)
		if err != nil {
			return nil, 0, err
		}
		token, authed = t, true
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, 0, errStatus(http.StatusBadRequest, "request must be multipart/form-data with fields token and artifact")
	}
	mr, err := form.NewReader(r.Body, params["boundary"])
	if err != nil {
		return nil, 0, bodyError(err)
	}

	var (
		up      *store.Upload
		scanner *condapkg.Scanner
		fn      condapkg.Filename
		sums    store.Sums
	)
	defer func() {
		if up != nil {
			up.Abort()
		}
		if scanner != nil {
			scanner.Close()
		}
	}()
	for parts := 0; ; parts++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, bodyError(err)
		}
		if parts >= maxParts {
			return nil, 0, errStatus(http.StatusBadRequest, fmt.Sprintf("too many form fields (more than %d)", maxParts))
		}
		name, filename, hasFilename := formNames(p.Header)
		switch {
		case name == "token":
			v, err := readField(p, name, auth.MaxTokenLen)
			if err != nil {
				return nil, 0, err
			}
			t, err := s.checkToken(strings.TrimSpace(v), lf)
			if err != nil {
				return nil, 0, err
			}
			token, authed = t, true
		case name == "artifact":
			if up != nil {
				return nil, 0, errStatus(http.StatusBadRequest, "one artifact per request")
			}
			if !authed {
				return nil, 0, errStatus(http.StatusBadRequest, "the token field must come before the artifact field (or send Authorization: Bearer <token>)")
			}
			if !hasFilename {
				return nil, 0, errStatus(http.StatusBadRequest, "artifact must be a file field with a filename")
			}
			lf.filename = filename
			if fn, err = condapkg.ParseFilename(filename); err != nil {
				return nil, 0, err
			}
			if up, err = s.o.Store.Create(); err != nil {
				return nil, 0, err
			}
			scanner = condapkg.NewScanner(fn, s.o.Limits)
			sums, err = up.Receive(countingReader{p, s.o.Metrics}, s.o.MaxUploadSize, scanner)
			if err != nil {
				return nil, 0, bodyError(err)
			}
			lf.size, lf.sha256 = sums.Size, sums.SHA256
		case hasFilename:
			return nil, 0, errStatus(http.StatusBadRequest, fmt.Sprintf("unexpected file field %q; send the package as artifact", name))
		default:
			// Other small fields, such as the original client's optional
			// arch, are read and ignored: the subdir comes from the
			// package itself.
			if _, err := readField(p, name, maxFieldLen); err != nil {
				return nil, 0, err
			}
		}
	}
	if !authed {
		return nil, 0, errUnauthorized
	}
	if up == nil {
		return nil, 0, errStatus(http.StatusBadRequest, "no artifact field in the form")
	}
	// The form ended; so must the body, as its length said. A body cut
	// short of its Content-Length (or chunked encoding) is refused even if
	// the form inside it looked complete.
	if n, err := io.Copy(io.Discard, io.LimitReader(mr.Epilogue(), maxFieldLen+1)); err != nil {
		return nil, 0, bodyError(err)
	} else if n > maxFieldLen {
		return nil, 0, errStatus(http.StatusBadRequest, "data after the end of the multipart form")
	}
	info, err := scanner.Finish(up.File(), sums.Size)
	if err != nil {
		return nil, 0, err
	}
	lf.subdir = info.Subdir
	if !token.Allows(info.Subdir) {
		return nil, 0, errStatus(http.StatusForbidden, fmt.Sprintf("token %q may not upload to subdir %s", token.Name, info.Subdir))
	}
	record, err := repodata.Record(info.IndexJSON, sums.Size, sums.MD5, sums.SHA256)
	if err != nil {
		return nil, 0, fmt.Errorf("build record: %w", err)
	}
	outcome, fi, err := up.Publish(info.Subdir, fn.String(), sums.SHA256)
	if err != nil {
		return nil, 0, err
	}
	s.uploads.Add(1)
	res := &Result{
		Filename: fn.String(), Subdir: info.Subdir, Size: sums.Size, SHA256: sums.SHA256, MD5: sums.MD5,
		Created: outcome == store.Created, Indexer: s.o.Indexer.Name(), Status: http.StatusCreated,
	}
	if outcome == store.Identical {
		res.Status = http.StatusOK
	}
	if s.o.Repodata != nil {
		s.o.Repodata.Prime(info.Subdir, fn.String(), fi, record)
	}
	// Stored first, so that the run this upload asks for does not wait
	// for the upload itself to settle.
	stored()
	wait := s.o.Indexer.Request(info.Subdir)
	if !s.o.WaitIndex {
		return res, res.Status, nil
	}
	if err := s.waitIndexed(r.Context(), wait, info.Subdir, fn.String()); err != nil {
		res.Error = "package stored, but indexing failed: " + err.Error()
		res.Status = http.StatusInternalServerError
		s.o.Log.Error("index after upload failed", "subdir", info.Subdir, "filename", fn.String(), "err", err)
		return res, res.Status, nil
	}
	res.Indexed = true
	return res, res.Status, nil
}

func (s *Server) waitIndexed(ctx context.Context, wait func(context.Context) error, subdir, filename string) error {
	if err := wait(ctx); err != nil {
		return err
	}
	ok, err := s.o.Indexer.Has(subdir, filename)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("the indexer did not list the package")
	}
	return nil
}

// checkToken authenticates a presented token.
func (s *Server) checkToken(presented string, lf *logFields) (auth.Token, error) {
	t, ok := s.auth.Load().Check(presented)
	if !ok {
		return auth.Token{}, errUnauthorized
	}
	lf.token = t.Name
	if t.Expired(time.Now()) {
		return auth.Token{}, errStatus(http.StatusForbidden, fmt.Sprintf("token %q expired on %s", t.Name, t.Expires.UTC().Format(time.RFC3339)))
	}
	return t, nil
}

// resultOf names the outcome of an upload request for metrics and the
// audit log, from a fixed set of words.
func resultOf(status int, err error) string {
	switch status {
	case http.StatusCreated:
		return "created"
	case http.StatusOK:
		return "identical"
	case http.StatusBadRequest:
		if condapkg.IsInvalid(err) {
			return "invalid_package"
		}
		return "bad_request"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusRequestTimeout:
		return "too_slow"
	case http.StatusConflict:
		return "conflict"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusTooManyRequests:
		return "rate_limited"
	case http.StatusInternalServerError:
		if err == nil {
			return "index_failed"
		}
		return "internal_error"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusInsufficientStorage:
		return "no_space"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	}
	return "other"
}

// formNames returns a part's form name and its raw filename. (The
// stdlib's Part.FileName strips directories, which would hide a traversal
// attempt instead of refusing it.)
func formNames(h textproto.MIMEHeader) (name, filename string, hasFilename bool) {
	_, params, err := mime.ParseMediaType(h.Get("Content-Disposition"))
	if err != nil {
		return "", "", false
	}
	filename, hasFilename = params["filename"]
	return params["name"], filename, hasFilename
}

func readField(p *form.Part, name string, max int) (string, error) {
	b, err := io.ReadAll(io.LimitReader(p, int64(max)+1))
	if err != nil {
		return "", bodyError(err)
	}
	if len(b) > max {
		return "", errStatus(http.StatusBadRequest, fmt.Sprintf("form field %q is longer than %d bytes", name, max))
	}
	return string(b), nil
}

// bodyError classifies a failure to read the request body.
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || errors.Is(err, store.ErrTooLarge):
		return store.ErrTooLarge
	case condapkg.IsInvalid(err) || errors.As(err, new(*store.WriteError)) || errors.Is(err, errTooSlow):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errStatus(http.StatusBadRequest, "request body ended before the multipart form was complete")
	case form.IsMalformed(err):
		return errStatus(http.StatusBadRequest, oneLine(err.Error()))
	}
	var he *httpError
	if errors.As(err, &he) {
		return err
	}
	return &httpError{status: http.StatusBadRequest, msg: "cannot read request body: " + oneLine(err.Error())}
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strconv.Quote(s)[1 : len(strconv.Quote(s))-1]
}

// countingReader counts package bytes into the metrics as they arrive.
type countingReader struct {
	r io.Reader
	m *metrics.Metrics
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.m.Received(int64(n))
	return n, err
}
