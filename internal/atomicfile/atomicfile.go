// Package atomicfile replaces small files so that a reader, or a crash,
// sees the old file or the new one, never a mix: write a temp file in the
// same directory, fsync it, rename it over the name, fsync the directory.
// Pending does the same in two halves, for large files written early and
// put in place later.
//
// It also holds the Linux calls that spread or batch the cost of making
// writes durable (sync_file_range, fdatasync, syncfs), for the store and
// the repodata writer, so that they sit behind one build tag: on another
// system they return an error that wraps errors.ErrUnsupported.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data, readable by everyone (channel files are
// served as they are). The temp file is named .<name>.tmp-*, which
// RemoveStale removes after a crash.
func Write(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// RemoveStale deletes the temp files (.<name>.tmp-*) that a crash left in
// dir. It is for the start, before anything writes there.
func RemoveStale(dir string) error {
	matches, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	if err != nil {
		return err
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// SyncDir makes the entries of dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// Pending is a file written under a temp name, whose writeback to the
// disk has been started but not waited for: Commit makes it durable and
// puts it in place. A large file prepared early is on the disk by the
// time it is committed, so the fsync then costs little.
type Pending struct {
	f    *os.File
	path string
}

// Prepare writes data to a temp file beside path and starts its
// writeback.
func Prepare(path string, data []byte) (*Pending, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	p := &Pending{f: f, path: path}
	if _, err := f.Write(data); err != nil {
		p.Abort()
		return nil, err
	}
	if err := f.Chmod(0o644); err != nil {
		p.Abort()
		return nil, err
	}
	// Start writeback and return: a hint, so its error is not final
	// (Commit's fsync is).
	StartWriteback(f, 0, 0)
	return p, nil
}

// Commit makes the file durable, renames it over its path and makes the
// rename durable.
func (p *Pending) Commit() error {
	if err := p.f.Sync(); err != nil {
		p.Abort()
		return err
	}
	if err := p.f.Close(); err != nil {
		os.Remove(p.f.Name())
		return err
	}
	if err := os.Rename(p.f.Name(), p.path); err != nil {
		os.Remove(p.f.Name())
		return err
	}
	return SyncDir(filepath.Dir(p.path))
}

// Abort removes the temp file; after Commit it does nothing harmful.
func (p *Pending) Abort() {
	if p == nil {
		return
	}
	p.f.Close()
	os.Remove(p.f.Name())
}
