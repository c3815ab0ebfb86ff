package config

import (
	"path"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/quota"
	"github.com/conda-upload-server/conda-upload-server/internal/retention"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// RetentionConfig is one [[retention]] rule: which builds of a label (and
// optionally of some package names) are kept. See package retention.
type RetentionConfig struct {
	// Label is a label name or a glob; only a rule naming "main" prunes
	// main.
	Label    string   `toml:"label"`
	Packages []string `toml:"packages"`
	KeepLast int      `toml:"keep_last"`
	MaxAge   Duration `toml:"max_age"`
}

// LabelQuotaConfig is one [[label_quotas]] entry: how much a label (or the
// labels a glob matches, each on its own) may hold.
type LabelQuotaConfig struct {
	Label    string   `toml:"label"`
	MaxBytes ByteSize `toml:"max_bytes"`
	MaxFiles int      `toml:"max_files"`
}

// UploadQuotaConfig is one [[upload_quotas]] entry: how many bytes a token
// or trusted publisher (by name; "*" for each one not named) may upload
// in a UTC day.
type UploadQuotaConfig struct {
	Name        string   `toml:"name"`
	BytesPerDay ByteSize `toml:"bytes_per_day"`
}

// RetentionRules returns the [[retention]] rules for package retention.
func (c *Config) RetentionRules() retention.Rules {
	var rs retention.Rules
	for _, r := range c.Retention {
		rs = append(rs, retention.Rule{Label: r.Label, Packages: r.Packages, KeepLast: r.KeepLast, MaxAge: r.MaxAge.D()})
	}
	return rs
}

// LabelLimits returns the [[label_quotas]].
func (c *Config) LabelLimits() []quota.LabelLimit {
	var out []quota.LabelLimit
	for _, q := range c.LabelQuotas {
		out = append(out, quota.LabelLimit{Label: q.Label, MaxBytes: int64(q.MaxBytes), MaxFiles: int64(q.MaxFiles)})
	}
	return out
}

// UploaderLimits returns the [[upload_quotas]].
func (c *Config) UploaderLimits() []quota.UploaderLimit {
	var out []quota.UploaderLimit
	for _, q := range c.UploadQuotas {
		out = append(out, quota.UploaderLimit{Name: q.Name, BytesPerDay: int64(q.BytesPerDay)})
	}
	return out
}

// validateRetention checks the retention rules, trash_retention and the
// quotas.
func (c *Config) validateRetention(add func(format string, args ...any)) {
	if c.TrashRetention < Duration(24*time.Hour) {
		add("trash_retention %s is under a day; deleted packages must stay recoverable for a while", c.TrashRetention.D())
	}
	for i, r := range c.Retention {
		if !validLabelGlob(r.Label) {
			add("retention[%d].label %q is not a label name or glob of them", i, r.Label)
		}
		for _, g := range r.Packages {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				add("retention[%d].packages: %q is not a glob", i, g)
			}
		}
		if r.KeepLast < 0 || r.MaxAge < 0 || (r.KeepLast == 0 && r.MaxAge == 0) {
			add("retention[%d] (label %q) needs keep_last above 0, max_age above 0, or both", i, r.Label)
		}
	}
	for i, q := range c.LabelQuotas {
		if !validLabelGlob(q.Label) {
			add("label_quotas[%d].label %q is not a label name or glob of them", i, q.Label)
		}
		if q.MaxBytes <= 0 && q.MaxFiles <= 0 || q.MaxFiles < 0 {
			add("label_quotas[%d] (label %q) needs max_bytes or max_files above 0", i, q.Label)
		}
	}
	for i, q := range c.UploadQuotas {
		if q.Name == "" {
			add("upload_quotas[%d].name is empty; name a token or trusted publisher, or \"*\"", i)
		}
		if q.BytesPerDay <= 0 {
			add("upload_quotas[%d] (name %q) needs bytes_per_day above 0", i, q.Name)
		}
	}
}

// validLabelGlob reports whether g is a label name, or a glob whose
// characters are those of label names.
func validLabelGlob(g string) bool {
	if _, err := path.Match(g, ""); err != nil || g == "" {
		return false
	}
	return store.ValidLabel(g) || store.ValidLabel(stripGlob(g))
}

func stripGlob(g string) string {
	out := make([]byte, 0, len(g))
	for i := 0; i < len(g); i++ {
		switch g[i] {
		case '*', '?', '[', ']', '^':
			out = append(out, 'x')
		default:
			out = append(out, g[i])
		}
	}
	return string(out)
}
