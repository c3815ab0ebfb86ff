// Package store puts uploaded packages into the channel on disk so that
// nothing half-written is ever visible and no package's bytes are ever
// lost.
//
// An upload streams into a temp file in WRITE_DIR/.incoming, on the same
// file system as the channel, hashed (sha256 and md5) and written back to
// the disk as it arrives. (The subdir of a .conda is known only once its
// zip central directory, at the end of the upload, has been read, so the
// temp file cannot start out in the target subdir.) Publishing fsyncs the
// file, hard-links it to WRITE_DIR/<subdir>/<filename> with link(2), which
// fails instead of replacing an existing name, and fsyncs the subdir. A
// crash at any point leaves either no package or a complete one, plus at
// most a temp file that Open removes at the next start.
//
// A label's subdir is WRITE_DIR/label/<L>/<subdir> (Dir); main's is the
// subdir itself. Nothing is overwritten in place: a forced upload
// (Replace) and a delete first hard-link the old file into
// WRITE_DIR/.trash/<UTC date>/ (Trash).
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
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
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
	// sidecars serializes every change to a package's sidecar with the
	// changes to the package that must not interleave with it
	// (sidecar.go).
	sidecars sync.Mutex
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

// Publish makes the upload visible as dir/filename, where dir is a
// label's subdir as Dir names it and the caller has validated both.
// sha256 is the hex digest of the upload, used to tell an identical
// re-upload from a conflicting one.
func (u *Upload) Publish(dir, filename, sha256hex string) (Outcome, fs.FileInfo, error) {
	if err := checkName(dir, filename); err != nil {
		return 0, nil, err
	}
	if err := u.f.Sync(); err != nil {
		return 0, nil, fmt.Errorf("fsync upload: %w", err)
	}
	if err := u.f.Chmod(0o644); err != nil { // readable by the web server that serves the channel
		return 0, nil, fmt.Errorf("chmod upload: %w", err)
	}
	abs := filepath.Join(u.s.root, dir)
	if err := u.s.MkdirSynced(dir); err != nil {
		return 0, nil, err
	}
	final := filepath.Join(abs, filename)
	err := u.s.link(u.f.Name(), dir, filename)
	switch {
	case errors.Is(err, fs.ErrExist):
		same, fi, err := sameContent(final, sha256hex)
		if err != nil {
			return 0, nil, err
		}
		if !same {
			return 0, nil, ErrExists
		}
		u.Abort()
		return Identical, fi, nil
	case err != nil:
		return 0, nil, fmt.Errorf("publish %s/%s: %w", dir, filename, err)
	}
	u.done = true
	u.f.Close()
	if err := os.Remove(u.f.Name()); err != nil {
		return 0, nil, fmt.Errorf("remove temp file: %w", err)
	}
	if err := atomicfile.SyncDir(abs); err != nil {
		return 0, nil, err
	}
	fi, err := os.Stat(final)
	if err != nil {
		return 0, nil, err
	}
	return Created, fi, nil
}

// TrashDir is the folder inside the channel root that keeps the bytes of
// packages replaced or deleted, by UTC date: nothing is ever destroyed by
// the server, only moved aside.
const TrashDir = ".trash"

// Replace puts the upload in place of an existing dir/filename, as a
// forced upload with the overwrite scope asks. The old file is first
// hard-linked into WRITE_DIR/.trash/<UTC date>/<label>/<subdir>/, so that a
// crash at any point leaves the old bytes or the new ones in place and
// the old ones never lost; then the upload is renamed over it. It returns
// the new file's info and where the old bytes went (relative to the
// channel root), or Identical with no trash if the bytes are the same.
func (u *Upload) Replace(dir, filename, sha256hex string, now time.Time) (Outcome, fs.FileInfo, string, error) {
	if err := checkName(dir, filename); err != nil {
		return 0, nil, "", err
	}
	final := filepath.Join(u.s.root, dir, filename)
	if same, fi, err := sameContent(final, sha256hex); err == nil && same {
		u.Abort()
		return Identical, fi, "", nil
	}
	if err := u.f.Sync(); err != nil {
		return 0, nil, "", fmt.Errorf("fsync upload: %w", err)
	}
	if err := u.f.Chmod(0o644); err != nil {
		return 0, nil, "", fmt.Errorf("chmod upload: %w", err)
	}
	rel, err := u.s.Trash(dir, filename, now)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, nil, "", err
	}
	if err := u.s.swap(u.f.Name(), dir, filename, now); err != nil {
		return 0, nil, "", err
	}
	u.done = true
	u.f.Close()
	if err := atomicfile.SyncDir(filepath.Dir(final)); err != nil {
		return 0, nil, "", err
	}
	fi, err := os.Stat(final)
	if err != nil {
		return 0, nil, "", err
	}
	return Created, fi, rel, nil
}

// Trash hard-links dir/name into .trash/<UTC date>/<label>/<subdir>/
// (with a numbered suffix if that name is taken) and makes the link
// durable. It returns the link's path relative to the channel root.
func (s *Store) Trash(dir, name string, now time.Time) (string, error) {
	if err := checkName(dir, name); err != nil {
		return "", err
	}
	path := filepath.Join(s.root, dir, name)
	label, subdir := SplitDir(dir)
	abs := filepath.Join(s.root, TrashDir, now.UTC().Format("2006-01-02"), label, subdir)
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("create trash: %w", err)
	}
	for i := 0; ; i++ {
		dst := filepath.Join(abs, name)
		if i > 0 {
			dst += fmt.Sprintf(".%d", i)
		}
		err := os.Link(path, dst)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("keep old bytes in trash: %w", err)
		}
		if err := atomicfile.SyncDir(abs); err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(s.root, dst)
		return rel, nil
	}
}

func checkName(dir, filename string) error {
	label, subdir := SplitDir(dir)
	if !ValidLabel(label) || strings.ContainsAny(subdir, `/\`) || strings.ContainsAny(filename, `/\`) || subdir == ".." || subdir == "." || subdir == "" || (label == MainLabel && subdir == LabelDir) ||
		strings.HasPrefix(subdir, ".") || strings.HasPrefix(filename, ".") || filename == "" {
		return fmt.Errorf("refusing unsafe path %q/%q", dir, filename)
	}
	return nil
}

// sameContent reports whether the file at path has the digest
// sha256hex, and returns the info of the file it hashed.
func sameContent(path, sha256hex string) (bool, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, nil, fmt.Errorf("hash existing %s: %w", filepath.Base(path), err)
	}
	want, err := hex.DecodeString(sha256hex)
	if err != nil {
		return false, nil, err
	}
	return bytes.Equal(h.Sum(nil), want), fi, nil
}

// MkdirSynced creates dir (relative to the root) and its parents if
// needed, and makes each new entry durable.
func (s *Store) MkdirSynced(dir string) error {
	cur := s.root
	for _, part := range strings.Split(filepath.ToSlash(dir), "/") {
		next := filepath.Join(cur, part)
		err := os.Mkdir(next, 0o755)
		switch {
		case errors.Is(err, fs.ErrExist):
		case err != nil:
			return fmt.Errorf("create %s: %w", dir, err)
		default:
			if err := atomicfile.SyncDir(cur); err != nil {
				return err
			}
		}
		cur = next
	}
	return nil
}

// IsNoSpace reports whether err means the file system is full.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
