// Package server is the HTTP side of the service. Its route table
// (routes.go) lists every path it answers; today that is the original's
// upload, POST / with one conda package per request as multipart form data
// with a token field and an artifact file field, and the health and
// metrics endpoints.
//
// The body is streamed, never held in memory: the token is checked before
// any artifact byte is accepted (from an Authorization: Bearer header, or
// from the token field, which must come first), the artifact streams into
// a temp file while being hashed and, for .tar.bz2, inspected, and only a
// valid package is published and handed to the indexer. Handlers return a
// Result or an error; errorOf (errors.go) is the one place where an error
// becomes a status, and every response is one line of JSON.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/audit"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/channel"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/metrics"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
)

// Indexer is what the server needs of the index scheduler
// (*index.Scheduler): to hand over a stored package and wait for the run
// that lists it.
type Indexer interface {
	// Published asks for an index run that includes p, and returns a
	// function that waits for it.
	Published(p index.Package) func(context.Context) error
	// Request asks for an index run of a label's subdir (store.Dir), and
	// returns a function that waits for it.
	Request(dir string) func(context.Context) error
	// Has reports whether the subdir's index lists filename.
	Has(subdir, filename string) (bool, error)
	// Name names the indexer, for responses.
	Name() string
}

// Mirror is what the server needs of the object-storage mirror.
type Mirror interface {
	Has(dir, filename string) bool
	WaitFor(ctx context.Context, dir, filename string) bool
}

// Options configure a Server.
type Options struct {
	Store   *store.Store
	Auth    *auth.Authenticator
	Indexer Indexer
	// Arrivals, if set, counts uploads from their first byte until they
	// are stored or refused, for the index scheduler.
	Arrivals      *index.Arrivals
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
	// Health, if set, says why the server is not healthy (GET /readyz).
	// The daemon's watchdog asks the same function.
	Health func() error
	// Channel, if set, is served under GET and HEAD; TokenDownloads
	// requires a token with the read scope for it.
	Channel        *channel.Channel
	TokenDownloads bool
	// ChannelName is the {channel} of the quetz, prefix.dev and
	// Artifactory upload paths; "main" if empty.
	ChannelName string
	// DownloadRateWhileUploading, in bytes per second, is what all
	// downloads together may send while an upload is in flight; 0 does
	// not pace them.
	DownloadRateWhileUploading int64
	// Trusted, if set, verifies the OIDC ID tokens of trusted
	// publishers and keeps the tokens minted for them.
	Trusted *trusted.Verifier
	// Lifecycle, if set, serves the admin API: labels, promotion,
	// yanks, deletes and patches.
	Lifecycle *lifecycle.Manager
	// Mirror, if set, says whether the object-storage mirror holds a
	// package, for the upload answer; with MirrorWait, the answer waits
	// that long at most for it.
	Mirror     Mirror
	MirrorWait time.Duration
	// Degraded, if set, says why the server works but not fully (such as
	// a mirror that is behind or in conflict), for GET /readyz.
	Degraded func() string
	// Downloads bounds what downloads may hold.
	Downloads DownloadLimits
}

// Server handles uploads.
type Server struct {
	o        Options
	auth     atomic.Pointer[auth.Authenticator]
	sem      chan struct{}
	draining atomic.Bool
	handler  http.Handler
	pace     *pacer
	// sending counts the downloads in flight, and finishing the other
	// answers whose last bytes wait for an HTTP/2 client, against
	// o.Downloads.
	sending, finishing downloadSlots

	uploads      atomic.Int64 // packages stored (created or identical)
	failures     atomic.Int64 // refused or failed upload requests
	authFailures atomic.Int64
}

// New returns a Server.
func New(o Options) *Server {
	if o.ChannelName == "" {
		o.ChannelName = "main"
	}
	s := &Server{o: o, sem: make(chan struct{}, o.MaxConcurrent)}
	s.sending = downloadSlots{limits: o.Downloads, conns: map[string]int{}}
	s.finishing = downloadSlots{limits: o.Downloads, conns: map[string]int{}, firstFree: true}
	s.pace = &pacer{rate: float64(o.DownloadRateWhileUploading), active: func() bool { return len(s.sem) > 0 }}
	s.auth.Store(o.Auth)
	s.handler = s.Handler(All)
	return s
}

// ServeHTTP implements http.Handler, for every role.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Handler returns a handler for the endpoints of roles only.
func (s *Server) Handler(roles Role) http.Handler { return s.guard(s.mux(roles)) }

func (s *Server) downloads() bool { return s.o.Channel != nil }

// SetAuth replaces the tokens, for a reload; requests in flight keep the
// tokens they started with.
func (s *Server) SetAuth(a *auth.Authenticator) { s.auth.Store(a) }

// Drain makes new requests get 503 while in-flight ones finish.
func (s *Server) Drain() { s.draining.Store(true) }

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.draining.Load() }

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
	protocol, replaced              string
	oidc                            *audit.OIDC
	// label is the label uploaded to or changed; call, to and reason
	// describe an admin call.
	label, call, to, reason string
}

// pathToken is the context key of a token given as a /t/<token>/ prefix.
type pathToken struct{}

