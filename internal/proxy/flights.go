package proxy

import (
	"context"
	"net/http"
	"sync"
)

var errInterrupted = &Error{Status: http.StatusBadGateway, Msg: "the fetch from the upstream was interrupted"}

// flights makes concurrent requests for one file fetch it once: the
// first runs the fetch, the others wait for its outcome.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	err  error
}

// do runs fn for key unless a run for key is in flight, and returns the
// outcome of the run it waited for. A caller whose ctx ends stops
// waiting; the run goes on.
func (fl *flights) do(ctx context.Context, key string, fn func() error) error {
	f, leader := fl.join(key)
	if leader {
		// Should fn panic (a client cut off on purpose), the waiting
		// callers still get an answer.
		f.err = errInterrupted
		defer func() {
			fl.mu.Lock()
			delete(fl.m, key)
			fl.mu.Unlock()
			close(f.done)
		}()
		f.err = fn()
		return f.err
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// busy reports whether a run for key is in flight.
func (fl *flights) busy(key string) bool {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	_, ok := fl.m[key]
	return ok
}

// join returns the flight of key, and whether the caller leads it.
func (fl *flights) join(key string) (*flight, bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if f, ok := fl.m[key]; ok {
		return f, false
	}
	if fl.m == nil {
		fl.m = map[string]*flight{}
	}
	f := &flight{done: make(chan struct{})}
	fl.m[key] = f
	return f, true
}
