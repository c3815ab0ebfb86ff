// Package stats counts package downloads per file, per package and per
// day, for the channel's pages, its JSON endpoint and Prometheus.
//
// The download path only touches memory: Record adds one to a few maps
// under a mutex. A loop appends what was counted since the last flush to
// an append-only log every few seconds, as one checksummed frame written
// with a single write, so that a kill -9 loses at most the counts of the
// last interval, and a torn frame at the end (a crash, or power lost
// before the page cache reached the disk) is cut off at the next start
// instead of corrupting what came before. The log is rewritten compactly
// (through atomicfile, so a crash sees the old log or the new one) when
// it has grown to twice its compacted size.
//
// What is counted is decided by the caller's hook (a GET of a package
// file answered 200 or 206); a range request counts once per file, per
// client address and per day, since a client resuming or splitting a
// download fetches several ranges of one file. Per-day detail is kept
// for Retention days; older days are folded into each file's total.
//
// An append-only file was chosen over an embedded B+tree store
// (go.etcd.io/bbolt) by measurement; see the package's benchmarks and
// BENCHMARKS.md.
package stats

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
)

// LogName is the file, in Options.Dir, that holds the counts.
const LogName = "downloads.log"

// Options configures a Counter.
type Options struct {
	// Dir holds the log; it is created if missing.
	Dir string
	// FlushEvery is how often counts are appended to the log; 2 s if 0.
	FlushEvery time.Duration
	// Retention is how many days of per-day counts are kept; 400 if 0.
	Retention int
	// MaxClients bounds the memory that de-duplicates range requests
	// within a day; past it, every range is counted. 1,000,000 if 0.
	MaxClients int
	Logger     *slog.Logger
}

// Day is a day as the number of days since 1970-01-01 UTC. Day 0 holds
// the counts of days older than the retention, folded together.
type Day uint32

// DayOf returns the UTC day of t.
func DayOf(t time.Time) Day { return Day(t.Unix() / 86400) }

// Time returns the start of d.
func (d Day) Time() time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

// key is one file's count on one day. File is "<subdir>/<filename>".
type key struct {
	file string
	day  Day
}

type pkgDay struct {
	name string
	day  Day
}

type rangeKey struct {
	file, client string
}

// Counter holds the counts in memory and persists them.
type Counter struct {
	o   Options
	log *logFile

	mu       sync.Mutex
	pending  map[key]uint64
	fileDay  map[key]uint64
	fileTot  map[string]uint64
	pkgTot   map[string]uint64
	pkgDay   map[pkgDay]uint64
	dayTot   map[Day]uint64
	total    uint64
	seenDay  Day
	seen     map[rangeKey]struct{}
	failures uint64

	flushMu sync.Mutex // one flush or compaction at a time
	stop    chan struct{}
	done    chan struct{}
}

// Open reads the log in o.Dir, cutting off a torn frame at its end, and
// starts the flush loop. Close stops it and flushes.
func Open(o Options) (*Counter, error) {
	if o.FlushEvery <= 0 {
		o.FlushEvery = 2 * time.Second
	}
	if o.Retention <= 0 {
		o.Retention = 400
	}
	if o.MaxClients <= 0 {
		o.MaxClients = 1_000_000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("download counts: %w", err)
	}
	c := &Counter{o: o, pending: map[key]uint64{}, fileDay: map[key]uint64{}, fileTot: map[string]uint64{},
		pkgTot: map[string]uint64{}, pkgDay: map[pkgDay]uint64{}, dayTot: map[Day]uint64{}, seen: map[rangeKey]struct{}{},
		stop: make(chan struct{}), done: make(chan struct{})}
	lf, err := openLog(filepath.Join(o.Dir, LogName), c.add)
	if err != nil {
		return nil, fmt.Errorf("download counts: %w", err)
	}
	c.log = lf
	if lf.cut > 0 {
		o.Logger.Warn("download counts: cut off a torn frame at the end of the log", "bytes", lf.cut)
	}
	go c.loop()
	return c, nil
}

