package proxy

import (
	"cmp"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Status is what `admin proxy status` and the upstream's page show of an
// upstream: how it is configured, whether it can be reached, and what its
// cache holds.
type Status struct {
	Name    string   `json:"name"`
	URL     string   `json:"url"`
	Mode    string   `json:"mode"` // "proxy" or "mirror"
	Subdirs []string `json:"subdirs"`
	Include []string `json:"include,omitempty"`
	Exclude []string `json:"exclude,omitempty"`
	// IndexTTL is how long an index file is fresh, in seconds.
	IndexTTL  float64 `json:"index_ttl_seconds"`
	Reachable bool    `json:"reachable"`
	Failure   string  `json:"failure,omitempty"`
	// UnreachableSince is when a fetch last failed for want of the
	// upstream, while it cannot be reached.
	UnreachableSince *time.Time `json:"unreachable_since,omitempty"`
	// IndexConfirmed is when the upstream last confirmed or replaced an
	// index file, if it has since the start.
	IndexConfirmed *time.Time `json:"index_confirmed,omitempty"`
	CachedPackages int        `json:"cached_packages"`
	CachedBytes    int64      `json:"cached_bytes"`
	CacheSize      int64      `json:"cache_size"`
	// LastSync and SyncError are of the last mirror sync, if any.
	LastSync  *time.Time `json:"last_sync,omitempty"`
	SyncError string     `json:"sync_error,omitempty"`
}

// Status reports the upstream's state and its cache's.
func (p *Proxy) Status() Status {
	n, b := p.lru.stats()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{Name: p.up.Name, URL: p.up.URL, Mode: "proxy", Subdirs: p.up.Subdirs, Include: p.up.Include, Exclude: p.up.Exclude,
		IndexTTL: p.up.IndexTTL.Seconds(), Reachable: p.failure == "", Failure: p.failure,
		CachedPackages: n, CachedBytes: b, CacheSize: p.up.CacheSize, SyncError: p.syncErr}
	if p.up.Mirror {
		s.Mode = "mirror"
	}
	at := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	s.LastSync, s.IndexConfirmed = at(p.syncedAt), at(p.okAt)
	if p.failure != "" {
		s.UnreachableSince = at(p.failedAt)
	}
	return s
}

// Cached is a package the cache holds.
type Cached struct {
	Subdir, Filename string
	Size             int64
	// Used is when it was last served or fetched.
	Used time.Time
	// Labels are the upstream's labels seen listing it since the start
	// ("" is its channel root), sorted.
	Labels []string
}

// Cached lists the packages the cache holds, by filename and then subdir,
// from the cache's bookkeeping in memory: the disk is not read.
func (p *Proxy) Cached() []Cached {
	l := p.lru
	l.mu.Lock()
	out := make([]Cached, 0, len(l.items))
	for k, it := range l.items {
		subdir, fn, _ := strings.Cut(k, "/")
		out = append(out, Cached{Subdir: subdir, Filename: fn, Size: it.size, Used: it.used, Labels: slices.Sorted(maps.Keys(it.labels))})
	}
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b Cached) int {
		return cmp.Or(strings.Compare(a.Filename, b.Filename), strings.Compare(a.Subdir, b.Subdir))
	})
	return out
}

// Purge empties the upstream's cache: packages, shards and index files.
// Requests in flight may still complete into it.
func (p *Proxy) Purge() error {
	err := p.lru.purge()
	p.mu.Lock()
	clear(p.shards)
	p.mu.Unlock()
	for _, d := range []string{"index", "shards"} {
		err = errors.Join(err, os.RemoveAll(filepath.Join(p.dir, d)))
	}
	return err
}

// IndexAge is how long ago the upstream last confirmed or replaced an
// index file, in seconds; -1 if it never has since the start.
func (p *Proxy) IndexAge() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.okAt.IsZero() {
		return -1
	}
	return time.Since(p.okAt).Seconds()
}
