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

// The functions below do the file work. None takes a lock: the caller
// serializes every change to one package's sidecars with the changes to
// the package itself (internal/store holds one lock for both), so that an
// attestation never lands on bytes that have just been replaced.

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
// repodata after, reading the digest to put there with Current at that
// time, so that of two additions the index names the later.
//
// The package must be there: a sidecar never outlives its package.
func Add(pkgPath string, bundle []byte) (Published, error) {
	return merge(pkgPath, [][]byte{bundle})
}

// Carry brings the sidecars of the package at from to the same bytes at
// to, as a copy between labels does: when to has no sidecar yet, every
// file is linked (the content-addressed ones first), else the elements
// to lacks are appended to its own, in from's order. Nothing happens
// when from has no sidecar.
func Carry(from, to string) error {
	b, err := readLimited(from + Suffix)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := os.Lstat(to + Suffix); errors.Is(err, fs.ErrNotExist) {
		return link(from, to)
	}
	elems, err := Elements(b)
	if err != nil {
		return fmt.Errorf("%s: %w", from+Suffix, err)
	}
	_, err = merge(to, elems)
	return err
}

// link hard-links every sidecar file of from beside to, .sigs last.
func link(from, to string) error {
	paths, err := Paths(from)
	if err != nil {
		return err
	}
	for _, p := range append(paths[1:], paths[0]) { // Paths lists .sigs first
		dst := to + strings.TrimPrefix(p, from)
		if err := os.Link(p, dst); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return atomicfile.SyncDir(filepath.Dir(to))
}

// merge appends bundles to the package's sidecar, and publishes the result.
func merge(pkgPath string, bundles [][]byte) (Published, error) {
	if !Fits(filepath.Base(pkgPath)) {
		return Published{}, ErrNameTooLong
	}
	if _, err := os.Stat(pkgPath); err != nil {
		return Published{}, fmt.Errorf("no package to attest: %w", err)
	}
	mutable := pkgPath + Suffix
	current, err := readLimited(mutable)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Published{}, err
	}
	p := Published{Mutable: mutable}
	next := current
	for _, b := range bundles {
		var added bool
		if next, added, err = Append(next, b); err != nil {
			return Published{}, fmt.Errorf("%s: %w", mutable, err)
		}
		p.Added = p.Added || added
	}
	p.SHA256 = Digest(next)
	p.Immutable = Immutable(pkgPath, p.SHA256)
	if err := writeImmutable(p.Immutable, next); err != nil {
		return Published{}, err
	}
	if p.Added {
		if err := atomicfile.Write(mutable, next); err != nil {
			return Published{}, err
		}
	}
	return p, nil
}

// Current returns the digest of the package's current sidecar, and false
// when it has none: what the record's attestations_sha256 must be.
func Current(pkgPath string) (string, bool, error) {
	b, ok, err := Read(pkgPath)
	if !ok || err != nil {
		return "", false, err
	}
	return Digest(b), true, nil
}

// Read returns the bytes of the package's current sidecar, <file>.sigs,
// reading at most MaxSize, and false when it has none.
func Read(pkgPath string) ([]byte, bool, error) {
	b, err := readLimited(pkgPath + Suffix)
	// A file name too long for a sidecar name has none.
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENAMETOOLONG) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// Paths returns the sidecar files of the package at pkgPath (the mutable
// one first, if there, then every content-addressed one), for what moves,
// copies or deletes a package with its sidecars.
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

// IsName reports whether name (a base name) is a sidecar file of a
// package: <file>.sigs or <file>.sigs.<sha256>; it returns the package's
// file name and whether the name is the content-addressed one.
func IsName(name string) (pkg string, immutable, ok bool) {
	if base, ok := strings.CutSuffix(name, Suffix); ok {
		return base, false, true
	}
	i := strings.LastIndex(name, Suffix+".")
	if i < 0 || !isDigest(name[i+len(Suffix)+1:]) {
		return "", false, false
	}
	return name[:i], true, true
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
