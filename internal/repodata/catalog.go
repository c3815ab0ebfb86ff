package repodata

import (
	"encoding/json"
	"maps"
	"path/filepath"
	"slices"
	"time"
)

// This file is the read side of the index for the channel's pages
// (internal/web): what the Writer holds in memory after a run, so that a
// page never reads a package or an index file again.

// Indexed is one package of a subdir as last indexed.
type Indexed struct {
	Filename string
	Size     int64
	// Mtime is the file's modification time: when it was stored.
	Mtime time.Time
	// Record is its repodata record before patching, and Channel what
	// channeldata.json takes from its about.json. They share the
	// Writer's memory: callers must not change them.
	Record, Channel json.RawMessage
	// Removed says the subdir's patch takes it out of the index (a yank).
	Removed bool
}

// Dirs returns the subdirs the Writer has indexed since it started
// ("linux-64", "label/dev/noarch"), sorted.
func (x *Writer) Dirs() []string {
	x.mu.Lock()
	states := maps.Clone(x.subdirs)
	x.mu.Unlock()
	var out []string
	for k, st := range states {
		st.mu.Lock()
		if st.loaded {
			out = append(out, filepath.ToSlash(k))
		}
		st.mu.Unlock()
	}
	slices.Sort(out)
	return out
}

// existing returns subdir's state, or an empty one that is not kept:
// reading must not make the Writer hold a subdir it never indexed.
func (x *Writer) existing(subdir string) *subdirState {
	x.mu.Lock()
	defer x.mu.Unlock()
	if st, ok := x.subdirs[filepath.FromSlash(subdir)]; ok {
		return st
	}
	return &subdirState{}
}

// Generation returns a number that changes with every run of subdir (0
// before the first), so that a reader can keep what it built from
// Each until the next run.
func (x *Writer) Generation(subdir string) uint64 {
	st := x.existing(subdir)
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.gen
}

// Each calls fn with each indexed package of subdir, by filename, .conda
// files and .tar.bz2 files each in order, while holding the subdir's
// lock: fn must be quick and must not call the Writer.
func (x *Writer) Each(subdir string, fn func(Indexed)) {
	st := x.existing(subdir)
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, list := range [][]listed{st.conda, st.tarbz2} {
		for _, l := range list {
			fn(indexed(l, st))
		}
	}
}

// Lookup returns the indexed package filename of subdir.
func (x *Writer) Lookup(subdir, filename string) (Indexed, bool) {
	st := x.existing(subdir)
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.entries[filename]
	if !ok || e.Record == nil {
		return Indexed{}, false
	}
	return indexed(listed{filename, e}, st), true
}

func indexed(l listed, st *subdirState) Indexed {
	return Indexed{Filename: l.name, Size: l.e.Size, Mtime: time.Unix(0, l.e.Mtime), Record: l.e.Record,
		Channel: l.e.Channel, Removed: st.plan != nil && st.plan.Removed(l.name)}
}
