// Package store puts uploaded packages into the channel on disk so that
// nothing half-written is ever visible and nothing is ever overwritten.
//
// An upload streams into a temp file in WRITE_DIR/.incoming, on the same
// file system as the channel. (The subdir of a .conda is known only once
// its zip central directory, at the end of the upload, has been read, so
// the temp file cannot start out in the target subdir.) Publishing fsyncs
// the file, hard-links it to WRITE_DIR/<subdir>/<filename> with link(2),
// which fails instead of replacing an existing name, and fsyncs the subdir.
// A crash at any point leaves either no package or a complete one, plus at
// most a temp file that Open removes at the next start.
package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// IncomingDir is the folder inside the channel root that holds uploads in
// progress.
const IncomingDir = ".incoming"

// ErrExists is returned by Publish when a different file already has the
// name. The existing file is left untouched.
var ErrExists = errors.New("a different package with this filename already exists")

// Store is a channel directory.
type Store struct {
	root     string
	incoming string
	// chunks recycles the buffers of Receive between uploads, so that a
	// steady stream of uploads allocates (and clears) no new memory.
	chunks sync.Pool
}

// Open prepares the channel at root and removes the temp files of uploads
// that a crash interrupted.
func Open(root string) (*Store, error) {
	s := &Store{root: root, incoming: filepath.Join(root, IncomingDir)}
	s.chunks.New = func() any { return &chunk{b: make([]byte, chunkSize)} }
	// The channel is served read-only by a web server: world-readable.
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("create channel %s: %w", root, err)
	}
	if err := os.Mkdir(s.incoming, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", s.incoming, err)
	}
	des, err := os.ReadDir(s.incoming)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", s.incoming, err)
	}
	for _, de := range des {
		if err := os.RemoveAll(filepath.Join(s.incoming, de.Name())); err != nil {
			return nil, fmt.Errorf("remove stale upload: %w", err)
		}
	}
	return s, nil
}

// Root returns the channel root.
func (s *Store) Root() string { return s.root }

// CheckWritable creates and removes a file in the incoming folder, to tell
// at start, and for health checks, whether uploads can be stored.
func (s *Store) CheckWritable() error {
	f, err := os.CreateTemp(s.incoming, "probe-*")
	if err != nil {
		return fmt.Errorf("channel is not writable: %w", err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("channel is not writable: %w", err)
	}
	return nil
}

// Upload is a package being received. Call Abort when done with it in any
// case; after a successful Publish it only closes the file.
type Upload struct {
	s    *Store
	f    *os.File
	done bool
}

// Create starts an upload.
func (s *Store) Create() (*Upload, error) {
	f, err := os.CreateTemp(s.incoming, "upload-*.part")
	if err != nil {
		return nil, fmt.Errorf("create temp file: %w", err)
	}
	return &Upload{s: s, f: f}, nil
}

// File returns the temp file, for reading back what was received.
func (u *Upload) File() *os.File { return u.f }

// Abort removes the temp file.
func (u *Upload) Abort() {
	if u.done {
		return
	}
	u.done = true
	u.f.Close()
	os.Remove(u.f.Name())
}

// Outcome says what Publish did.
type Outcome int

const (
	// Created means the package is new.
	Created Outcome = iota + 1
	// Identical means a byte-identical package was already there.
	Identical
)

// Publish makes the upload visible as subdir/filename, which the caller
// has validated. sha256 is the hex digest of the upload, used to tell an
// identical re-upload from a conflicting one.
func (u *Upload) Publish(subdir, filename, sha256hex string) (Outcome, fs.FileInfo, error) {
	if strings.ContainsAny(subdir, `/\`) || strings.ContainsAny(filename, `/\`) || subdir == ".." || subdir == "." || strings.HasPrefix(filename, ".") {
		return 0, nil, fmt.Errorf("refusing unsafe path %q/%q", subdir, filename)
	}
	if err := u.f.Sync(); err != nil {
		return 0, nil, fmt.Errorf("fsync upload: %w", err)
	}
	if err := u.f.Chmod(0o644); err != nil { // readable by the web server that serves the channel
		return 0, nil, fmt.Errorf("chmod upload: %w", err)
	}
	dir := filepath.Join(u.s.root, subdir)
	if err := mkdirSynced(dir); err != nil {
		return 0, nil, err
	}
	final := filepath.Join(dir, filename)
	err := os.Link(u.f.Name(), final)
	switch {
	case errors.Is(err, fs.ErrExist):
		same, err := sameContent(final, sha256hex)
		if err != nil {
			return 0, nil, err
		}
		if !same {
			return 0, nil, ErrExists
		}
		fi, err := os.Stat(final)
		if err != nil {
			return 0, nil, err
		}
		u.Abort()
		return Identical, fi, nil
	case err != nil:
		return 0, nil, fmt.Errorf("publish %s/%s: %w", subdir, filename, err)
	}
	u.done = true
	u.f.Close()
	if err := os.Remove(u.f.Name()); err != nil {
		return 0, nil, fmt.Errorf("remove temp file: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return 0, nil, err
	}
	fi, err := os.Stat(final)
	if err != nil {
		return 0, nil, err
	}
	return Created, fi, nil
}

func sameContent(path, sha256hex string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("hash existing %s: %w", filepath.Base(path), err)
	}
	want, err := hex.DecodeString(sha256hex)
	if err != nil {
		return false, err
	}
	return bytes.Equal(h.Sum(nil), want), nil
}

// mkdirSynced creates dir if needed and makes its entry durable.
func mkdirSynced(dir string) error {
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create subdir: %w", err)
	}
	return syncDir(filepath.Dir(dir))
}

func syncDir(dir string) error {
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

// IsNoSpace reports whether err means the file system is full.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
