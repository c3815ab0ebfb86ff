// Package index schedules index runs of channel subdirs after uploads: one
// run at a time per subdir, with the uploads that arrive during a run
// coalesced into a single follow-up run.
//
// conda-index has no locking of its own ("trust users to not run
// concurrently"), and a burst of CI uploads would otherwise start one run
// each. Here each subdir has at most one run going and at most one queued;
// every upload waits for the first run that started after its package was
// stored, so when its response says "indexed", repodata.json lists it.
// With [Arrivals], a run about to start waits a moment (at most 50 ms) for
// uploads still being received, so that a burst shares a few runs.
//
// What runs is a [Runner]: the built-in repodata writer, or [Command],
// which starts conda. A Runner that can use what the upload already learnt
// about a package (its index.json and digests) implements [PackageNoter];
// the Scheduler finds that out by type assertion, so the HTTP side needs to
// know nothing about any particular indexer.
package index

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// A Runner indexes one subdir of the channel.
type Runner interface {
	// Run brings subdir's index files up to date with the files on disk.
	Run(ctx context.Context, subdir string) error
	// Has reports whether the subdir's index lists filename.
	Has(subdir, filename string) (bool, error)
	// Name says which indexer this is, for logs and responses.
	Name() string
}

// Package is what an upload learnt about a package it has just stored.
type Package struct {
	Subdir, Filename string
	// Info is the stored file's, so that a note is used only while the
	// file is still the one described.
	Info      fs.FileInfo
	IndexJSON []byte
	// RunExports is info/run_exports.json, or nil if the package has none.
	RunExports []byte
	// Channel is what channeldata.json takes from the package
	// (condapkg.Info.Channel).
	Channel []byte
	Size    int64
	MD5     string // hex
	SHA256  string // hex
}

// A PackageNoter is a Runner that can take a stored package's metadata
// from the upload instead of reading the file again.
type PackageNoter interface {
	NotePackage(Package) error
}

// Scheduler schedules the runs of a Runner.
type Scheduler struct {
	r        Runner
	timeout  time.Duration
	log      *slog.Logger
	arrivals *Arrivals
	observe  func(indexer string, d time.Duration, err error)
	afterRun func(subdir string, err error)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	subdirs map[string]*subdir

	runs     atomic.Int64
	failures atomic.Int64
}

// An Option configures a Scheduler.
type Option func(*Scheduler)

// WithTimeout bounds each run; the default is ten minutes.
func WithTimeout(d time.Duration) Option { return func(s *Scheduler) { s.timeout = d } }

// WithArrivals lets runs wait briefly for uploads still arriving, so that
// a burst of uploads is indexed in a few runs rather than one run each.
func WithArrivals(a *Arrivals) Option { return func(s *Scheduler) { s.arrivals = a } }

// WithAfterRun sets a function called with the subdir and outcome of
// every run, as the object-storage mirror needs.
func WithAfterRun(f func(subdir string, err error)) Option {
	return func(s *Scheduler) { s.afterRun = f }
}

// WithObserver sets a function called after every run, for metrics.
func WithObserver(f func(indexer string, d time.Duration, err error)) Option {
	return func(s *Scheduler) { s.observe = f }
}

type subdir struct {
	requested uint64 // generation asked for by the latest request
	started   uint64 // generation covered by the run going or last run
	completed uint64 // generation covered by the last finished run
	running   bool
	lastErr   error
	done      chan struct{} // closed and replaced when a run finishes
	runStart  time.Time
}

