// Package server is the HTTP side of the service: every endpoint the
// daemon serves, over one route table (routes.go) that gives each
// endpoint its kind:
//
//   - upload: the original's POST / (multipart form with token and
//     artifact fields), and the protocols of rattler-build and pixi:
//     quetz, prefix.dev and Artifactory (protocols.go, upload.go);
//   - admin: the admin API of labels, promotion, yanks, deletes and
//     patches (admin.go);
//   - mint: trusted publishing, which trades a CI job's OIDC ID token for
//     a short-lived upload token (oidc.go);
//   - download: the channel itself, with optional token access and the
//     path guard in front of every route (download.go);
//   - ops: /healthz, /readyz and /metrics (ops.go).
//
// A route's kind decides the listener role that serves it and what
// handle records besides the request's log line: upload attempts go to
// the counters, metrics and audit log, admin changes to the audit log,
// downloads to the download metrics.
//
// An upload body is streamed, never held in memory: the token is checked
// before any package byte is accepted, the package streams into a temp
// file while being hashed and, for .tar.bz2, inspected, and only a valid
// package is published (publish, in named steps) and handed to the
// indexer. Handlers return a Result or an error; errorOf (errors.go),
// over the one classifier of known errors, is the one place where an
// error becomes a status, and every response the server writes itself
// is one line of JSON. The limits that bound clients are in limits.go
// and pace.go, the TLS settings in tls.go.
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
	"sync/atomic"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/attest"
	"github.com/conda-upload-server/conda-upload-server/internal/audit"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/channel"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/metrics"
	"github.com/conda-upload-server/conda-upload-server/internal/proxy"
	"github.com/conda-upload-server/conda-upload-server/internal/quota"
	"github.com/conda-upload-server/conda-upload-server/internal/retention"
	"github.com/conda-upload-server/conda-upload-server/internal/stats"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
	"github.com/conda-upload-server/conda-upload-server/internal/web"
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

// Options configure a Server: its core parts, then one group per
// concern, each filled by one builder of the daemon.
type Options struct {
	Store   *store.Store
	Auth    *auth.Authenticator
	Indexer Indexer
	// WaitIndex makes upload answers wait for the index run that
	// includes the package.
	WaitIndex bool
	Log       *slog.Logger
	// Trusted, if set, verifies the OIDC ID tokens of trusted
	// publishers and keeps the tokens minted for them.
	Trusted *trusted.Verifier
	// Lifecycle, if set, serves the admin API: labels, promotion,
	// yanks, deletes and patches.
	Lifecycle *lifecycle.Manager
	// Retention, if set, serves the retention call of the admin API.
	Retention *retention.Pruner
	// Quota, if set, bounds what labels hold and uploaders send a day.
	Quota *quota.Ledger

	Limits  Limits
	Observe Observability
	Channel ChannelOptions
	Mirror  MirrorOptions
	Policy  PolicyOptions
	// Attest is the attestation policy; the zero value stores
	// attestations unverified.
	Attest Attestations
}

// Limits bound what clients may take of the server.
type Limits struct {
	MaxUploadSize int64
	MaxConcurrent int
	// Package bounds what a package may hold.
	Package condapkg.Limits
	// AuthLimiter, if set, rate-limits failed authentication per address.
	AuthLimiter *AuthLimiter
	// MinUploadRate, in bytes per second over each RateWindow, cuts
	// bodies that trickle in. Zero disables it.
	MinUploadRate int64
	RateWindow    time.Duration
	// AuthDeadline is how long an upload may send its body before it
	// authenticates (its token in a form field); DefaultAuthDeadline
	// if zero.
	AuthDeadline time.Duration
	// Conns, if set, is the connection limiter of the http.Server.
	Conns *ConnLimiter
	// Arrivals, if set, counts uploads from their first byte until they
	// are stored or refused, for the index scheduler.
	Arrivals *index.Arrivals
	// Downloads bounds what downloads, and answers that wait for a
	// client, may hold.
	Downloads DownloadLimits
}

// Observability is what the server tells operators besides its log.
type Observability struct {
	// Metrics, if set, records requests; MetricsAllow lists who may read
	// GET /metrics on this handler (nobody if empty).
	Metrics      *metrics.Metrics
	MetricsAllow []netip.Prefix
	// Audit, if set, gets one record per upload attempt and admin change.
	Audit *audit.Log
	// Health, if set, says why the server is not healthy (GET /readyz).
	// The daemon's watchdog asks the same function.
	Health func() error
	// Degraded, if set, says why the server works but not fully (such as
	// a mirror that is behind or in conflict), for GET /readyz.
	Degraded func() string
}

