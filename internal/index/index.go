// Package index re-indexes channel subdirs after uploads, one run at a time
// per subdir, coalescing the uploads that arrive during a run into a single
// follow-up run.
//
// conda-index has no locking of its own ("trust users to not run
// concurrently"), and a burst of CI uploads would otherwise start one run
// each. Here each subdir has at most one run going and at most one queued;
// every upload waits for the first run that started after its package was
// stored, so when its response says "indexed", repodata.json lists it.
package index

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// A Runner indexes one subdir of the channel.
type Runner interface {
	// Run brings subdir's repodata.json up to date with the files on disk.
	Run(ctx context.Context, subdir string) error
	// Has reports whether the subdir's index lists filename.
	Has(subdir, filename string) (bool, error)
	// Name says which indexer this is, for logs and responses.
	Name() string
}

// Indexer schedules runs of a Runner.
type Indexer struct {
	r       Runner
	timeout time.Duration
	log     *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	subdirs map[string]*subdir

	runs     atomic.Int64
	failures atomic.Int64
	observe  func(indexer string, d time.Duration, err error)
	pending  func() int64
}

// maxSettle bounds how long a run waits for uploads still in progress.
const maxSettle = 50 * time.Millisecond

// WaitFor sets a function that counts uploads still being received or
// checked, which may soon ask for a run. Before starting a run, the
// Indexer waits (up to 50 ms) until that count is zero, so that a burst of
// uploads is indexed in a few runs rather than one run each; a lone upload
// never waits. Call it before the first Request.
func (ix *Indexer) WaitFor(pending func() int64) { ix.pending = pending }

// OnRun sets a function called after every index run, for metrics. Call
// it before the first Request.
func (ix *Indexer) OnRun(f func(indexer string, d time.Duration, err error)) { ix.observe = f }

type subdir struct {
	requested uint64 // generation asked for by the latest request
	started   uint64 // generation covered by the run going or last run
	completed uint64 // generation covered by the last finished run
	running   bool
	lastErr   error
	done      chan struct{} // closed and replaced when a run finishes
	runStart  time.Time
}

// New returns an Indexer. Each run gets at most timeout.
func New(r Runner, timeout time.Duration, log *slog.Logger) *Indexer {
	ctx, cancel := context.WithCancel(context.Background())
	return &Indexer{r: r, timeout: timeout, log: log, ctx: ctx, cancel: cancel, subdirs: make(map[string]*subdir)}
}

// Name returns the runner's name.
func (ix *Indexer) Name() string { return ix.r.Name() }

// Runs returns the number of index runs started so far.
func (ix *Indexer) Runs() int64 { return ix.runs.Load() }

// Failures returns the number of failed runs so far.
func (ix *Indexer) Failures() int64 { return ix.failures.Load() }

// Stuck reports whether a run has been going for longer than its timeout,
// which means the timeout failed to stop it.
func (ix *Indexer) Stuck() bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, sd := range ix.subdirs {
		if sd.running && time.Since(sd.runStart) > ix.timeout+30*time.Second {
			return true
		}
	}
	return false
}

// Request asks for a run of subdir that starts after now, and returns a
// function that waits for it and returns its error.
func (ix *Indexer) Request(name string) func(context.Context) error {
	ix.mu.Lock()
	sd, ok := ix.subdirs[name]
	if !ok {
		sd = &subdir{done: make(chan struct{})}
		ix.subdirs[name] = sd
	}
	sd.requested++
	want := sd.requested
	if !sd.running {
		sd.running = true
		ix.wg.Add(1)
		go ix.loop(name, sd)
	}
	ix.mu.Unlock()
	return func(ctx context.Context) error {
		for {
			ix.mu.Lock()
			if sd.completed >= want {
				err := sd.lastErr
				ix.mu.Unlock()
				return err
			}
			done := sd.done
			ix.mu.Unlock()
			select {
			case <-done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// Index runs (or joins) an index run of subdir that includes everything
// stored before the call, and waits for it.
func (ix *Indexer) Index(ctx context.Context, subdir string) error {
	return ix.Request(subdir)(ctx)
}

// Has reports whether the subdir's index lists filename.
func (ix *Indexer) Has(subdir, filename string) (bool, error) { return ix.r.Has(subdir, filename) }

func (ix *Indexer) loop(name string, sd *subdir) {
	defer ix.wg.Done()
	for {
		ix.mu.Lock()
		if sd.started >= sd.requested || ix.ctx.Err() != nil {
			sd.running = false
			if ix.ctx.Err() != nil && sd.completed < sd.requested {
				sd.completed, sd.lastErr = sd.requested, fmt.Errorf("index %s: %w", name, ix.ctx.Err())
				close(sd.done)
				sd.done = make(chan struct{})
			}
			ix.mu.Unlock()
			return
		}
		ix.mu.Unlock()
		if ix.pending != nil {
			deadline := time.Now().Add(maxSettle)
			for ix.pending() > 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		ix.mu.Lock()
		gen := sd.requested
		sd.started = gen
		sd.runStart = time.Now()
		ix.mu.Unlock()

		ix.runs.Add(1)
		err := ix.run(name)

		ix.mu.Lock()
		sd.completed, sd.lastErr = gen, err
		close(sd.done)
		sd.done = make(chan struct{})
		ix.mu.Unlock()
	}
}

func (ix *Indexer) run(name string) error {
	ctx, cancel := context.WithTimeout(ix.ctx, ix.timeout)
	defer cancel()
	start := time.Now()
	err := ix.r.Run(ctx, name)
	d := time.Since(start)
	if ix.observe != nil {
		ix.observe(ix.r.Name(), d, err)
	}
	if err != nil {
		ix.failures.Add(1)
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("index run of %s timed out after %s: %w", name, ix.timeout, err)
		}
		ix.log.Error("index run failed", "indexer", ix.r.Name(), "subdir", name, "duration", d, "err", err)
		return err
	}
	ix.log.Info("index run done", "indexer", ix.r.Name(), "subdir", name, "duration", d)
	return nil
}

// Close cancels running index runs (stopping their child processes) and
// waits for them.
func (ix *Indexer) Close() {
	ix.cancel()
	ix.wg.Wait()
}
