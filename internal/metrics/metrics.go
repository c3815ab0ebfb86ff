// Package metrics exposes what the server does in the Prometheus text
// format, from a registry of its own (no global default registry, so
// nothing registers itself behind the server's back).
//
// Labels are few and bounded: the status code and a reason from a fixed
// set, and the token name only when the operator allows it, since token
// names can say more about a CI setup than an operator wants to publish.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the server's collectors.
type Metrics struct {
	reg        *prometheus.Registry
	tokenNames bool

	uploads      *prometheus.CounterVec
	bytes        prometheus.Counter
	duration     prometheus.Histogram
	inFlight     prometheus.Gauge
	authFailures prometheus.Counter
	indexRuns    *prometheus.CounterVec
	indexFails   *prometheus.CounterVec
	indexDur     *prometheus.HistogramVec
	certExpiry   prometheus.Gauge
	downloads    *prometheus.CounterVec
	sentBytes    prometheus.Counter
	oidcKeyFails *prometheus.CounterVec
	oidcTokens   *prometheus.CounterVec
}

// New returns Metrics with build information; tokenNames says whether
// upload counters carry the token name.
func New(version, revision string, tokenNames bool) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), tokenNames: tokenNames}
	labels := []string{"code", "reason"}
	if tokenNames {
		labels = append(labels, "token")
	}
	m.uploads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conda_upload_requests_total",
		Help: "Upload requests by status code and reason.",
	}, labels)
	m.bytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "conda_upload_received_bytes_total",
		Help: "Package bytes received, stored or not.",
	})
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "conda_upload_request_duration_seconds",
		Help:    "Time from request to response for uploads, including the index run waited for.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "conda_upload_in_flight",
		Help: "Uploads being received or indexed.",
	})
	m.authFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "conda_upload_auth_failures_total",
		Help: "Rejected authentications (wrong, missing or expired tokens, rate-limited addresses).",
	})
	m.indexRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conda_upload_index_runs_total",
		Help: "Index runs by indexer.",
	}, []string{"indexer"})
	m.indexFails = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conda_upload_index_failures_total",
		Help: "Failed index runs by indexer.",
	}, []string{"indexer"})
	m.indexDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "conda_upload_index_duration_seconds",
		Help:    "Duration of index runs.",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600},
	}, []string{"indexer"})
	m.certExpiry = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "conda_upload_tls_certificate_expiry_timestamp_seconds",
		Help: "NotAfter of the served TLS certificate, as a Unix time.",
	})
	m.downloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conda_download_requests_total",
		Help: "Channel GET and HEAD requests by status code.",
	}, []string{"code"})
	m.sentBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "conda_download_sent_bytes_total",
		Help: "Response body bytes sent for channel requests.",
	})
	m.oidcKeyFails = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conda_upload_oidc_key_failures_total",
		Help: "Failed fetches of a trusted publisher issuer's signing keys (verification then fails closed).",
	}, []string{"issuer"})
	m.oidcTokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conda_upload_oidc_tokens_total",
		Help: "OIDC ID tokens presented, by trusted publisher (empty if none matched) and result.",
	}, []string{"publisher", "result"})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "conda_upload_build_info",
		Help: "Build information; the value is 1.",
	}, []string{"version", "revision", "goversion"})
	build.WithLabelValues(version, revision, runtime.Version()).Set(1)
	m.reg.MustRegister(m.uploads, m.bytes, m.duration, m.inFlight, m.authFailures,
		m.indexRuns, m.indexFails, m.indexDur, m.certExpiry, m.downloads, m.sentBytes, m.oidcKeyFails, m.oidcTokens, build,
		collectors.NewGoCollector())
	return m
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Download records one finished channel request and the body bytes sent.
func (m *Metrics) Download(code string, sent int64) {
	if m == nil {
		return
	}
	m.downloads.WithLabelValues(code).Inc()
	m.sentBytes.Add(float64(sent))
}

// OIDCKeyFailure counts a failed fetch of an issuer's keys.
func (m *Metrics) OIDCKeyFailure(issuer string) {
	if m == nil {
		return
	}
	m.oidcKeyFails.WithLabelValues(issuer).Inc()
}

// OIDCToken counts an ID token presented: result is accepted, refused or
// unverifiable.
func (m *Metrics) OIDCToken(publisher, result string) {
	if m == nil {
		return
	}
	m.oidcTokens.WithLabelValues(publisher, result).Inc()
}

// Upload records one finished upload request.
func (m *Metrics) Upload(code, reason, token string, d time.Duration) {
	if m == nil {
		return
	}
	lv := []string{code, reason}
	if m.tokenNames {
		lv = append(lv, token)
	}
	m.uploads.WithLabelValues(lv...).Inc()
	m.duration.Observe(d.Seconds())
}

// Received counts package bytes as they arrive.
func (m *Metrics) Received(n int64) {
	if m != nil {
		m.bytes.Add(float64(n))
	}
}

// InFlight moves the in-flight gauge by delta.
func (m *Metrics) InFlight(delta float64) {
	if m != nil {
		m.inFlight.Add(delta)
	}
}

// AuthFailure counts a rejected authentication.
func (m *Metrics) AuthFailure() {
	if m != nil {
		m.authFailures.Inc()
	}
}

// IndexRun records one index run.
func (m *Metrics) IndexRun(indexer string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.indexRuns.WithLabelValues(indexer).Inc()
	m.indexDur.WithLabelValues(indexer).Observe(d.Seconds())
	if err != nil {
		m.indexFails.WithLabelValues(indexer).Inc()
	}
}

// Mirror exports the object-storage mirror's state: the subdirs and
// objects it is behind on, how long the oldest change has waited, and the
// conflicting objects found in the bucket.
func (m *Metrics) Mirror(backlog func() (int, time.Duration), objects func() int, conflicts func() int64) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "conda_upload_mirror_backlog_subdirs",
			Help: "Subdirs with changes the object-storage mirror does not hold yet."},
			func() float64 { n, _ := backlog(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "conda_upload_mirror_behind_objects",
			Help: "Files of those subdirs that the bucket does not hold (a lower bound)."},
			func() float64 { return float64(objects()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "conda_upload_mirror_lag_seconds",
			Help: "How long the oldest change not yet in the object-storage mirror has waited."},
			func() float64 { _, d := backlog(); return d.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "conda_upload_mirror_conflicts",
			Help: "Objects in the bucket that differ from the package or shard of the same name (an alarm)."},
			func() float64 { return float64(conflicts()) }),
	)
}

// Housekeeping exports what retention removed and what emptying the trash
// removed for good.
func (m *Metrics) Housekeeping(removed, trashFiles, trashBytes func() float64) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "conda_upload_retention_removed_total",
			Help: "Package files removed from labels by retention rules (moved to .trash)."}, removed),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "conda_upload_trash_emptied_files_total",
			Help: "Files removed for good from .trash after trash_retention."}, trashFiles),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "conda_upload_trash_emptied_bytes_total",
			Help: "Bytes of those files."}, trashBytes),
	)
}

// CertExpiry sets the certificate's expiry time.
func (m *Metrics) CertExpiry(t time.Time) {
	if m != nil {
		m.certExpiry.Set(float64(t.Unix()))
	}
}

// DownloadCounts exports the package downloads counted (internal/stats),
// which survive restarts, as a counter read when scraped.
func (m *Metrics) DownloadCounts(total func() uint64) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "conda_package_downloads_total",
		Help: "Package downloads counted for the channel's pages: GETs answered 200, and 206 once per file, client and day.",
	}, func() float64 { return float64(total()) }))
}
