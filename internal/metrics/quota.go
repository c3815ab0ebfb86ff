package metrics

import (
	"github.com/conda-upload-server/conda-upload-server/internal/quota"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	labelBytes = prometheus.NewDesc("conda_upload_label_bytes", "Bytes of the package files a label with a quota holds (with uploads in flight).", []string{"label"}, nil)
	labelFiles = prometheus.NewDesc("conda_upload_label_files", "Package files a label with a quota holds (with uploads in flight).", []string{"label"}, nil)
	labelMaxB  = prometheus.NewDesc("conda_upload_label_quota_bytes", "A label's max_bytes (label_quotas); absent if none.", []string{"label"}, nil)
	labelMaxF  = prometheus.NewDesc("conda_upload_label_quota_files", "A label's max_files (label_quotas); absent if none.", []string{"label"}, nil)
	dayBytes   = prometheus.NewDesc("conda_upload_uploader_bytes_today", "Bytes a token or trusted publisher with a quota uploaded today (UTC).", []string{"token"}, nil)
	dayMax     = prometheus.NewDesc("conda_upload_uploader_quota_bytes_per_day", "Its bytes_per_day (upload_quotas).", []string{"token"}, nil)
)

// Quotas exports the usage of the quotas, read at each scrape. The
// uploaders' usage, by token name, only if the operator allows token
// names in the metrics.
func (m *Metrics) Quotas(l *quota.Ledger) {
	if m != nil && l != nil {
		m.reg.MustRegister(quotaCollector{l, m.tokenNames})
	}
}

type quotaCollector struct {
	l          *quota.Ledger
	tokenNames bool
}

func (c quotaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{labelBytes, labelFiles, labelMaxB, labelMaxF, dayBytes, dayMax} {
		ch <- d
	}
}

func (c quotaCollector) Collect(ch chan<- prometheus.Metric) {
	u := c.l.Usage()
	gauge := func(d *prometheus.Desc, v int64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), label)
	}
	for _, l := range u.Labels {
		gauge(labelBytes, l.Bytes, l.Label)
		gauge(labelFiles, l.Files, l.Label)
		if l.MaxBytes > 0 {
			gauge(labelMaxB, l.MaxBytes, l.Label)
		}
		if l.MaxFiles > 0 {
			gauge(labelMaxF, l.MaxFiles, l.Label)
		}
	}
	if !c.tokenNames {
		return
	}
	for _, w := range u.Uploaders {
		gauge(dayBytes, w.Bytes, w.Name)
		gauge(dayMax, w.BytesPerDay, w.Name)
	}
}
