// Package attesttest is an offline Sigstore for tests: it signs CEP 27
// publish attestations as Fulcio, a CT log, Rekor and a timestamping
// authority would for a CI job, and writes the trusted_root.json that
// verifies them. Tests of internal/attest and of the server use it.
package attesttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	ct "github.com/google/certificate-transparency-go"
	cttls "github.com/google/certificate-transparency-go/tls"
	ctx509util "github.com/google/certificate-transparency-go/x509util"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"google.golang.org/protobuf/encoding/protojson"
)

// Sigstore is an offline Sigstore: VirtualSigstore's Rekor key and
// timestamping authority, and a Fulcio CA and CT log of our own, because
// VirtualSigstore's leaves carry an e-mail SAN, the deprecated issuer
// extension and no SCT, where Fulcio gives a CI job a URI SAN, the issuer
// in 1.3.6.1.4.1.57264.1.8, and an SCT from its CT log.
type Sigstore struct {
	vs        *ca.VirtualSigstore
	fulcio    *root.FulcioCertificateAuthority
	fulcioKey crypto.Signer
	ctKey     *ecdsa.PrivateKey
	ctLogID   [32]byte
}

func New(t testing.TB) *Sigstore {
	t.Helper()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	rootCert, rootKey, err := ca.GenerateRootCa()
	if err != nil {
		t.Fatal(err)
	}
	inter, interKey, err := ca.GenerateFulcioIntermediate(rootCert, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	ctKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&ctKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &Sigstore{vs: vs, fulcioKey: interKey, ctKey: ctKey, ctLogID: sha256.Sum256(spki), fulcio: &root.FulcioCertificateAuthority{
		Root: rootCert, Intermediates: []*x509.Certificate{inter}, URI: "https://fulcio.localhost",
		ValidityPeriodStart: time.Now().Add(-5 * time.Hour), ValidityPeriodEnd: time.Now().Add(time.Hour),
	}}
}

// ctLogs is the fake's CT log, as a trusted root lists it.
func (s *Sigstore) ctLogs() map[string]*root.TransparencyLog {
	id := hex.EncodeToString(s.ctLogID[:])
	return map[string]*root.TransparencyLog{id: {
		BaseURL: "https://ctfe.localhost", ID: s.ctLogID[:], HashFunc: crypto.SHA256, SignatureHashFunc: crypto.SHA256,
		PublicKey: &s.ctKey.PublicKey, ValidityPeriodStart: time.Now().Add(-time.Hour),
	}}
}

// TrustedRoot writes the fake's trusted_root.json and returns its path;
// withCT false leaves the CT log out, as a private Sigstore may.
func (s *Sigstore) TrustedRoot(t testing.TB, withCT bool) string {
	t.Helper()
	ctLogs := s.ctLogs()
	if !withCT {
		ctLogs = nil
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, []root.CertificateAuthority{s.fulcio},
		ctLogs, s.vs.TimestampingAuthorities(), rawIDs(t, s.vs.RekorLogs()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// rawIDs gives VirtualSigstore's logs their key ids as bytes: it keeps
// them as hex text, which a trusted_root.json would carry hex-encoded
// again, so that no entry would match its log once read back.
func rawIDs(t testing.TB, logs map[string]*root.TransparencyLog) map[string]*root.TransparencyLog {
	t.Helper()
	out := map[string]*root.TransparencyLog{}
	for id, l := range logs {
		raw, err := hex.DecodeString(id)
		if err != nil {
			t.Fatal(err)
		}
		c := *l
		c.ID = raw
		out[id] = &c
	}
	return out
}

var (
	oidIssuerV1 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}
	oidIssuerV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}
)

// Signing says how a bundle is made; the zero value of each field is what
// Fulcio, Rekor and a TSA would do for a CI job now.
type Signing struct {
	SAN, Issuer string
	Email       string    // a second SAN
	NotBefore   time.Time // the certificate's; zero: a minute ago
	Legacy      bool      // the issuer in the deprecated extension
	NoTSA       bool      // no RFC 3161 timestamp
	NoTlog      bool      // no transparency log entry
	OtherCA     *Sigstore // the certificate is from this one's Fulcio
	NoSCT       bool      // the certificate has no SCT
}

// leaf issues a Fulcio-style certificate for key.
func (s *Sigstore) leaf(t testing.TB, o Signing, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	u, err := url.Parse(o.SAN)
	if err != nil {
		t.Fatal(err)
	}
	ext := pkix.Extension{Id: oidIssuerV1, Value: []byte(o.Issuer)}
	if !o.Legacy {
		v, err := asn1.MarshalWithParams(o.Issuer, "utf8")
		if err != nil {
			t.Fatal(err)
		}
		ext = pkix.Extension{Id: oidIssuerV2, Value: v}
	}
	nb := o.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Minute)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: nb, NotAfter: nb.Add(10 * time.Minute),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		ExtraExtensions: []pkix.Extension{ext},
	}
	if o.Email != "" {
		tmpl.EmailAddresses = []string{o.Email}
	}
	issuer := s
	if o.OtherCA != nil {
		issuer = o.OtherCA
	}
	if !o.NoSCT {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, s.sct(t, issuer.create(t, tmpl, &key.PublicKey), issuer.fulcio.Intermediates[0]))
	}
	cert := issuer.create(t, tmpl, &key.PublicKey)
	return cert
}