// New returns a Scheduler for r.
func New(r Runner, log *slog.Logger, opts ...Option) *Scheduler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{r: r, timeout: 10 * time.Minute, log: log, ctx: ctx, cancel: cancel, subdirs: make(map[string]*subdir)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Name returns the runner's name.
func (s *Scheduler) Name() string { return s.r.Name() }

// Runs returns the number of runs started so far.
func (s *Scheduler) Runs() int64 { return s.runs.Load() }

// Failures returns the number of failed runs so far.
func (s *Scheduler) Failures() int64 { return s.failures.Load() }

// Stuck reports whether a run has been going for longer than its timeout,
// which means the timeout failed to stop it.
func (s *Scheduler) Stuck() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sd := range s.subdirs {
		if sd.running && !sd.runStart.IsZero() && time.Since(sd.runStart) > s.timeout+30*time.Second {
			return true
		}
	}
	return false
}

// Published tells the runner about a package just stored (if it wants to
// know) and asks for a run of its subdir. The returned function waits for
// that run and returns its error.
func (s *Scheduler) Published(p Package) func(context.Context) error {
	if n, ok := s.r.(PackageNoter); ok {
		if err := n.NotePackage(p); err != nil {
			// Only an optimisation: the run reads the file instead.
			s.log.Warn("indexer did not take the package's metadata", "subdir", p.Subdir, "filename", p.Filename, "err", err)
		}
	}
	return s.Request(p.Subdir)
}

// Request asks for a run of subdir that starts after now, and returns a
// function that waits for it and returns its error.
func (s *Scheduler) Request(name string) func(context.Context) error {
	s.mu.Lock()
	sd, ok := s.subdirs[name]
	if !ok {
		sd = &subdir{done: make(chan struct{})}
		s.subdirs[name] = sd
	}
	sd.requested++
	want := sd.requested
	if !sd.running {
		sd.running = true
		s.wg.Add(1)
		go s.loop(name, sd)
	}
	s.mu.Unlock()
	return func(ctx context.Context) error {
		for {
			s.mu.Lock()
			if sd.completed >= want {
				err := sd.lastErr
				s.mu.Unlock()
				return err
			}
			done := sd.done
			s.mu.Unlock()
			select {
			case <-done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// Index runs (or joins) a run of subdir that includes everything stored
// before the call, and waits for it.
func (s *Scheduler) Index(ctx context.Context, subdir string) error {
	return s.Request(subdir)(ctx)
}

// Has reports whether the subdir's index lists filename.
func (s *Scheduler) Has(subdir, filename string) (bool, error) { return s.r.Has(subdir, filename) }

func (s *Scheduler) loop(name string, sd *subdir) {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if sd.started >= sd.requested || s.ctx.Err() != nil {
			sd.running = false
			if s.ctx.Err() != nil && sd.completed < sd.requested {
				sd.completed, sd.lastErr = sd.requested, fmt.Errorf("index %s: %w", name, s.ctx.Err())
				close(sd.done)
				sd.done = make(chan struct{})
			}
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.arrivals.settle(s.ctx, maxSettle)
		s.mu.Lock()
		gen := sd.requested
		sd.started = gen
		sd.runStart = time.Now()
		s.mu.Unlock()

		s.runs.Add(1)
		err := s.run(name)

		s.mu.Lock()
		sd.completed, sd.lastErr = gen, err
		sd.runStart = time.Time{}
		close(sd.done)
		sd.done = make(chan struct{})
		s.mu.Unlock()
	}
}

func (s *Scheduler) run(name string) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	start := time.Now()
	err := s.r.Run(ctx, name)
	d := time.Since(start)
	if s.observe != nil {
		s.observe(s.r.Name(), d, err)
	}
	if s.afterRun != nil {
		s.afterRun(name, err)
	}
	if err != nil {
		s.failures.Add(1)
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("index run of %s timed out after %s: %w", name, s.timeout, err)
		}
		s.log.Error("index run failed", "indexer", s.r.Name(), "subdir", name, "duration", d, "err", err)
		return err
	}
	s.log.Info("index run done", "indexer", s.r.Name(), "subdir", name, "duration", d)
	return nil
}

// Close cancels running runs (stopping their child processes) and waits
// for them.
func (s *Scheduler) Close() {
	s.cancel()
	s.wg.Wait()
}