// ChannelOptions say how the channel is named and served.
type ChannelOptions struct {
	// Files, if set, is the channel served under GET and HEAD;
	// TokenDownloads requires a token with the read scope for it.
	Files          *channel.Channel
	TokenDownloads bool
	// Name is the {channel} of the quetz, prefix.dev and Artifactory
	// upload paths; "main" if empty.
	Name string
	// Proxies are the upstream channels served at /proxy/<name>/, by
	// name.
	Proxies map[string]*proxy.Proxy
	// DownloadRateWhileUploading, in bytes per second, is what all
	// downloads together may send while an upload is in flight; 0 does
	// not pace them.
	DownloadRateWhileUploading int64
	// Pages, if set, serves the channel's pages to browsers, under the
	// same access as the channel; Stats, if set, counts downloads.
	Pages *web.UI
	Stats *stats.Counter
}

// MirrorOptions tell the upload answer about the object-storage mirror.
type MirrorOptions struct {
	// Bucket, if set, says whether the mirror holds a package, for the
	// upload answer; with Wait, the answer waits that long at most for
	// it.
	Bucket Mirror
	Wait   time.Duration
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
	// o.Limits.Downloads.
	sending, finishing downloadSlots

	uploads      atomic.Int64 // packages stored (created or identical)
	failures     atomic.Int64 // refused or failed upload requests
	authFailures atomic.Int64
}

// New returns a Server.
func New(o Options) *Server {
	if o.Channel.Name == "" {
		o.Channel.Name = "main"
	}
	s := &Server{o: o, sem: make(chan struct{}, o.Limits.MaxConcurrent)}
	s.sending = downloadSlots{limits: o.Limits.Downloads, conns: map[string]int{}}
	s.finishing = downloadSlots{limits: o.Limits.Downloads, conns: map[string]int{}, firstFree: true}
	s.pace = &pacer{rate: float64(o.Channel.DownloadRateWhileUploading), active: func() bool { return len(s.sem) > 0 }}
	s.auth.Store(o.Auth)
	s.handler = s.Handler(All)
	return s
}

// ServeHTTP implements http.Handler, for every role.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Handler returns a handler for the endpoints of roles only.
func (s *Server) Handler(roles Role) http.Handler { return s.guard(s.mux(roles)) }

func (s *Server) downloads() bool { return s.o.Channel.Files != nil }

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
	signers                         []attest.Identity // who a trusted publisher's job signs as
	// label is the label uploaded to or changed; call, to and reason
	// describe an admin call.
	label, call, to, reason string
	// pkg is the package name of an admin call on its owners.
	pkg string
}

type ctxKey struct{}

func fieldsOf(r *http.Request) *logFields {
	f, _ := r.Context().Value(ctxKey{}).(*logFields)
	return f
}

// handle adapts a handler of kind k: it writes the one JSON response,
// logs one line per request, and records what the kind asks for (see
// routeKind).
func (s *Server) handle(k routeKind, h handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		lf := &logFields{}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, lf))
		w := &recorder{ResponseWriter: rw}
		res, err := s.run(w, r, h)
		if res == handled && err == nil {
			s.wrote(k, w, r, lf, start)
			return
		}
		o := outcomeOf(k, w, res, err, lf)
		s.note(k, r, lf, start, o)
		// Log before answering, so that the log has the line by the time
		// the client has its response.
		s.logRequest(r, lf, start, o)
		writeJSON(w, o.status, o.body)
	})
}

// run calls h, unless the server holds too many connections.
func (s *Server) run(w http.ResponseWriter, r *http.Request, h handler) (*Result, error) {
	if s.o.Limits.Conns.over() {
		w.Header().Set("Connection", "close")
		return nil, errTooManyConns
	}
	return h(w, r)
}

