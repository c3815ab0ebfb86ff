package index

import (
	"context"
	"sync"
	"time"
)

// maxSettle bounds how long a run waits for uploads still arriving.
const maxSettle = 50 * time.Millisecond

// Arrivals counts uploads still being received or checked, which may soon
// ask for a run. A run about to start waits (up to 50 ms) until none is
// left, so that a burst of uploads shares a few runs; a lone upload, which
// stops counting before it asks for its run, never waits.
//
// The zero value is ready to use; a nil *Arrivals counts nothing.
type Arrivals struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed while n == 0; nil means closed
}

// Begin counts one upload until the returned function is called (once or
// more; later calls do nothing).
func (a *Arrivals) Begin() (end func()) {
	if a == nil {
		return func() {}
	}
	a.mu.Lock()
	if a.n == 0 {
		a.idle = make(chan struct{})
	}
	a.n++
	a.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			a.n--
			if a.n == 0 {
				close(a.idle)
			}
			a.mu.Unlock()
		})
	}
}

// Count returns the number of uploads counted now.
func (a *Arrivals) Count() int {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// settle waits until no upload is counted, for at most max.
func (a *Arrivals) settle(ctx context.Context, max time.Duration) {
	if a == nil {
		return
	}
	a.mu.Lock()
	if a.n == 0 {
		a.mu.Unlock()
		return
	}
	idle := a.idle
	a.mu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-ctx.Done():
	}
}
