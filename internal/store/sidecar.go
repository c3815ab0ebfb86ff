package store

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
)

// A package's sidecars (internal/sidecar: <filename>.sigs and its
// content-addressed revisions <filename>.sigs.<sha256>) hold its
// attestations, a CEP 50 array that only ever grows. Every change to them
// is serialized by the store's lock, so concurrent additions are never
// lost.
//
// A sidecar describes the bytes beside it and nothing else: it goes to
// .trash/ with them when they are replaced or removed, and it is removed
// before they are, so that a crash never leaves one beside other bytes.
// The same lock covers those steps, so that an attestation cannot land
// on a package that a forced upload has just replaced.

// ErrPackageChanged means the package was replaced or removed while an
// attestation for it was on its way; the attestation is not added. It is
// an ErrExists: the client's bytes are no longer the package of that
// name.
var ErrPackageChanged = fmt.Errorf("%w: it was replaced while its attestation was being added, which was not added", ErrExists)

// AddSidecar adds bundle, one Sigstore bundle, to the sidecar of dir/pkg,
// provided dir/pkg is still the file of (as Publish or Replace returned
// it): the immutable revision first, then <filename>.sigs.
func (s *Store) AddSidecar(dir, pkg string, of fs.FileInfo, bundle []byte) error {
	if err := checkName(dir, pkg); err != nil {
		return err
	}
	s.sidecars.Lock()
	defer s.sidecars.Unlock()
	path := filepath.Join(s.root, dir, pkg)
	fi, err := os.Stat(path)
	if err != nil || !os.SameFile(fi, of) {
		return ErrPackageChanged
	}
	_, err = sidecar.Add(path, bundle)
	return err
}

// CarrySidecar brings dir/pkg's attestations to the same package in
// dir to, as a copy between labels does (sidecar.Carry).
func (s *Store) CarrySidecar(from, to, pkg string) error {
	if err := checkName(from, pkg); err != nil {
		return err
	}
	s.sidecars.Lock()
	defer s.sidecars.Unlock()
	return sidecar.Carry(filepath.Join(s.root, from, pkg), filepath.Join(s.root, to, pkg))
}

// RemovePackage removes dir/pkg, whose bytes the caller has kept
// elsewhere (in another label, or in .trash/), and its sidecar, which
// is kept in .trash/ first. The sidecar goes before the package.
func (s *Store) RemovePackage(dir, pkg string, now time.Time) error {
	s.sidecars.Lock()
	defer s.sidecars.Unlock()
	if err := s.trashSidecar(dir, pkg, now); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.root, dir, pkg)); err != nil {
		return fmt.Errorf("remove %s/%s: %w", dir, pkg, err)
	}
	return atomicfile.SyncDir(filepath.Join(s.root, dir))
}

// trashSidecar keeps dir/pkg's sidecars, if any, in .trash/ and removes
// them, <filename>.sigs first; s.sidecars is held.
func (s *Store) trashSidecar(dir, pkg string, now time.Time) error {
	paths, err := sidecar.Paths(filepath.Join(s.root, dir, pkg))
	if err != nil || len(paths) == 0 {
		return err
	}
	for _, p := range paths {
		name := filepath.Base(p)
		if _, err := s.Trash(dir, name, now); err != nil {
			return err
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("remove %s/%s: %w", dir, name, err)
		}
	}
	return atomicfile.SyncDir(filepath.Join(s.root, dir))
}

// link publishes tmp as dir/pkg with link(2), which fails if the name is
// taken. A sidecar already there belongs to no package of ours (a crash,
// or a hand, removed its package), not to these bytes: it goes to
// .trash/.
func (s *Store) link(tmp, dir, pkg string) error {
	s.sidecars.Lock()
	defer s.sidecars.Unlock()
	if err := os.Link(tmp, filepath.Join(s.root, dir, pkg)); err != nil {
		return err
	}
	return s.trashSidecar(dir, pkg, time.Now())
}

// swap renames tmp over dir/pkg, whose bytes the caller has kept in
// .trash/, after keeping its sidecar there too and removing it: the new
// bytes never stand beside the old bytes' attestations.
func (s *Store) swap(tmp, dir, pkg string, now time.Time) error {
	s.sidecars.Lock()
	defer s.sidecars.Unlock()
	if err := s.trashSidecar(dir, pkg, now); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.root, dir, pkg)); err != nil {
		return fmt.Errorf("replace %s/%s: %w", dir, pkg, err)
	}
	return nil
}