// wrote logs a response the handler wrote itself (a download, the
// metrics, a minted token) and counts a download.
func (s *Server) wrote(k routeKind, w *recorder, r *http.Request, lf *logFields, start time.Time) {
	if k == kindDownload {
		s.o.Observe.Metrics.Download(strconv.Itoa(w.status), w.sent)
		s.countDownload(r, w.status)
	}
	attrs := []slog.Attr{slog.String("method", r.Method), slog.String("path", logPath(r)), slog.String("remote", r.RemoteAddr),
		slog.Int("status", w.status)}
	attrs = appendSet(attrs, "token", lf.token)
	attrs = append(attrs, slog.Int64("size", w.sent), slog.Duration("duration", time.Since(start).Round(time.Microsecond)))
	s.o.Log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// outcome is what handle answers and logs.
type outcome struct {
	status  int
	reason  string
	body    any
	errText string
	level   slog.Level
}

// outcomeOf turns a handler's result and error into the outcome of a
// request of kind k. An error's Retry-After goes into w's header.
func outcomeOf(k routeKind, w http.ResponseWriter, res *Result, err error, lf *logFields) outcome {
	o := outcome{status: http.StatusOK, level: slog.LevelInfo}
	if res != nil {
		o.status, o.reason, o.body = res.Status, "ok", res.Body
		if k == kindUpload {
			o.reason = reasonOf(res.Status)
		}
	}
	if err != nil {
		e := errorOf(err)
		o.status, o.reason, o.errText, o.level = e.Status, e.Reason, err.Error(), slog.LevelWarn
		if e.RetryAfter > 0 {
			w.Header().Set("Retry-After", retryAfterHeader(e.RetryAfter))
		}
		if o.body == nil {
			o.body = map[string]any{"error": e.Msg, "status": e.Status}
		}
		if o.status >= 500 {
			o.level = slog.LevelError
		}
	}
	if k == kindUpload && lf.replaced != "" && o.status < 300 {
		o.reason = "replaced"
	}
	return o
}

// note records a request as its kind asks: uploads in the counters,
// metrics and audit log, admin calls that change something in the audit
// log, downloads in the download metrics.
func (s *Server) note(k routeKind, r *http.Request, lf *logFields, start time.Time, o outcome) {
	switch k {
	case kindUpload:
		s.account(r, lf, start, o.status, o.reason, o.errText)
	case kindAdmin:
		if lf.call != "" && r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.auditAdmin(r, lf, start, o.status, o.reason, o.errText)
		}
	case kindDownload:
		s.o.Observe.Metrics.Download(strconv.Itoa(o.status), 0)
	}
}

// logRequest writes the request's log line, with the fields that apply
// to it.
func (s *Server) logRequest(r *http.Request, lf *logFields, start time.Time, o outcome) {
	attrs := []slog.Attr{slog.String("method", r.Method), slog.String("path", logPath(r)), slog.String("remote", r.RemoteAddr),
		slog.Int("status", o.status)}
	attrs = appendSet(attrs, "reason", o.reason, "protocol", lf.protocol, "token", lf.token, "label", lf.label,
		"call", lf.call, "subdir", lf.subdir, "filename", lf.filename)
	if lf.size > 0 {
		attrs = append(attrs, slog.Int64("size", lf.size))
	}
	attrs = appendSet(attrs, "sha256", lf.sha256)
	attrs = append(attrs, slog.Duration("duration", time.Since(start).Round(time.Microsecond)))
	attrs = appendSet(attrs, "err", o.errText)
	s.o.Log.LogAttrs(r.Context(), o.level, "request", attrs...)
}

// appendSet appends the string attributes of kv, pairs of key and value,
// whose value is not empty.
func appendSet(attrs []slog.Attr, kv ...string) []slog.Attr {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			attrs = append(attrs, slog.String(kv[i], kv[i+1]))
		}
	}
	return attrs
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
	s.o.Observe.Metrics.Upload(strconv.Itoa(status), reason, lf.token, time.Since(start))
	if status == http.StatusUnauthorized || status == http.StatusTooManyRequests || status == http.StatusForbidden {
		s.o.Observe.Metrics.AuthFailure()
	}
	s.record(r, lf, start, status, reason, errText)
}

// record writes the audit record of an upload or admin call.
func (s *Server) record(r *http.Request, lf *logFields, start time.Time, status int, reason, errText string) {
	if aerr := s.o.Observe.Audit.Record(audit.Record{
		Time: start.UTC(), Remote: r.RemoteAddr, Token: lf.token, Filename: lf.filename, Label: lf.label, Subdir: lf.subdir,
		Size: lf.size, SHA256: lf.sha256, Status: status, Result: reason, Error: errText,
		Protocol: lf.protocol, Replaced: lf.replaced, OIDC: lf.oidc, Call: lf.call, To: lf.to, Reason: lf.reason, Package: lf.pkg,
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
