// Package attest verifies a conda publish attestation (CEP 27) at upload:
// a Sigstore bundle whose DSSE envelope holds an in-toto statement about
// one package file, signed by a short-lived Fulcio certificate.
//
// Checking an attestation's format is not verifying it: whoever can write
// to the channel could also write a matching attestation. So a bundle is
// accepted only if it verifies against the operator's trusted root (the
// certificate chain at a time that a transparency log or a timestamping
// authority vouches for, and the log's inclusion proof), if its signer is
// the identity the upload authenticated as (PyPI's rule for PEP 740: the
// exact workflow, and the OIDC issuer that vouched for it), and if the
// statement names exactly this file with exactly its digest. Everything is
// checked offline, from the bundle and the trusted root file: nothing is
// fetched at verification time.
//
// A refusal is an *Error naming the check that failed.
package attest

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

const (
	// PredicateType is CEP 27's publish attestation.
	PredicateType = "https://schemas.conda.org/attestations/publish/v1"
	// StatementType is the in-toto statement version CEP 27 names.
	StatementType = "https://in-toto.io/Statement/v1"
	// MaxBundle bounds a bundle: public-good ones are 4 to 10 KiB.
	MaxBundle = 256 << 10
)

// Check names one condition an attestation must meet.
type Check string

// The checks, in the order they are made.
const (
	CheckBundle        Check = "bundle"         // a Sigstore bundle, signed with a certificate
	CheckStatement     Check = "statement"      // an in-toto v1 statement in a DSSE envelope
	CheckSigstore      Check = "sigstore"       // signature, certificate chain and SCT, log inclusion, timestamps
	CheckIdentity      Check = "identity"       // the certificate's SAN is an expected signer
	CheckIssuer        Check = "issuer"         // the certificate's OIDC issuer is that signer's
	CheckPredicateType Check = "predicate_type" // CEP 27's predicate type
	CheckSubject       Check = "subject"        // exactly one subject, with one sha256 digest
	CheckSubjectName   Check = "subject_name"   // the subject is this file name
	CheckSubjectDigest Check = "subject_digest" // the subject's sha256 is the stored package's
	CheckTargetChannel Check = "target_channel" // targetChannel, if given, is this channel
)

// Error is a refused attestation: the check it failed, and why.
type Error struct {
	Check  Check
	Reason string
	Err    error // the cause, when there is one
}

func (e *Error) Error() string {
	return fmt.Sprintf("attestation refused: %s: %s", e.Check, e.Reason)
}

func (e *Error) Unwrap() error { return e.Err }

func refuse(c Check, err error, format string, args ...any) error {
	return &Error{Check: c, Reason: fmt.Sprintf(format, args...), Err: err}
}

// Identity is a signer: the certificate's Subject Alternative Name, and
// the OIDC issuer that vouched for it when Fulcio issued the certificate.
type Identity struct {
	SAN    string
	Issuer string
}

// GitHub is the identity Fulcio certifies for a GitHub Actions job:
// https://github.com/ + the job_workflow_ref claim (the workflow that
// runs, a reusable one included), from the token's issuer.
func GitHub(issuer, jobWorkflowRef string) Identity {
	return Identity{SAN: "https://github.com/" + jobWorkflowRef, Issuer: issuer}
}

// GitLab is the identity Fulcio certifies for a GitLab CI job: https://
// + the ci_config_ref_uri claim, which already starts with the instance's
// host (gitlab.com/group/project//.gitlab-ci.yml@refs/heads/main).
func GitLab(issuer, ciConfigRefURI string) Identity {
	return Identity{SAN: "https://" + ciConfigRefURI, Issuer: issuer}
}

// Expect is what an attestation must say to be accepted for one file.
type Expect struct {
	Filename string // the package's file name, as in repodata
	SHA256   string // the stored package's digest, in hex
	// Channel is this channel's URL, with which targetChannel must agree
	// when the statement has one.
	Channel string
	// Signers are the identities that may have signed; at least one.
	Signers []Identity
}

// Verified is an accepted attestation.
type Verified struct {
	Signer        Identity
	TargetChannel string // "" when the statement has none
}

