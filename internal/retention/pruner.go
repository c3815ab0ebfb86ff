package retention

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// Options set up a Pruner.
type Options struct {
	// Root is the channel's root folder.
	Root  string
	Rules Rules
	// Subdirs are the platform subdirs the channel may hold.
	Subdirs []string
	// Delete removes one file crash-safely and audits it: the admin
	// API's delete.
	Delete func(Removal) error
	// Reindex asks for an index run of a folder (store.Dir) whose
	// files were removed.
	Reindex func(dir string)
	// Again asks for another pass over dir, once an upload that a pass
	// skipped has its answer.
	Again func(dir string)
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Pruner applies the rules to the channel's labels, one pass at a time.
type Pruner struct {
	o       Options
	mu      sync.Mutex // one pass at a time
	removed atomic.Int64

	holdMu   sync.Mutex
	held     map[string]int  // dir/filename of uploads not answered yet
	deferred map[string]bool // dirs of which a pass skipped a held file
}

// New returns a Pruner; nil if there are no rules.
func New(o Options) *Pruner {
	if len(o.Rules) == 0 {
		return nil
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Pruner{o: o, held: map[string]int{}, deferred: map[string]bool{}}
}

// Hold keeps a pass from removing dir/filename until release is called:
// an upload holds its package until its answer, which says it is
// indexed. A pass that skips it has Again ask for another after.
func (p *Pruner) Hold(dir, filename string) (release func()) {
	if p == nil {
		return func() {}
	}
	key := dir + "/" + filename
	p.holdMu.Lock()
	p.held[key]++
	p.holdMu.Unlock()
	return func() {
		p.holdMu.Lock()
		again := false
		if p.held[key]--; p.held[key] <= 0 {
			delete(p.held, key)
			again = p.deferred[dir]
			delete(p.deferred, dir)
		}
		p.holdMu.Unlock()
		if again && p.o.Again != nil {
			p.o.Again(dir)
		}
	}
}

// skip reports whether r is held, and if so defers its dir.
func (p *Pruner) skip(r Removal) bool {
	dir := store.Dir(r.Label, r.Subdir)
	p.holdMu.Lock()
	defer p.holdMu.Unlock()
	if p.held[dir+"/"+r.Filename] == 0 {
		return false
	}
	p.deferred[dir] = true
	return true
}

// Removed is the number of files removed so far, for the metrics.
func (p *Pruner) Removed() int64 {
	if p == nil {
		return 0
	}
	return p.removed.Load()
}

// Covers reports whether a rule may apply to the folder dir (store.Dir).
func (p *Pruner) Covers(dir string) bool {
	label, _ := store.SplitDir(dir)
	return p.o.Rules.Covers(label)
}

// Dirs lists the existing folders of every label's subdirs that a rule
// may apply to.
func (p *Pruner) Dirs() []string {
	labels := []string{store.MainLabel}
	if des, err := os.ReadDir(filepath.Join(p.o.Root, store.LabelDir)); err == nil {
		for _, de := range des {
			if de.IsDir() && store.ValidLabel(de.Name()) {
				labels = append(labels, de.Name())
			}
		}
	}
	var dirs []string
	for _, l := range labels {
		if !p.o.Rules.Covers(l) {
			continue
		}
		for _, s := range p.o.Subdirs {
			if fi, err := os.Stat(filepath.Join(p.o.Root, store.Dir(l, s))); err == nil && fi.IsDir() {
				dirs = append(dirs, store.Dir(l, s))
			}
		}
	}
	return dirs
}

// Plan returns what a pass over dirs (all of Dirs if none) would remove.
func (p *Pruner) Plan(dirs ...string) ([]Removal, error) {
	if len(dirs) == 0 {
		dirs = p.Dirs()
	}
	now := p.o.Now()
	var out []Removal
	for _, dir := range dirs {
		label, subdir := store.SplitDir(dir)
		files, err := Scan(filepath.Join(p.o.Root, dir), p.o.Rules.Ages(label))
		if err != nil {
			return out, fmt.Errorf("retention: %s: %w", dir, err)
		}
		out = append(out, p.o.Rules.Plan(label, subdir, files, now)...)
	}
	return out, nil
}

// Prune removes what the rules remove from dirs (all of Dirs if none),
// and asks for an index run of each folder it changed. It returns what it
// removed; on an error, what it removed before.
func (p *Pruner) Prune(dirs ...string) ([]Removal, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	plan, err := p.Plan(dirs...)
	var done []Removal
	changed := map[string]bool{}
	for _, r := range plan {
		if p.skip(r) {
			continue
		}
		if derr := p.o.Delete(r); derr != nil {
			err = errors.Join(err, fmt.Errorf("retention: delete %s/%s from %s: %w", r.Subdir, r.Filename, r.Label, derr))
			continue
		}
		p.removed.Add(1)
		done = append(done, r)
		changed[store.Dir(r.Label, r.Subdir)] = true
	}
	for dir := range changed {
		p.o.Reindex(dir)
	}
	return done, err
}
