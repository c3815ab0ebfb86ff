// Package quota bounds what a label may hold (bytes and files) and what a
// token or trusted publisher may upload in a UTC day (bytes). Any upload
// token could otherwise fill the disk, or a nightly label grow without
// end.
//
// An upload reserves its size before it is published, under one lock, and
// the reservation stays counted until the label is counted again from the
// disk; a refused or failed upload releases it. So concurrent uploads
// cannot all pass a check that each alone would pass: the usage they see
// includes each other's reservations.
//
// A label's usage is counted from the disk: at first use, and again after
// each index run of the label (every change to a label, by upload, copy,
// move, delete or retention, ends in one), so that no change needs to
// report to the quota. The bytes per day are counted in memory, and start
// again at zero when the server restarts.
package quota

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// LabelLimit is what the labels a glob matches may each hold; zero is no
// limit.
type LabelLimit struct {
	Label    string
	MaxBytes int64
	MaxFiles int64
}

// UploaderLimit is the bytes a token or trusted publisher may upload in a
// UTC day. Name "*" applies to each one no other limit names.
type UploaderLimit struct {
	Name        string
	BytesPerDay int64
}

// LabelFull is the error of an upload past a label's quota.
type LabelFull struct {
	Label              string
	What               string // "bytes" or "files"
	Quota, Used, Added int64
}

func (e *LabelFull) Error() string {
	return fmt.Sprintf("label %s quota exceeded: max_%s %d, used %d, this upload adds %d", e.Label, e.What, e.Quota, e.Used, e.Added)
}

// DailyExceeded is the error of an upload past a token's or publisher's
// bytes per day.
type DailyExceeded struct {
	Name               string
	Quota, Used, Added int64
	Reset              time.Time
}

func (e *DailyExceeded) Error() string {
	return fmt.Sprintf("upload quota of %s exceeded: bytes_per_day %d, used %d today (UTC), this upload adds %d", e.Name, e.Quota, e.Used, e.Added)
}

// IsLabelFull and IsDailyExceeded tell the quota errors apart.
func IsLabelFull(err error) bool { return errors.As(err, new(*LabelFull)) }

// IsDailyExceeded reports whether err is a *DailyExceeded.
func IsDailyExceeded(err error) bool { return errors.As(err, new(*DailyExceeded)) }

// Options set up a Ledger.
type Options struct {
	Root      string
	Subdirs   []string
	Labels    []LabelLimit
	Uploaders []UploaderLimit
	Now       func() time.Time
}

// usage is a label's usage: what the disk held when last counted, what
// was stored since, and what uploads in flight have reserved.
type usage struct {
	disk, stored, inflight amount
	counted                bool
}

type amount struct{ bytes, files int64 }

func (a *amount) add(b amount) { a.bytes += b.bytes; a.files += b.files }
func (a *amount) sub(b amount) { a.bytes -= b.bytes; a.files -= b.files }

// total is the usage an upload is checked against.
func (u *usage) total() amount {
	t := u.disk
	t.add(u.stored)
	t.add(u.inflight)
	return t
}

// day is an uploader's bytes on one UTC day.
type day struct {
	date  string
	bytes int64
}

// Ledger keeps the usage and the reservations.
type Ledger struct {
	o      Options
	mu     sync.Mutex
	labels map[string]*usage
	days   map[string]*day
}

// New returns a Ledger, or nil if there are no limits.
func New(o Options) *Ledger {
	if len(o.Labels) == 0 && len(o.Uploaders) == 0 {
		return nil
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Ledger{o: o, labels: map[string]*usage{}, days: map[string]*day{}}
}

// labelLimit returns the first limit whose glob matches label.
func (l *Ledger) labelLimit(label string) (LabelLimit, bool) {
	for _, q := range l.o.Labels {
		if ok, _ := path.Match(q.Label, label); ok {
			return q, true
		}
	}
	return LabelLimit{}, false
}

// uploaderLimit returns the limit of a token's name; a trusted publisher's
// tokens are named "oidc:<publisher>".
func (l *Ledger) uploaderLimit(name string) (UploaderLimit, bool) {
	var star *UploaderLimit
	for i, q := range l.o.Uploaders {
		if q.Name == name || "oidc:"+q.Name == name {
			return q, true
		}
		if q.Name == "*" && star == nil {
			star = &l.o.Uploaders[i]
		}
	}
	if star != nil {
		return UploaderLimit{Name: name, BytesPerDay: star.BytesPerDay}, true
	}
	return UploaderLimit{}, false
}

// Changed marks the folder dir (store.Dir) as changed: its label is
// counted from the disk again at its next use.
func (l *Ledger) Changed(dir string) {
	if l == nil {
		return
	}
	label, _ := store.SplitDir(dir)
	l.mu.Lock()
	if u, ok := l.labels[label]; ok {
		u.counted = false
	}
	l.mu.Unlock()
}

// count sums the package files of label's subdirs on disk.
func (l *Ledger) count(label string) amount {
	var bytes, files int64
	for _, s := range l.o.Subdirs {
		des, err := os.ReadDir(filepath.Join(l.o.Root, store.Dir(label, s)))
		if err != nil {
			continue
		}
		for _, de := range des {
			if !de.Type().IsRegular() || strings.HasPrefix(de.Name(), ".") {
				continue
			}
			if _, err := condapkg.ParseFilename(de.Name()); err != nil {
				continue
			}
			if fi, err := de.Info(); err == nil {
				bytes += fi.Size()
				files++
			}
		}
	}
	return amount{bytes, files}
}
