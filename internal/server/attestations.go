package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/attest"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/form"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
)

// Attestations is the server's attestation policy ([attestations]). An
// attestation comes with an upload (prefix.dev's attestation part, or an
// attestation field of POST /) or later, to a stored package (POST
// /api/v1/attestations/...). With Mode "verify" it is checked before
// anything is stored, against the identity the request authenticated as:
// a trusted publisher's workflow, or a plain token's Signers. A refusal
// stores neither the package nor the attestation.
type Attestations struct {
	// Mode is "off" (attestations are dropped), "store" (kept as sent;
	// also the zero value) or "verify".
	Mode     string
	Verifier *attest.Verifier // set with "verify"
	// ChannelURL is the channel's public URL: targetChannel must be it
	// for main, and ChannelURL/label/<L> for label L.
	ChannelURL string
	// Require refuses uploads without a valid attestation everywhere;
	// RequireLabels to these labels; RequirePublishers from these trusted
	// publishers.
	Require           bool
	RequireLabels     []string
	RequirePublishers []string
}

// channelOf is label's public URL, or "" when the channel's is unknown.
func (a *Attestations) channelOf(label string) string {
	if a.ChannelURL == "" || label == store.MainLabel {
		return a.ChannelURL
	}
	return a.ChannelURL + "/label/" + label
}

func (a *Attestations) required(label string, lf *logFields) bool {
	return a.Require || slices.Contains(a.RequireLabels, label) ||
		lf.oidc != nil && slices.Contains(a.RequirePublishers, lf.oidc.Publisher)
}

// signersOf are the identities a request's attestations may be signed by:
// the token's own, and the job's workflow if a trusted publisher sent it.
func signersOf(t auth.Token, lf *logFields) []attest.Identity {
	var out []attest.Identity
	for _, s := range t.Signers {
		out = append(out, attest.Identity{SAN: s.SAN, Issuer: s.Issuer})
	}
	return append(out, lf.signers...)
}

// jobSigners is the identity Fulcio certifies for a trusted publisher's
// job: its workflow, from its issuer.
func jobSigners(id trusted.Identity) []attest.Identity {
	switch {
	case id.JobWorkflowRef != "":
		return []attest.Identity{attest.GitHub(id.Issuer, id.JobWorkflowRef)}
	case id.CIConfigRefURI != "":
		return []attest.Identity{attest.GitLab(id.Issuer, id.CIConfigRefURI)}
	}
	return nil
}

// checkAttestation applies the policy to an upload, whose sha256 and
// label are known and which is not stored yet.
func (s *Server) checkAttestation(pub *publication) error {
	a := &s.o.Attest
	switch {
	case a.Mode == "off":
		pub.p.sigs = nil
		return nil
	case pub.p.sigs != nil && !sidecar.Fits(pub.name):
		// Refused before the package is stored, not after.
		return sidecar.ErrNameTooLong
	case pub.p.sigs == nil && a.required(pub.label, pub.lf):
		return &Error{Status: http.StatusBadRequest, Reason: "attestation_required",
			Msg: fmt.Sprintf("an upload to label %s needs a valid attestation (CEP 27, signed by the uploading workflow); nothing stored", pub.label)}
	case pub.p.sigs == nil || a.Mode != "verify":
		return nil
	}
	return s.verifyAttestation(pub.p.sigs, pub.name, pub.in.sums.SHA256, pub.label, pub.token, pub.lf)
}

// verifyAttestation verifies bundle for the file of that name and digest
// in label, signed by one of the request's signers.
func (s *Server) verifyAttestation(bundle []byte, filename, sha, label string, t auth.Token, lf *logFields) error {
	a := &s.o.Attest
	start := time.Now()
	v, err := a.Verifier.Verify(bundle, attest.Expect{Filename: filename, SHA256: sha, Channel: a.channelOf(label), Signers: signersOf(t, lf)})
	if err != nil {
		return err
	}
	s.o.Log.Info("attestation verified", "filename", filename, "label", label, "signer", v.Signer.SAN, "issuer", v.Signer.Issuer, "seconds", time.Since(start).Seconds())
	return nil
}

// attestations: POST /api/v1/attestations/{label}/{subdir}/{filename}
// adds an attestation, one Sigstore bundle as the body, to a stored
// package: a review or a scan after the upload. It is added after those
// there, never replacing one.
func (s *Server) attestations(w http.ResponseWriter, r *http.Request) (*Result, error) {
	label, subdir, err := adminPath(r)
	if err != nil {
		return nil, err
	}
	lf := fieldsOf(r)
	lf.call = "attest"
	t, err := s.adminToken(r, auth.ScopeAttest, subdir, label)
	if err != nil {
		return nil, err
	}
	if s.o.Attest.Mode == "off" {
		return nil, newError(http.StatusForbidden, "attestations are off on this server ([attestations] verify)")
	}
	b, err := readBody(w, r, attest.MaxBundle)
	if err != nil {
		return nil, err
	}
	if b = bytes.TrimSpace(b); len(b) == 0 || b[0] != '{' || !json.Valid(b) {
		return nil, newError(http.StatusBadRequest, "the body must be one JSON object, a Sigstore bundle")
	}
	dir := store.Dir(label, subdir)
	fi, sum, err := s.o.Lifecycle.Stat(label, subdir, lf.filename)
	if err != nil {
		return nil, err
	}
	lf.sha256 = sum
	if s.o.Attest.Mode == "verify" {
		if err := s.verifyAttestation(b, lf.filename, sum, label, t, lf); err != nil {
			return nil, err
		}
	}
	if err := s.o.Store.AddSidecar(dir, lf.filename, fi, b); err != nil {
		return nil, fmt.Errorf("keep attestation: %w", err)
	}
	res := &Changed{Filename: lf.filename, Label: label, Subdir: subdir, SHA256: sum, Changed: true, Status: http.StatusOK}
	return s.indexed(r.Context(), res, dir)
}

// listedFile is a file of the admin list, with its current sidecar.
type listedFile struct {
	lifecycle.File
	Attestations *attest.Stored `json:"attestations,omitempty"`
}

// withAttestations adds each file's attestations to a listing.
func (s *Server) withAttestations(label, subdir string, files []lifecycle.File) ([]listedFile, error) {
	out := make([]listedFile, 0, len(files))
	dir := filepath.Join(s.o.Store.Root(), store.Dir(label, subdir))
	for _, f := range files {
		st, err := attest.ReadStored(filepath.Join(dir, f.Filename))
		if err != nil {
			return nil, err
		}
		out = append(out, listedFile{File: f, Attestations: st})
	}
	return out, nil
}

// readAttestation reads an upload's attestation part or field: one JSON
// object, a Sigstore bundle, which CEP 50 adds to <filename>.sigs.
func readAttestation(p *form.Part, what string) ([]byte, error) {
	a, err := readField(p, "attestation", maxAttestation)
	if err != nil {
		return nil, err
	}
	if a = strings.TrimSpace(a); !json.Valid([]byte(a)) || a[0] != '{' {
		return nil, newError(http.StatusBadRequest, "the attestation "+what+" is not JSON: want one object, a Sigstore bundle")
	}
	return []byte(a), nil
}
