package mirror

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// pending is a subdir with changes the bucket does not have yet.
type pending struct {
	since time.Time // the oldest change not synced
	gen   uint64    // bumped by every Mark
}

// Mark records that dir changed (an index run finished), for Run to sync.
func (m *Mirror) Mark(dir string) {
	m.qmu.Lock()
	p, ok := m.dirty[dir]
	if !ok {
		p = &pending{since: m.now()}
		m.dirty[dir] = p
	}
	p.gen++
	m.qmu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Backlog returns the number of subdirs the bucket is behind on, and how
// long the oldest change has waited.
func (m *Mirror) Backlog() (int, time.Duration) {
	m.qmu.Lock()
	defer m.qmu.Unlock()
	var oldest time.Duration
	for _, p := range m.dirty {
		oldest = max(oldest, m.now().Sub(p.since))
	}
	return len(m.dirty), oldest
}

// BehindObjects counts the files of the subdirs the bucket is behind on
// that it does not hold: missing, or of another size (an index file of
// the same size with other bytes is not seen, so this is a lower bound).
// It lists those folders, so it is for a metrics scrape, not a hot path.
func (m *Mirror) BehindObjects() int {
	m.qmu.Lock()
	dirs := slices.Collect(maps.Keys(m.dirty))
	m.qmu.Unlock()
	n := 0
	for _, dir := range dirs {
		des, err := os.ReadDir(filepath.Join(m.root, dir))
		if err != nil {
			continue
		}
		for _, de := range des {
			if de.IsDir() || strings.HasPrefix(de.Name(), ".") {
				continue
			}
			fi, err := de.Info()
			if err != nil {
				continue
			}
			m.omu.Lock()
			o, ok := m.objects[m.key(dir, de.Name())]
			behind := !ok || o.Size != fi.Size()
			m.omu.Unlock()
			if behind {
				n++
			}
		}
	}
	return n
}

// Run syncs marked subdirs until ctx ends: it lists the bucket first
// (and again every reconcileEvery), retries failures with a backoff from
// one second to five minutes, and logs each distinct error once, and the
// recovery.
func (m *Mirror) Run(ctx context.Context, reconcileEvery time.Duration) {
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	backoff := time.Duration(0)
	reconcile := true
	for {
		var err error
		if reconcile {
			if err = m.Reconcile(ctx); err == nil {
				reconcile = false
			}
		}
		if err == nil {
			err = m.syncMarked(ctx)
		}
		m.report(err)
		var retry <-chan time.Time
		if err != nil {
			backoff = min(max(2*backoff, time.Second), 5*time.Minute)
			retry = time.After(backoff)
		} else {
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-tick.C:
			reconcile = true
		case <-retry:
		}
	}
}

// syncMarked syncs every marked subdir once, and unmarks those that did
// not change meanwhile. It returns the first error.
func (m *Mirror) syncMarked(ctx context.Context) error {
	m.qmu.Lock()
	gens := map[string]uint64{}
	for d, p := range m.dirty {
		gens[d] = p.gen
	}
	m.qmu.Unlock()
	var first error
	for _, dir := range slices.Sorted(maps.Keys(gens)) {
		if err := m.Sync(ctx, dir); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		m.qmu.Lock()
		if p, ok := m.dirty[dir]; ok && p.gen == gens[dir] {
			delete(m.dirty, dir)
		}
		close(m.synced)
		m.synced = make(chan struct{})
		m.qmu.Unlock()
	}
	return first
}

// report logs the first error of an outage once (each retry's error,
// which names another key or connection, goes to the debug level), and
// the recovery.
func (m *Mirror) report(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	m.qmu.Lock()
	last := m.lastErr
	m.lastErr = msg
	m.qmu.Unlock()
	switch {
	case msg != "" && last == "":
		m.log.Error("mirror sync failed; retrying", "err", err)
	case msg != "":
		m.log.Debug("mirror sync failed again", "err", err)
	case last != "":
		m.log.Info("mirror caught up after errors")
	}
}

// WaitFor waits until the bucket holds dir/filename or ctx ends, and
// reports whether it does.
func (m *Mirror) WaitFor(ctx context.Context, dir, filename string) bool {
	for {
		m.qmu.Lock()
		synced := m.synced
		m.qmu.Unlock()
		if m.Has(dir, filename) {
			return true
		}
		select {
		case <-synced:
		case <-ctx.Done():
			return m.Has(dir, filename)
		}
	}
}

// Err returns the error of the last attempt, or "".
func (m *Mirror) Err() string {
	m.qmu.Lock()
	defer m.qmu.Unlock()
	return m.lastErr
}
