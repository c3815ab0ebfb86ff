package repodata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
)

// AttestationsKey is the record field that names a package's current CEP 50
// sidecar by the sha256 of its bytes: present if and only if the package
// has one. It is set here, at index time, from the sidecar file, never
// from the package: a package whose index.json carries the key has it
// dropped (Record).
const AttestationsKey = "attestations_sha256"

// The sidecar's content-addressed copy is published before <file>.sigs
// (internal/sidecar), so a run that reads <file>.sigs and names its digest
// never names a file that is not there.

// withAttestations returns record with AttestationsKey set to sha, or
// without it when sha is "".
func withAttestations(record json.RawMessage, sha string) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(record))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	if sha == "" {
		delete(doc, AttestationsKey)
	} else {
		doc[AttestationsKey] = sha
	}
	return marshal(doc)
}

// currentAttestations returns the digest of the package's sidecar, or ""
// when it has none.
func currentAttestations(dir, filename string) (string, error) {
	sha, _, err := sidecar.Current(filepath.Join(dir, filename))
	if err != nil {
		return "", fmt.Errorf("sidecar of %s: %w", filename, err)
	}
	return sha, nil
}

// setAttestations brings each listed package's AttestationsKey up to date
// with its sidecar. sigs fingerprints each package's sidecar names in the
// listing: every change to a sidecar adds a content-addressed name, so
// only the packages whose names changed since their sidecar was last read
// are read again.
func (st *subdirState) setAttestations(dir string, sigs map[string]fingerprint) error {
	for name, e := range st.entries {
		names := sigs[name]
		if e.Record == nil || names == e.sigs {
			continue
		}
		want, err := currentAttestations(dir, name)
		if err != nil {
			return err
		}
		next := *e
		next.sigs = names
		if want != e.Attest {
			next.Attest = want
			if next.Record, err = withAttestations(e.Record, want); err != nil {
				return err
			}
			st.put(name, &next)
			continue
		}
		*e = next // the same digest: nothing to write
	}
	return nil
}