func (s *Sigstore) create(t testing.TB, tmpl *x509.Certificate, pub any) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.fulcio.Intermediates[0], pub, s.fulcioKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// sct is the SCT list extension, with the fake CT log's timestamp over
// pre: the certificate as it will be without the extension, which is what
// a verifier rebuilds (RFC 6962 3.2).
func (s *Sigstore) sct(t testing.TB, pre, issuer *x509.Certificate) pkix.Extension {
	t.Helper()
	sct := ct.SignedCertificateTimestamp{SCTVersion: ct.V1, LogID: ct.LogID{KeyID: s.ctLogID}, Timestamp: uint64(time.Now().UnixMilli())}
	input, err := ct.SerializeSCTSignatureInput(sct, ct.LogEntry{Leaf: ct.MerkleTreeLeaf{
		Version: ct.V1, LeafType: ct.TimestampedEntryLeafType,
		TimestampedEntry: &ct.TimestampedEntry{Timestamp: sct.Timestamp, EntryType: ct.PrecertLogEntryType,
			PrecertEntry: &ct.PreCert{IssuerKeyHash: sha256.Sum256(issuer.RawSubjectPublicKeyInfo), TBSCertificate: pre.RawTBSCertificate}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(input)
	sig, err := ecdsa.SignASN1(rand.Reader, s.ctKey, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sct.Signature = ct.DigitallySigned{Algorithm: cttls.SignatureAndHashAlgorithm{Hash: cttls.SHA256, Signature: cttls.ECDSA}, Signature: sig}
	list, err := ctx509util.MarshalSCTsIntoSCTList([]*ct.SignedCertificateTimestamp{&sct})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cttls.Marshal(*list)
	if err != nil {
		t.Fatal(err)
	}
	val, err := asn1.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11129, 2, 4, 2}, Value: val}
}

// Sign makes a Sigstore bundle (v0.3, JSON) of statement: a DSSE envelope
// signed by a fresh leaf, its Rekor entry with inclusion proof and signed
// entry timestamp, and an RFC 3161 timestamp.
func (s *Sigstore) Sign(t testing.TB, statement []byte, o Signing) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := s.leaf(t, o, key)

	const payloadType = "application/vnd.in-toto+json"
	digest := sha256.Sum256(dsse.PAE(payloadType, statement))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	vm := &protobundle.VerificationMaterial{
		Content:                   &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: cert.Raw}},
		TimestampVerificationData: &protobundle.TimestampVerificationData{},
	}
	if !o.NoTSA {
		tsr, err := s.vs.TimestampResponse(sig)
		if err != nil {
			t.Fatal(err)
		}
		vm.TimestampVerificationData.Rfc3161Timestamps = []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: tsr}}
	}
	if !o.NoTlog {
		env := &dsse.Envelope{PayloadType: payloadType, Payload: base64.StdEncoding.EncodeToString(statement),
			Signatures: []dsse.Signature{{Sig: base64.StdEncoding.EncodeToString(sig)}}}
		vm.TlogEntries = []*protorekor.TransparencyLogEntry{s.tlogEntry(t, cert, env, sig)}
	}
	b, err := protojson.Marshal(&protobundle.Bundle{
		MediaType:            "application/vnd.dev.sigstore.bundle.v0.3+json",
		VerificationMaterial: vm,
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: statement, PayloadType: payloadType, Signatures: []*protodsse.Signature{{Sig: sig}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tlogEntry is the Rekor v1 dsse entry of env, logged now, with its
// inclusion proof and the log's signed entry timestamp.
func (s *Sigstore) tlogEntry(t testing.TB, cert *x509.Certificate, env *dsse.Envelope, sig []byte) *protorekor.TransparencyLogEntry {
	t.Helper()
	now := time.Now().Unix()
	entry, err := s.vs.GenerateTlogEntry(cert, env, sig, now, true)
	if err != nil {
		t.Fatal(err)
	}
	tle := entry.TransparencyLogEntry()
	tle.KindVersion = &protorekor.KindVersion{Kind: "dsse", Version: "0.0.1"}
	set, err := s.vs.RekorSignPayload(tlog.RekorPayload{
		Body: base64.StdEncoding.EncodeToString(tle.CanonicalizedBody), IntegratedTime: now,
		LogIndex: tle.LogIndex, LogID: hex.EncodeToString(tle.LogId.KeyId),
	})
	if err != nil {
		t.Fatal(err)
	}
	tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
	return tle
}

// Statement is a CEP 27 statement about the file name of digest sha,
// for the channel URL channel ("": none); edit changes it before it is
// encoded.
func Statement(t testing.TB, name, sha, channel string, edit func(map[string]any)) []byte {
	t.Helper()
	st := map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": name, "digest": map[string]any{"sha256": sha}}},
		"predicateType": "https://schemas.conda.org/attestations/publish/v1",
		"predicate":     map[string]any{},
	}
	if channel != "" {
		st["predicate"] = map[string]any{"targetChannel": channel}
	}
	if edit != nil {
		edit(st)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
