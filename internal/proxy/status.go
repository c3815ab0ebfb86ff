package proxy

import (
	"errors"
	"os"
	"path/filepath"
	"time"
)

// Status is what `admin proxy status` shows of an upstream.
type Status struct {
	Name           string `json:"name"`
	URL            string `json:"url"`
	Reachable      bool   `json:"reachable"`
	Failure        string `json:"failure,omitempty"`
	CachedPackages int    `json:"cached_packages"`
	CachedBytes    int64  `json:"cached_bytes"`
	CacheSize      int64  `json:"cache_size"`
	// LastSync and SyncError are of the last mirror sync, if any.
	LastSync  *time.Time `json:"last_sync,omitempty"`
	SyncError string     `json:"sync_error,omitempty"`
}

// Status reports the upstream's state and its cache's.
func (p *Proxy) Status() Status {
	n, b := p.lru.stats()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{Name: p.up.Name, URL: p.up.URL, Reachable: p.failure == "", Failure: p.failure,
		CachedPackages: n, CachedBytes: b, CacheSize: p.up.CacheSize, SyncError: p.syncErr}
	if !p.syncedAt.IsZero() {
		t := p.syncedAt.UTC()
		s.LastSync = &t
	}
	return s
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
