package proxy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// lru is the package cache's bookkeeping: each package's size and last
// use, the latter kept as the file's access time so that it survives
// restarts.
// Only packages are evicted; index files and shards are small and are
// never.
type lru struct {
	mu    sync.Mutex
	dir   string
	limit int64
	total int64
	items map[string]*lruItem
}

type lruItem struct {
	size int64
	// labels are the upstream's labels ("" is its channel root) whose
	// index was seen to list the package, since the start: one file
	// serves them all, and a label that does not list it may not have
	// it.
	labels map[string]bool
	used   time.Time
	// stamped is when used was last written to the file's access time.
	stamped time.Time
}

// stampEvery is how often a use of a package is written to its file's
// access time: order across a restart needs no finer grain, and a write
// per request was a metadata update on every cache hit.
const stampEvery = time.Minute

// loadLRU reads the packages cached under dir (New has removed the temp
// files of fetches a crash interrupted).
func loadLRU(dir string, subdirs []string, limit int64) (*lru, error) {
	l := &lru{dir: dir, limit: limit, items: map[string]*lruItem{}}
	for _, s := range subdirs {
		sd := filepath.Join(dir, s)
		if err := os.MkdirAll(sd, 0o755); err != nil {
			return nil, err
		}
		entries, err := os.ReadDir(sd)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			fi, err := e.Info()
			if err != nil || !fi.Mode().IsRegular() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			used := lastUse(fi)
			l.items[s+"/"+e.Name()] = &lruItem{size: fi.Size(), used: used, stamped: used}
			l.total += fi.Size()
		}
	}
	return l, nil
}

// touch marks a cached package used, and reports whether it is cached.
// The use is written to the file's access time at most every
// stampEvery, never to its mtime, which gives the package its ETag and
// Last-Modified. The file may still have gone, unless touch wrote: the
// caller that finds it missing removes it.
func (l *lru) touch(key string) bool {
	now := time.Now()
	l.mu.Lock()
	it, ok := l.items[key]
	stamp := ok && now.Sub(it.stamped) >= stampEvery
	if ok {
		it.used = now
	}
	if stamp {
		it.stamped = now
	}
	l.mu.Unlock()
	if stamp && l.gone(key, func(path string) error { return os.Chtimes(path, now, time.Time{}) }) {
		return false
	}
	return ok
}

// check reports whether a package is cached, finding a file gone. It is
// not a use: a mirror's sync asks it of every package.
func (l *lru) check(key string) bool {
	l.mu.Lock()
	_, ok := l.items[key]
	l.mu.Unlock()
	if ok && l.gone(key, func(path string) error { _, err := os.Stat(path); return err }) {
		return false
	}
	return ok
}

// gone runs op on key's file, and forgets key if the file is not there.
func (l *lru) gone(key string, op func(path string) error) bool {
	if err := op(filepath.Join(l.dir, key)); errors.Is(err, fs.ErrNotExist) {
		l.remove(key)
		return true
	}
	return false
}

// add records a package kept, listed in label's index, and evicts the least recently used others
// while the cache is over its limit.
// listedIn reports whether key was seen listed in label's index.
func (l *lru) listedIn(key, label string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	it, ok := l.items[key]
	return ok && it.labels[label]
}

// list records that label's index lists key.
func (l *lru) list(key, label string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if it, ok := l.items[key]; ok {
		if it.labels == nil {
			it.labels = map[string]bool{}
		}
		it.labels[label] = true
	}
}

func (l *lru) add(key string, size int64, label string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if old, ok := l.items[key]; ok {
		// Fetched again (a request that found it missing just before
		// another's fetch put it there): counted once.
		l.total -= old.size
	}
	l.items[key] = &lruItem{size: size, labels: map[string]bool{label: true}, used: now, stamped: now}
	l.total += size
	for l.limit > 0 && l.total > l.limit {
		victim := ""
		for k, it := range l.items {
			if k != key && (victim == "" || it.used.Before(l.items[victim].used)) {
				victim = k
			}
		}
		if victim == "" {
			return
		}
		os.Remove(filepath.Join(l.dir, victim))
		l.total -= l.items[victim].size
		delete(l.items, victim)
	}
}

func (l *lru) remove(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if it, ok := l.items[key]; ok {
		l.total -= it.size
		delete(l.items, key)
	}
}

// stats returns how many packages are cached, and their bytes.
func (l *lru) stats() (int, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.items), l.total
}

// purge removes every cached package.
func (l *lru) purge() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for k := range l.items {
		if err := os.Remove(filepath.Join(l.dir, k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		delete(l.items, k)
	}
	l.total = 0
	return errors.Join(errs...)
}