// Countable returns the file a channel path names, as "<subdir>/<filename>",
// if it is a package; a label's copy is the same file as main's.
// rel is the request path without its leading slash.
func Countable(rel string) (string, bool) {
	if rest, ok := strings.CutPrefix(rel, "label/"); ok {
		_, rel, _ = strings.Cut(rest, "/")
	}
	subdir, fn, ok := strings.Cut(rel, "/")
	if !ok || !condapkg.IsKnownSubdir(subdir) {
		return "", false
	}
	if _, err := condapkg.ParseFilename(fn); err != nil {
		return "", false
	}
	return rel, true
}

// Record counts one download of file ("<subdir>/<filename>") by client
// (its address) at now. A ranged request counts only if client has not
// fetched a range of file yet that day.
func (c *Counter) Record(file, client string, ranged bool, now time.Time) {
	d := DayOf(now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if ranged {
		if d != c.seenDay {
			c.seenDay, c.seen = d, map[rangeKey]struct{}{}
		}
		rk := rangeKey{file, client}
		if _, ok := c.seen[rk]; ok {
			return
		}
		if len(c.seen) < c.o.MaxClients {
			c.seen[rk] = struct{}{}
		}
	}
	k := key{file, d}
	c.pending[k]++
	c.add(k, 1)
}

// add adds n to every count k is part of; c.mu is held or not yet shared.
func (c *Counter) add(k key, n uint64) {
	c.fileDay[k] += n
	c.fileTot[k.file] += n
	name := packageName(k.file)
	c.pkgTot[name] += n
	c.pkgDay[pkgDay{name, k.day}] += n
	c.dayTot[k.day] += n
	c.total += n
}

// packageName returns the package name of "<subdir>/<filename>".
func packageName(file string) string {
	_, fn, _ := strings.Cut(file, "/")
	f, err := condapkg.ParseFilename(fn)
	if err != nil {
		return ""
	}
	return f.Name
}

func (c *Counter) loop() {
	defer close(c.done)
	t := time.NewTicker(c.o.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			if err := c.Flush(); err != nil {
				c.o.Logger.Error("download counts: flush", "err", err)
			}
		}
	}
}

// Flush appends the counts recorded since the last flush to the log, and
// compacts the log when it has grown enough. On failure the counts stay
// pending, for the next flush.
func (c *Counter) Flush() error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	c.mu.Lock()
	batch := c.pending
	c.pending = map[key]uint64{}
	c.mu.Unlock()
	if len(batch) > 0 {
		if written, err := c.log.append(batch); err != nil {
			c.mu.Lock()
			for k, n := range batch {
				if !written {
					c.pending[k] += n
				}
			}
			c.failures++
			c.mu.Unlock()
			return err
		}
	}
	if c.log.size < 2*c.log.compacted || c.log.size < 1<<20 {
		return nil
	}
	return c.compact(time.Now())
}

// compact folds the days older than the retention into day 0 and
// rewrites the log as one frame of what is held in memory.
func (c *Counter) compact(now time.Time) error {
	oldest := DayOf(now) - Day(c.o.Retention)
	c.mu.Lock()
	for k, n := range c.fileDay {
		if k.day != 0 && k.day < oldest {
			delete(c.fileDay, k)
			c.fileDay[key{k.file, 0}] += n
		}
	}
	for k, n := range c.pkgDay {
		if k.day != 0 && k.day < oldest {
			delete(c.pkgDay, k)
			c.pkgDay[pkgDay{k.name, 0}] += n
		}
	}
	for d, n := range c.dayTot {
		if d != 0 && d < oldest {
			delete(c.dayTot, d)
			c.dayTot[0] += n
		}
	}
	all := make(map[key]uint64, len(c.fileDay))
	for k, n := range c.fileDay {
		all[k] = n
	}
	// Pending counts are in fileDay already: the rewritten log holds
	// them, so they must not be appended again.
	c.pending = map[key]uint64{}
	c.mu.Unlock()
	return c.log.rewrite(all)
}

// Close stops the flush loop, flushes and closes the log.
func (c *Counter) Close() error {
	close(c.stop)
	<-c.done
	err := c.Flush()
	if cerr := c.log.close(); err == nil {
		err = cerr
	}
	return err
}
