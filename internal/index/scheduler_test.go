package index_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/index"
)

// gateRunner is a stand-in Runner whose runs block until released, and
// which records what each run saw.
type gateRunner struct {
	mu       sync.Mutex
	runs     []string // subdir of each run, in start order
	started  chan string
	release  chan error // each run returns what it receives
	arrivals *index.Arrivals
	pending  []int // Arrivals.Count() at the start of each run
	notes    []index.Package
}

func newGate() *gateRunner {
	return &gateRunner{started: make(chan string, 100), release: make(chan error)}
}

func (g *gateRunner) Run(ctx context.Context, subdir string) error {
	g.mu.Lock()
	g.runs = append(g.runs, subdir)
	g.pending = append(g.pending, g.arrivals.Count())
	g.mu.Unlock()
	g.started <- subdir
	select {
	case err := <-g.release:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gateRunner) Has(subdir, filename string) (bool, error) { return true, nil }
func (g *gateRunner) Name() string                              { return "gate" }

func (g *gateRunner) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.runs)
}

// noteRunner is a gateRunner that also takes package notes.
type noteRunner struct{ *gateRunner }

func (n noteRunner) NotePackage(p index.Package) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.notes = append(n.notes, p)
	return nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitResult runs wait in a goroutine and returns a channel for its error.
func waitResult(wait func(context.Context) error) <-chan error {
	c := make(chan error, 1)
	go func() { c <- wait(context.Background()) }()
	return c
}

func expectStart(t *testing.T, g *gateRunner, subdir string) {
	t.Helper()
	select {
	case s := <-g.started:
		if s != subdir {
			t.Fatalf("run of %s started, want %s", s, subdir)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no run of %s started", subdir)
	}
}

func expectNoResult(t *testing.T, c <-chan error, what string) {
	t.Helper()
	select {
	case err := <-c:
		t.Fatalf("%s returned early: %v", what, err)
	case <-time.After(50 * time.Millisecond):
	}
}

func expectResult(t *testing.T, c <-chan error, want error, what string) {
	t.Helper()
	select {
	case err := <-c:
		if !errors.Is(err, want) && (want != nil || err != nil) {
			t.Fatalf("%s: %v, want %v", what, err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

// TestCoalescing: requests made while a run is going share one follow-up
// run, and each waiter is released by the first run that started after
// its request, with that run's error.
func TestCoalescing(t *testing.T) {
	g := newGate()
	s := index.New(g, quiet())
	defer s.Close()

	first := waitResult(s.Request("linux-64"))
	expectStart(t, g, "linux-64")
	// Five requests while the first run is going.
	var later []<-chan error
	for range 5 {
		later = append(later, waitResult(s.Request("linux-64")))
	}
	errFirst := errors.New("first run failed")
	g.release <- errFirst
	expectResult(t, first, errFirst, "the first waiter")
	for i, c := range later {
		expectNoResult(t, c, fmt.Sprintf("waiter %d, whose request came during the first run,", i))
	}
	expectStart(t, g, "linux-64")
	g.release <- nil
	for i, c := range later {
		expectResult(t, c, nil, fmt.Sprintf("waiter %d", i))
	}
	if n := g.count(); n != 2 {
		t.Errorf("%d runs for 6 requests, want 2", n)
	}
	if s.Runs() != 2 || s.Failures() != 1 {
		t.Errorf("Runs %d Failures %d, want 2 and 1", s.Runs(), s.Failures())
	}
}

// TestSubdirsIndependent: a run of one subdir does not hold up another.
func TestSubdirsIndependent(t *testing.T) {
	g := newGate()
	s := index.New(g, quiet())
	defer s.Close()
	a := waitResult(s.Request("linux-64"))
	expectStart(t, g, "linux-64")
	b := waitResult(s.Request("noarch"))
	expectStart(t, g, "noarch")
	g.release <- nil
	g.release <- nil
	expectResult(t, a, nil, "linux-64")
	expectResult(t, b, nil, "noarch")
}

// TestTimeout: a run that outlives its timeout is cancelled, and its
// waiters get an error that says so.
func TestTimeout(t *testing.T) {
	g := newGate()
	s := index.New(g, quiet(), index.WithTimeout(100*time.Millisecond))
	defer s.Close()
	err := s.Index(context.Background(), "linux-64")
	if err == nil || !strings.Contains(err.Error(), "timed out after 100ms") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want a timeout", err)
	}
	if s.Failures() != 1 || s.Stuck() {
		t.Errorf("Failures %d Stuck %v", s.Failures(), s.Stuck())
	}
}

// TestClose: Close cancels the run going, and waiters for runs that will
// never happen are released with an error.
func TestClose(t *testing.T) {
	g := newGate()
	s := index.New(g, quiet())
	a := waitResult(s.Request("linux-64"))
	expectStart(t, g, "linux-64")
	b := waitResult(s.Request("linux-64"))
	s.Close()
	expectResult(t, a, context.Canceled, "the waiter of the cancelled run")
	expectResult(t, b, context.Canceled, "the waiter of the run that never started")
}

// TestArrivals: a run waits for uploads still arriving (up to its settle
// time), so a burst shares a run; a lone upload that has stopped counting
// is not held up.
func TestArrivals(t *testing.T) {
	g := newGate()
	arrivals := &index.Arrivals{}
	g.arrivals = arrivals
	s := index.New(g, quiet(), index.WithArrivals(arrivals))
	defer s.Close()

	end := arrivals.Begin()
	w := waitResult(s.Request("linux-64"))
	time.Sleep(10 * time.Millisecond)
	end() // the arriving upload is stored before the settle time is up
	expectStart(t, g, "linux-64")
	g.release <- nil
	expectResult(t, w, nil, "the run")
	if g.pending[0] != 0 {
		t.Errorf("the run started with %d uploads still arriving", g.pending[0])
	}

	// An upload that never finishes holds a run up for the settle time
	// only.
	stuck := arrivals.Begin()
	defer stuck()
	start := time.Now()
	w = waitResult(s.Request("linux-64"))
	expectStart(t, g, "linux-64")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("run held up %s by an upload that never finishes", d)
	}
	g.release <- nil
	expectResult(t, w, nil, "the second run")
	if g.pending[1] != 1 {
		t.Errorf("the second run saw %d uploads arriving, want 1", g.pending[1])
	}
}

// TestPublishedNotes: Published hands the package to a runner that takes
// notes, and asks for a run of its subdir.
func TestPublishedNotes(t *testing.T) {
	g := newGate()
	s := index.New(noteRunner{g}, quiet())
	defer s.Close()
	w := waitResult(s.Published(index.Package{Subdir: "noarch", Filename: "a-1-0.conda", SHA256: "ab"}))
	expectStart(t, g, "noarch")
	g.release <- nil
	expectResult(t, w, nil, "the run")
	if len(g.notes) != 1 || g.notes[0].Filename != "a-1-0.conda" {
		t.Errorf("notes %+v", g.notes)
	}
	// A runner without notes gets the run only.
	g2 := newGate()
	s2 := index.New(g2, quiet())
	defer s2.Close()
	w = waitResult(s2.Published(index.Package{Subdir: "noarch", Filename: "a-1-0.conda"}))
	expectStart(t, g2, "noarch")
	g2.release <- nil
	expectResult(t, w, nil, "the run without notes")
}
