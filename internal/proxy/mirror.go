package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// In mirror mode the proxy fetches every package the upstream's index
// lists (after include and exclude) ahead of time, on a schedule, so that
// an air-gapped site, or one whose upstream is down, has them before
// anyone asks. What is mirrored is served and checked as on demand.

// Run syncs the upstream every interval until ctx ends.
func (p *Proxy) Run(ctx context.Context, interval time.Duration) {
	for {
		if err := p.Sync(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("mirror sync incomplete", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// Sync fetches every package of the upstream's subdirs (its channel
// root) that the cache does not hold, revalidating each repodata.json
// first. It goes on past a package that fails, and reports how many did.
func (p *Proxy) Sync(ctx context.Context) error {
	var errs []error
	fetched := 0
	for _, subdir := range p.up.Subdirs {
		n, err := p.syncSubdir(ctx, subdir)
		fetched += n
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", subdir, err))
		}
	}
	err := errors.Join(errs...)
	p.mu.Lock()
	p.syncedAt, p.syncErr = time.Now(), ""
	if err != nil {
		p.syncErr = err.Error()
	}
	p.mu.Unlock()
	p.log.Info("mirror sync done", "fetched", fetched, "err", err)
	return err
}

// syncSubdir syncs one subdir, and returns how many packages it fetched.
func (p *Proxy) syncSubdir(ctx context.Context, subdir string) (int, error) {
	dir := p.cacheDir("", subdir)
	g := indexGroupOf("repodata.json")
	_, stale, _, err := p.fresh(ctx, dir, g.base, true, func(ctx context.Context, m meta, have bool) error {
		return p.refreshIndex(ctx, "", subdir, dir, g, m, have)
	})
	switch {
	case errors.Is(err, errNotFound):
		return 0, nil // the upstream has no such subdir
	case err != nil:
		return 0, err
	case stale:
		return 0, errors.New("the upstream cannot be reached")
	}
	f, err := os.Open(filepath.Join(dir, recordsFile))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fetched, failed := 0, 0
	var last error
	sc := bufio.NewScanner(f)
	for sc.Scan() && ctx.Err() == nil {
		fn, rec, ok := parseRecord(sc.Text())
		if !ok || p.lru.check(subdir+"/"+fn) {
			continue
		}
		path := filepath.Join(p.dir, "pkgs", subdir, fn)
		err := p.flights.do(ctx, subdir+"/"+fn, func() error { return p.fetchPackage(ctx, "", subdir, fn, rec, path, nil) })
		if err != nil {
			failed, last = failed+1, err
			continue
		}
		fetched++
	}
	if failed > 0 {
		return fetched, fmt.Errorf("%d packages failed, the last: %w", failed, last)
	}
	return fetched, errors.Join(sc.Err(), ctx.Err())
}

// parseRecord reads a line of a records file.
func parseRecord(line string) (string, record, bool) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return "", record{}, false
	}
	n, err := strconv.ParseInt(f[2], 10, 64)
	return f[0], record{Sha256: f[1], Size: n}, err == nil
}
