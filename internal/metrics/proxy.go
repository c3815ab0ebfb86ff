package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// ProxyMetrics are the metrics of the proxied upstream channels; it is
// the proxies' Observer.
type ProxyMetrics struct {
	cache   *prometheus.CounterVec
	fetched *prometheus.CounterVec
	errors  *prometheus.CounterVec
	stale   *prometheus.CounterVec
	reg     *prometheus.Registry
}

// Proxy registers the proxy metrics; nil if m is.
func (m *Metrics) Proxy() *ProxyMetrics {
	if m == nil {
		return nil
	}
	p := &ProxyMetrics{reg: m.reg}
	p.cache = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "conda_upload_proxy_requests_total",
		Help: "Requests for upstream files, by upstream, kind (index, shard, package) and result (hit: served from the cache)."},
		[]string{"upstream", "kind", "result"})
	p.fetched = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "conda_upload_proxy_fetched_bytes_total",
		Help: "Bytes read from upstreams."}, []string{"upstream"})
	p.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "conda_upload_proxy_upstream_errors_total",
		Help: "Failed or refused fetches from upstreams, by reason (unreachable, timeout, status, redirect, invalid, invalid_record, digest)."},
		[]string{"upstream", "reason"})
	p.stale = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "conda_upload_proxy_stale_served_total",
		Help: "Index files served stale because their upstream could not be reached."}, []string{"upstream"})
	m.reg.MustRegister(p.cache, p.fetched, p.errors, p.stale)
	return p
}

// Cache counts a request for an upstream file.
func (p *ProxyMetrics) Cache(upstream, kind string, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	p.cache.WithLabelValues(upstream, kind, result).Inc()
}

// Fetched counts bytes read from an upstream.
func (p *ProxyMetrics) Fetched(upstream string, n int64) {
	p.fetched.WithLabelValues(upstream).Add(float64(n))
}

// UpstreamError counts a failed or refused fetch.
func (p *ProxyMetrics) UpstreamError(upstream, reason string) {
	p.errors.WithLabelValues(upstream, reason).Inc()
}

// Stale counts an index file served stale.
func (p *ProxyMetrics) Stale(upstream string) { p.stale.WithLabelValues(upstream).Inc() }

// IndexAge exports how long ago an upstream last answered an index
// request, in seconds (-1 before it ever has).
func (p *ProxyMetrics) IndexAge(upstream string, age func() float64) {
	p.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "conda_upload_proxy_index_age_seconds",
		Help: "Time since the upstream last confirmed or replaced an index file the proxy serves.", ConstLabels: prometheus.Labels{"upstream": upstream}}, age))
}
