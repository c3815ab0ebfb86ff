package quota

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// LabelUsage is a label's usage and quota; a zero maximum is no limit.
type LabelUsage struct {
	Label    string `json:"label"`
	Bytes    int64  `json:"bytes"`
	Files    int64  `json:"files"`
	MaxBytes int64  `json:"max_bytes,omitempty"`
	MaxFiles int64  `json:"max_files,omitempty"`
}

// UploaderUsage is a token's or publisher's bytes today (UTC) and quota.
type UploaderUsage struct {
	Name        string `json:"name"`
	Date        string `json:"date"`
	Bytes       int64  `json:"bytes"`
	BytesPerDay int64  `json:"bytes_per_day"`
}

// Usage is every quota's usage, for the admin API and the metrics.
type Usage struct {
	Labels    []LabelUsage    `json:"labels"`
	Uploaders []UploaderUsage `json:"uploaders"`
}

// Usage returns the usage of every existing label a quota covers, and of
// every uploader with a quota that uploaded today. Reservations of
// uploads in flight are included.
func (l *Ledger) Usage() Usage {
	out := Usage{Labels: []LabelUsage{}, Uploaders: []UploaderUsage{}}
	if l == nil {
		return out
	}
	labels := l.existingLabels()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, label := range labels {
		q, ok := l.labelLimit(label)
		if !ok {
			continue
		}
		t := l.labelUsage(label).total()
		out.Labels = append(out.Labels, LabelUsage{Label: label, Bytes: t.bytes, Files: t.files, MaxBytes: q.MaxBytes, MaxFiles: q.MaxFiles})
	}
	today := l.o.Now().UTC().Format(time.DateOnly)
	for who, d := range l.days {
		if q, ok := l.uploaderLimit(who); ok && d.date == today {
			out.Uploaders = append(out.Uploaders, UploaderUsage{Name: who, Date: d.date, Bytes: d.bytes, BytesPerDay: q.BytesPerDay})
		}
	}
	slices.SortFunc(out.Uploaders, func(a, b UploaderUsage) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// existingLabels lists main and the label folders on disk.
func (l *Ledger) existingLabels() []string {
	labels := []string{store.MainLabel}
	des, _ := os.ReadDir(filepath.Join(l.o.Root, store.LabelDir))
	for _, de := range des {
		if de.IsDir() && store.ValidLabel(de.Name()) {
			labels = append(labels, de.Name())
		}
	}
	return labels
}