// Verifier checks bundles against one trusted root.
type Verifier struct {
	v *verify.Verifier
}

// NewFromFile reads a trusted root (Sigstore's trusted_root.json format)
// from path.
func NewFromFile(path string) (*Verifier, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trusted root: %w", err)
	}
	return New(b)
}

// New makes a Verifier from the JSON of a trusted root. It demands of a
// bundle at least one transparency log entry whose inclusion verifies, and
// at least one timestamp that a log or a timestamping authority signed:
// the certificate chain is checked at those times, so a certificate that
// expired later still verifies, and one used outside its ten minutes not.
// When the root lists certificate transparency logs, as the public-good
// one does, the certificate must also carry an SCT from one of them.
func New(trustedRootJSON []byte) (*Verifier, error) {
	tr, err := root.NewTrustedRootFromJSON(trustedRootJSON)
	if err != nil {
		return nil, fmt.Errorf("trusted root: %w", err)
	}
	opts := []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1)}
	if len(tr.CTLogs()) > 0 {
		opts = append(opts, verify.WithSignedCertificateTimestamps(1))
	}
	v, err := verify.NewVerifier(tr, opts...)
	if err != nil {
		return nil, fmt.Errorf("trusted root: %w", err)
	}
	return &Verifier{v: v}, nil
}

// Verify checks one bundle, as JSON, against want, making the checks in
// the order of the Check constants and stopping at the first that fails.
func (v *Verifier) Verify(bundleJSON []byte, want Expect) (Verified, error) {
	b, leaf, err := parse(bundleJSON)
	if err != nil {
		return Verified{}, err
	}
	if _, err := v.v.Verify(b, verify.NewPolicy(verify.WithoutArtifactUnsafe(), verify.WithoutIdentitiesUnsafe())); err != nil {
		return Verified{}, refuse(CheckSigstore, err, "the bundle does not verify against the trusted root: %v", err)
	}
	signer, err := signerOf(leaf, want.Signers)
	if err != nil {
		return Verified{}, err
	}
	target, err := checkStatement(b, want)
	if err != nil {
		return Verified{}, err
	}
	return Verified{Signer: signer, TargetChannel: target}, nil
}

// parse reads the bundle and makes the checks that need no key: that it is
// a bundle signed with a certificate, and that it carries a statement.
func parse(data []byte) (*bundle.Bundle, *x509.Certificate, error) {
	if len(data) > MaxBundle {
		return nil, nil, refuse(CheckBundle, nil, "over %d bytes", MaxBundle)
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bytes.TrimSpace(data)); err != nil {
		return nil, nil, refuse(CheckBundle, err, "not a Sigstore bundle: %v", err)
	}
	vc, err := b.VerificationContent()
	if err != nil {
		return nil, nil, refuse(CheckBundle, err, "no verification material: %v", err)
	}
	leaf := vc.Certificate()
	if leaf == nil {
		return nil, nil, refuse(CheckBundle, nil, "signed with a key, not a Fulcio certificate")
	}
	env, err := b.Envelope()
	if err != nil {
		return nil, nil, refuse(CheckStatement, err, "not a DSSE envelope: %v", err)
	}
	if _, err := env.Statement(); err != nil {
		return nil, nil, refuse(CheckStatement, err, "the envelope holds no in-toto statement (payload type %q): %v", env.PayloadType, err)
	}
	return &b, leaf, nil
}

// signerOf returns the expected signer the certificate names. Fulcio puts
// one identity in the SAN; a certificate with several is refused, so that
// no second name can ride along. The issuer is read from Fulcio's
// extension (1.3.6.1.4.1.57264.1.8, or the deprecated .1.1).
func signerOf(leaf *x509.Certificate, signers []Identity) (Identity, error) {
	names := len(leaf.URIs) + len(leaf.EmailAddresses) + len(leaf.DNSNames) + len(leaf.IPAddresses)
	if names != 1 || len(leaf.URIs) != 1 {
		return Identity{}, refuse(CheckIdentity, nil, "the certificate must name one URI, and names %d names", names)
	}
	san := leaf.URIs[0].String()
	issuer, err := issuerOf(leaf)
	if err != nil {
		return Identity{}, err
	}
	var issuers []string
	for _, s := range signers {
		if s.SAN != san {
			continue
		}
		if s.Issuer == issuer {
			return s, nil
		}
		issuers = append(issuers, s.Issuer)
	}
	if issuers == nil {
		return Identity{}, refuse(CheckIdentity, nil, "signed by %s, which is not a signer this upload may use", san)
	}
	return Identity{}, refuse(CheckIssuer, nil, "%s was vouched for by issuer %q, not %s", san, issuer, strings.Join(issuers, " or "))
}

