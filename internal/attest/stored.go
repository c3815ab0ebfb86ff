package attest

import (
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
)

// Stored is a package's current CEP 50 sidecar as the admin list and the
// channel's pages show it. Nothing in it is verified here: whether each
// attestation was verified is the server's mode when it was accepted.
type Stored struct {
	// SHA256 is the sidecar's digest: the record's attestations_sha256.
	SHA256 string `json:"sha256"`
	// Signers is who each attestation's certificate names (its URI SAN),
	// in the sidecar's order; "" where it names none.
	Signers []string `json:"signers"`
}

// ReadStored reads the current sidecar of the package at pkgPath (at most
// sidecar.MaxSize bytes), and returns nil when it has none.
func ReadStored(pkgPath string) (*Stored, error) {
	b, ok, err := sidecar.Read(pkgPath)
	if !ok || err != nil {
		return nil, err
	}
	return &Stored{SHA256: sidecar.Digest(b), Signers: signersIn(b)}, nil
}

// signersIn returns who each element of a sidecar array names. A sidecar
// that does not parse names no one.
func signersIn(sidecarJSON []byte) []string {
	elems, _ := sidecar.Elements(sidecarJSON)
	out := []string{}
	for _, e := range elems {
		id, _ := SignerOf(e)
		out = append(out, id.SAN)
	}
	return out
}
