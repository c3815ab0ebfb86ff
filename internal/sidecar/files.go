package sidecar

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
)

// Published is a package's current sidecar after Add.
type Published struct {
	SHA256 string // attestations_sha256, and the suffix of Immutable
	// Immutable and Mutable are the paths of <file>.sigs.<sha256> and
	// <file>.sigs.
	Immutable, Mutable string
	// Added is false when the bundle was already in the sidecar.
	Added bool
}

// Immutable returns the path of pkgPath's content-addressed sidecar of
// the given digest.
func Immutable(pkgPath, sha string) string { return pkgPath + Suffix + "." + sha }

// Add appends bundle to the sidecar of the package at pkgPath and
// publishes it: first the content-addressed copy, then the mutable
// <file>.sigs, each replaced atomically and durably. The caller updates
// repodata after, and reads the digest to put there with Current at that
// time, so that of two concurrent additions the index names the later.
//
// Additions to the packages of one directory are serialized by LockDir.
// The package must be there: a sidecar never outlives its package.
func Add(pkgPath string, bundle []byte) (Published, error) {
	unlock, err := LockDir(filepath.Dir(pkgPath))
	if err != nil {
		return Published{}, err
	}
	defer unlock()
	if _, err := os.Stat(pkgPath); err != nil {
		return Published{}, fmt.Errorf("no package to attest: %w", err)
	}
	mutable := pkgPath + Suffix
	current, err := readLimited(mutable)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Published{}, err
	}
	next, added, err := Append(current, bundle)
	if err != nil {
		return Published{}, fmt.Errorf("%s: %w", mutable, err)
	}
	p := Published{SHA256: Digest(next), Mutable: mutable, Added: added}
	p.Immutable = Immutable(pkgPath, p.SHA256)
	if err := writeImmutable(p.Immutable, next); err != nil {
		return Published{}, err
	}
	if added {
		if err := atomicfile.Write(mutable, next); err != nil {
			return Published{}, err
		}
	}
	return p, nil
}

// Current returns the digest of the package's current sidecar, and false
// when it has none: what the record's attestations_sha256 must be.
func Current(pkgPath string) (string, bool, error) {
	b, err := readLimited(pkgPath + Suffix)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return Digest(b), true, nil
}

// Paths returns the sidecar files of the package at pkgPath (the mutable
// one and every content-addressed one), for what moves, copies or deletes
// a package with its sidecars.
func Paths(pkgPath string) ([]string, error) {
	var out []string
	if _, err := os.Lstat(pkgPath + Suffix); err == nil {
		out = append(out, pkgPath+Suffix)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Dir(pkgPath))
	if err != nil {
		return nil, err
	}
	prefix := filepath.Base(pkgPath) + Suffix + "."
	for _, e := range entries { // in name order
		if name, ok := strings.CutPrefix(e.Name(), prefix); ok && isDigest(name) {
			out = append(out, filepath.Join(filepath.Dir(pkgPath), e.Name()))
		}
	}
	return out, nil
}

// writeImmutable writes the content-addressed copy unless it is there
// already with these bytes: its bytes never change once published.
func writeImmutable(path string, data []byte) error {
	old, err := readLimited(path)
	if err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return atomicfile.Write(path, data)
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%s: %w", path, ErrTooLarge)
	}
	return b, nil
}

// LockDir takes an exclusive flock(2) on dir and returns its release. It
// holds across goroutines and processes, and leaves no lock file in the
// channel. Add takes it; what moves, replaces or deletes a package with its
// sidecars takes it too, so that no addition lands in between.
func LockDir(dir string) (func(), error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		d.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	// Closing the descriptor releases the lock.
	return func() { d.Close() }, nil
}

func isDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}