// logPath is the path as logged: a /t/<token>/ prefix is redacted.
func logPath(r *http.Request) string {
	if _, ok := r.Context().Value(pathToken{}).(string); ok {
		return "/t/REDACTED" + r.URL.Path
	}
	return r.URL.Path
}

type ctxKey struct{}

func fieldsOf(r *http.Request) *logFields {
	f, _ := r.Context().Value(ctxKey{}).(*logFields)
	return f
}

// handle adapts a handler: it writes the one JSON response, logs one line
// per request, and for uploads updates the metrics and the audit log.
func (s *Server) handle(h handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		lf := &logFields{}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, lf))
		w := &recorder{ResponseWriter: rw}
		var res *Result
		var err error
		if s.o.Conns.over() {
			w.Header().Set("Connection", "close")
			err = errTooManyConns
		} else {
			res, err = h(w, r)
		}
		// Uploads are what the metrics and the audit log count; minting
		// a token for a trusted publisher is logged, and its uploads are
		// audited with the job's identity.
		admin := lf.call != "" && r.Method != http.MethodGet && r.Method != http.MethodHead
		upload := (r.Method == http.MethodPost || r.Method == http.MethodPut) && !strings.Contains(r.URL.Path, "/oidc/") &&
			!strings.HasPrefix(r.URL.Path, "/api/v1/packages/") && !strings.HasPrefix(r.URL.Path, "/api/v1/patches/")
		if res == handled && err == nil {
			s.o.Metrics.Download(strconv.Itoa(w.status), w.sent)
			s.o.Log.Info("request", "method", r.Method, "path", logPath(r), "remote", r.RemoteAddr, "status", w.status,
				"token", lf.token, "size", w.sent, "duration", time.Since(start).Round(time.Microsecond))
			return
		}
		status, reason, body := http.StatusOK, "", any(nil)
		if res != nil {
			status, reason, body = res.Status, "ok", res.Body
			if upload {
				reason = reasonOf(res.Status)
			}
		}
		level := slog.LevelInfo
		var errText string
		if err != nil {
			e := errorOf(err)
			status, reason = e.Status, e.Reason
			if e.RetryAfter > 0 {
				w.Header().Set("Retry-After", retryAfterHeader(e.RetryAfter))
			}
			if body == nil {
				body = map[string]any{"error": e.Msg, "status": e.Status}
			}
			errText = err.Error()
			level = slog.LevelWarn
			if status >= 500 {
				level = slog.LevelError
			}
		}
		if upload {
			if lf.replaced != "" && status < 300 {
				reason = "replaced"
			}
			s.account(r, lf, start, status, reason, errText)
		} else if admin {
			s.auditAdmin(r, lf, start, status, reason, errText)
		} else if r.Method == http.MethodGet || r.Method == http.MethodHead {
			s.o.Metrics.Download(strconv.Itoa(status), 0)
		}
		// Log before answering, so that the log has the line by the time
		// the client has its response.
		s.o.Log.Log(r.Context(), level, "request",
			"method", r.Method, "path", logPath(r), "remote", r.RemoteAddr, "status", status, "reason", reason,
			"protocol", lf.protocol, "token", lf.token, "label", lf.label, "call", lf.call, "subdir", lf.subdir, "filename", lf.filename, "size", lf.size,
			"sha256", lf.sha256, "duration", time.Since(start).Round(time.Microsecond), "err", errText)
		if r.TLS != nil {
			w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		}
		writeJSON(w, status, body)
	})
}

// recorder notes the status and body bytes of a response that a handler
// writes itself, for the log line and the metrics.
type recorder struct {
	http.ResponseWriter
	status int
	sent   int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.sent += int64(n)
	return n, err
}

// ReadFrom keeps the server's sendfile path for plain HTTP.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(r.ResponseWriter, src)
	}
	r.sent += n
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// account records an upload attempt in the counters, metrics and audit log.
func (s *Server) account(r *http.Request, lf *logFields, start time.Time, status int, reason, errText string) {
	if status >= 300 {
		s.failures.Add(1)
	}
	s.o.Metrics.Upload(strconv.Itoa(status), reason, lf.token, time.Since(start))
	if status == http.StatusUnauthorized || status == http.StatusTooManyRequests || status == http.StatusForbidden {
		s.o.Metrics.AuthFailure()
	}
	s.record(r, lf, start, status, reason, errText)
}

// record writes the audit record of an upload or admin call.
func (s *Server) record(r *http.Request, lf *logFields, start time.Time, status int, reason, errText string) {
	if aerr := s.o.Audit.Record(audit.Record{
		Time: start.UTC(), Remote: r.RemoteAddr, Token: lf.token, Filename: lf.filename, Label: lf.label, Subdir: lf.subdir,
		Size: lf.size, SHA256: lf.sha256, Status: status, Result: reason, Error: errText,
		Protocol: lf.protocol, Replaced: lf.replaced, OIDC: lf.oidc, Call: lf.call, To: lf.to, Reason: lf.reason,
	}); aerr != nil {
		// The change happened; say so loudly rather than lie to the
		// client about it.
		s.o.Log.Error("audit record not written", "err", aerr)
	}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	// Not HTML-escaped: a JSON API response, sent with nosniff, and a
	// stored document (a patch) comes back as it went in.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	var b []byte
	if err := enc.Encode(body); err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error","status":500}`)
	} else {
		b = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