// checkStatement checks the verified statement against the file: CEP 27's
// predicate type, one subject naming the file with its one sha256 digest,
// and the target channel.
func checkStatement(b *bundle.Bundle, want Expect) (string, error) {
	env, _ := b.Envelope() // parse checked both
	st, _ := env.Statement()
	if st.GetType() != StatementType {
		return "", refuse(CheckStatement, nil, "_type is %q, not %s", st.GetType(), StatementType)
	}
	if st.GetPredicateType() != PredicateType {
		return "", refuse(CheckPredicateType, nil, "%q, not %s", st.GetPredicateType(), PredicateType)
	}
	subjects := st.GetSubject()
	if len(subjects) != 1 {
		return "", refuse(CheckSubject, nil, "%d subjects; a publish attestation names exactly one file", len(subjects))
	}
	s := subjects[0]
	if d := s.GetDigest(); len(d) != 1 || d["sha256"] == "" {
		return "", refuse(CheckSubject, nil, "the subject's digest must be a single sha256")
	}
	if s.GetName() != want.Filename {
		return "", refuse(CheckSubjectName, nil, "the subject is %q, not %q", s.GetName(), want.Filename)
	}
	got, err := hex.DecodeString(s.GetDigest()["sha256"])
	if exp, _ := hex.DecodeString(want.SHA256); err != nil || len(exp) != 32 || !bytes.Equal(got, exp) {
		return "", refuse(CheckSubjectDigest, nil, "the subject's sha256 is %q, and the package's is %s", s.GetDigest()["sha256"], want.SHA256)
	}
	return targetChannel(st.GetPredicate().AsMap(), want.Channel)
}

// targetChannel checks the predicate's targetChannel, when there is one,
// against this channel's URL. CEP 27 writes it without a trailing slash.
func targetChannel(predicate map[string]any, channel string) (string, error) {
	raw, ok := predicate["targetChannel"]
	if !ok {
		return "", nil
	}
	target, ok := raw.(string)
	if !ok {
		return "", refuse(CheckTargetChannel, nil, "targetChannel is not a string")
	}
	channel = strings.TrimRight(channel, "/")
	if channel == "" {
		return "", refuse(CheckTargetChannel, nil, "the statement names channel %q, and this channel's URL is not configured", target)
	}
	if target != channel {
		return "", refuse(CheckTargetChannel, nil, "the statement is for channel %q, not %s", target, channel)
	}
	return target, nil
}

// issuerOf reads the OIDC issuer Fulcio wrote into the certificate.
func issuerOf(leaf *x509.Certificate) (string, error) {
	ext, err := certificate.ParseExtensions(leaf.Extensions)
	if err != nil {
		return "", refuse(CheckIssuer, err, "the certificate's Fulcio extensions do not parse: %v", err)
	}
	if ext.Issuer == "" {
		return "", refuse(CheckIssuer, nil, "the certificate names no OIDC issuer")
	}
	return ext.Issuer, nil
}

// IsRefused reports whether err is a refused attestation (a 400), as
// opposed to a failure of the server.
func IsRefused(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// SignerOf returns the identity a bundle's certificate names, verifying
// nothing: what a listing of stored attestations shows.
func SignerOf(bundleJSON []byte) (Identity, error) {
	_, leaf, err := parse(bundleJSON)
	if err != nil {
		return Identity{}, err
	}
	if len(leaf.URIs) != 1 {
		return Identity{}, refuse(CheckIdentity, nil, "the certificate names %d URIs", len(leaf.URIs))
	}
	issuer, _ := issuerOf(leaf)
	return Identity{SAN: leaf.URIs[0].String(), Issuer: issuer}, nil
}
