// Package sidecar keeps a package's CEP 50 attestation sidecars: the
// mutable <file>.sigs, the current JSON array of Sigstore bundles, and the
// content-addressed <file>.sigs.<sha256> copies that repodata names in
// attestations_sha256.
//
// CEP 50 makes the array append-only and ordered by acceptance: the
// elements already published are kept byte for byte, in order, and the
// JSON is never re-serialized, because clients check the sidecar's bytes
// against the hash in repodata. So the merge works on bytes (Append, a pure
// function that is fuzzed), and Add and Carry do the file work around it, in
// the order the CEP prescribes: the immutable copy first, then the mutable
// name. Updating repodata, the third step, is the caller's, and so is the
// lock (internal/store holds it).
//
// The package verifies nothing: whether a bundle may be added is decided
// before (internal/attest).
package sidecar

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Suffix is appended to a package's file name to name its mutable sidecar.
const Suffix = ".sigs"

// MaxSize bounds a sidecar, which clients must also bound while they fetch
// it: a Sigstore bundle is 4 to 10 KiB, so this holds a hundred or more.
const MaxSize = 1 << 20

// maxName is the longest file name the channel's file systems take.
const maxName = 255

// ErrNameTooLong says a package's file name leaves no room for its
// content-addressed sidecar, <file>.sigs.<sha256>, 70 bytes longer.
var ErrNameTooLong = fmt.Errorf("the file name is too long to carry attestations: <file>%s.<sha256> must fit in %d bytes", Suffix, maxName)

// Fits reports whether a package's file name leaves room for the names
// of its sidecars.
func Fits(filename string) bool { return len(filename)+len(Suffix)+1+64 <= maxName }

// ErrTooLarge says the sidecar would pass MaxSize.
var ErrTooLarge = fmt.Errorf("the sidecar would exceed %d bytes", MaxSize)

// Digest returns the 64 lowercase hex digits of the SHA-256 of a sidecar's
// bytes: the record field attestations_sha256 and the suffix of the
// content-addressed name.
func Digest(sidecar []byte) string {
	sum := sha256.Sum256(sidecar)
	return hex.EncodeToString(sum[:])
}

// Elements returns the elements of a sidecar array as the exact bytes they
// have in it. Each must be a JSON object (a Sigstore bundle); nothing may
// follow the array but white space.
func Elements(sidecar []byte) ([][]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(sidecar))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, errors.New("sidecar: not a JSON array")
	}
	var elems [][]byte
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("sidecar: element %d: %w", len(elems), err)
		}
		if raw[0] != '{' {
			return nil, fmt.Errorf("sidecar: element %d is not a JSON object", len(elems))
		}
		elems = append(elems, raw)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("sidecar: data after the array")
	}
	return elems, nil
}

// Append returns the sidecar with bundle added as its last element, and
// whether it was added: a bundle already in the array, byte for byte, is
// not added twice (a retried upload), and current is returned. current
// empty means there is no sidecar yet.
//
// The elements of current are copied byte for byte. The result is laid
// out as [e1,e2,...] with no other white space, so that when current was
// made here, the result is current without its ']' followed by ',' bundle
// ']': a byte-wise extension.
func Append(current, bundle []byte) ([]byte, bool, error) {
	var elems [][]byte
	if len(bytes.TrimSpace(current)) > 0 {
		var err error
		if elems, err = Elements(current); err != nil {
			return nil, false, err
		}
	}
	bundle = bytes.TrimSpace(bundle)
	if len(bundle) == 0 || bundle[0] != '{' || !json.Valid(bundle) {
		return nil, false, errors.New("sidecar: the new element is not one JSON object")
	}
	for _, e := range elems {
		if bytes.Equal(e, bundle) {
			return current, false, nil
		}
	}
	out := []byte{'['}
	for _, e := range elems {
		out = append(out, e...)
		out = append(out, ',')
	}
	out = append(append(out, bundle...), ']')
	if len(out) > MaxSize {
		return nil, false, ErrTooLarge
	}
	return out, true, nil
}
