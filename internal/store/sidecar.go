package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
)

// A package's sidecar, <filename>.sigs, holds its attestations: a JSON
// array (CEP 50) that only ever grows. An attestation is added, never
// replaced: the elements already there are kept byte for byte (the new
// file is the old one with elements appended before its closing
// bracket, never a re-serialization), in the order they were accepted,
// and an element already present is not added twice. Additions are
// serialized by the store's lock and each is an atomic replace of the
// file, so concurrent additions are never lost, and a hard link to the
// old file (a copy in another label, the trash) keeps the old array.
//
// A sidecar describes the bytes beside it and nothing else: it goes to
// .trash/ with them when they are replaced or removed, and it is removed
// before they are, so that a crash never leaves one beside other bytes.
// The same lock covers those steps, so that an attestation cannot land
// on a package that a forced upload has just replaced.

// SigsSuffix ends the name of a package's sidecar.
const SigsSuffix = ".sigs"

// MaxSidecar bounds a sidecar: each addition reads and rewrites it.
const MaxSidecar = 16 << 20

var (
	// ErrPackageChanged means the package was replaced or removed while
	// an attestation for it was on its way; the attestation is not
	// added. It is an ErrExists: the client's bytes are no longer the
	// package of that name.
	ErrPackageChanged = fmt.Errorf("%w: it was replaced while its attestation was being added, which was not added", ErrExists)
	// ErrSidecarFull means the attestations would exceed MaxSidecar.
	ErrSidecarFull = fmt.Errorf("the package's attestations would exceed %d MiB; not added", MaxSidecar>>20)
)

// AddSidecar adds the elements of elems, a JSON array, to the sidecar of
// dir/pkg, provided dir/pkg is still the file of (as Publish or Replace
// returned it).
func (s *Store) AddSidecar(dir, pkg string, of fs.FileInfo, elems []byte) error {
	if err := checkName(dir, pkg); err != nil {
		return err
	}
	s.sidecars.Lock()
	defer s.sidecars.Unlock()
	fi, err := os.Stat(filepath.Join(s.root, dir, pkg))
	if err != nil || !os.SameFile(fi, of) {
		return ErrPackageChanged
	}
	return s.addSidecar(dir, pkg, elems)
}

// addSidecar adds elems to dir/pkg's sidecar; s.sidecars is held.
func (s *Store) addSidecar(dir, pkg string, elems []byte) error {
	path := filepath.Join(s.root, dir, pkg+SigsSuffix)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	merged, changed, err := AppendElements(old, elems)
	if err != nil || !changed {
		return err
	}
	if len(merged) > MaxSidecar {
		return ErrSidecarFull
	}
	return atomicfile.Write(path, merged)
}

// AppendElements returns the JSON array old (nil: none yet) with the
// elements of the JSON array add appended that it does not hold yet
// (compared with insignificant white space removed), and whether any
// was. old's bytes are kept as they are.
func AppendElements(old, add []byte) ([]byte, bool, error) {
	var have, more []json.RawMessage
	if old != nil {
		if err := json.Unmarshal(old, &have); err != nil {
			return nil, false, fmt.Errorf("the stored attestations are not a JSON array; not changed: %w", err)
		}
	}
	if err := json.Unmarshal(add, &more); err != nil {
		return nil, false, fmt.Errorf("attestations to add are not a JSON array: %w", err)
	}
	seen := map[string]bool{}
	for _, e := range have {
		seen[compact(e)] = true
	}
	out := bytes.TrimRight(old, " \t\r\n")
	if len(have) == 0 {
		out = []byte{'['}
	} else {
		out = append(bytes.Clone(out[:len(out)-1]), ',')
	}
	n := 0
	for _, e := range more {
		if seen[compact(e)] {
			continue
		}
		seen[compact(e)] = true
		out = append(append(out, bytes.TrimSpace(e)...), ',')
		n++
	}
	if n == 0 {
		return old, false, nil
	}
	out[len(out)-1] = ']'
	return out, true, nil
}

func compact(e json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, e) != nil {
		return string(e)
	}
	return b.String()
}

// CarrySidecar brings dir/pkg's attestations to the same package in
// dir to, as a copy between labels does: a hard link if to has none
// yet, else the ones it lacks are added to its own.
func (s *Store) CarrySidecar(from, to, pkg string) error {
	if err := checkName(from, pkg); err != nil {
		return err
	}
	s.sidecars.Lock()
	defer s.sidecars.Unlock()
	src := filepath.Join(s.root, from, pkg+SigsSuffix)
	b, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = os.Link(src, filepath.Join(s.root, to, pkg+SigsSuffix))
	if errors.Is(err, fs.ErrExist) {
		return s.addSidecar(to, pkg, b)
	}
	return err
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

// trashSidecar keeps dir/pkg's sidecar, if any, in .trash/ and removes
// it; s.sidecars is held.
func (s *Store) trashSidecar(dir, pkg string, now time.Time) error {
	name := pkg + SigsSuffix
	if _, err := os.Lstat(filepath.Join(s.root, dir, name)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := s.Trash(dir, name, now); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.root, dir, name)); err != nil {
		return fmt.Errorf("remove %s/%s: %w", dir, name, err)
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
