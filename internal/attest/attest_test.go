package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/attest/attesttest"
	"github.com/sigstore/sigstore-go/pkg/testing/data"
)

const (
	channelURL   = "https://conda.example.org/recipes"
	githubIssuer = "https://token.actions.githubusercontent.com"
	gitlabIssuer = "https://gitlab.com"
	// A GitHub job's job_workflow_ref claim.
	workflowRef = "myorg/recipes/.github/workflows/release.yml@refs/heads/main"
)

// A real package of the repository's test data, and another.
type pkgFile struct{ name, sha string }

func realPackage(t testing.TB, rel string) pkgFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "conda-pkgs", rel))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return pkgFile{filepath.Base(rel), hex.EncodeToString(sum[:])}
}

func expect(p pkgFile) Expect {
	return Expect{Filename: p.name, SHA256: p.sha, Channel: channelURL, Signers: []Identity{GitHub(githubIssuer, workflowRef)}}
}

// gh is how Fulcio certifies the trusted publisher's workflow.
var gh = attesttest.Signing{SAN: "https://github.com/" + workflowRef, Issuer: githubIssuer}

func TestIdentities(t *testing.T) {
	if got := GitHub(githubIssuer, workflowRef); got.SAN != "https://github.com/myorg/recipes/.github/workflows/release.yml@refs/heads/main" || got.Issuer != githubIssuer {
		t.Fatalf("GitHub: %+v", got)
	}
	// GitLab's ci_config_ref_uri starts with the host, and Fulcio's SAN
	// template is https://{{ .ci_config_ref_uri }}.
	if got := GitLab(gitlabIssuer, "gitlab.com/grp/proj//.gitlab-ci.yml@refs/heads/main"); got.SAN != "https://gitlab.com/grp/proj//.gitlab-ci.yml@refs/heads/main" {
		t.Fatalf("GitLab: %+v", got)
	}
}

// setup makes a fake Sigstore, a Verifier of its trusted root read from a
// file, and the package the attestations are about.
func setup(t testing.TB) (*attesttest.Sigstore, *Verifier, pkgFile) {
	t.Helper()
	fs := attesttest.New(t)
	v, err := NewFromFile(fs.TrustedRoot(t, true))
	if err != nil {
		t.Fatal(err)
	}
	return fs, v, realPackage(t, "conda/linux-64/zlib-1.2.11-h7b6447c_3.conda")
}

func TestAccepted(t *testing.T) {
	fs, v, zlib := setup(t)
	gitlab := GitLab(gitlabIssuer, "gitlab.com/grp/proj//.gitlab-ci.yml@refs/heads/main")
	tests := []struct {
		name   string
		bundle []byte
		want   Expect
		target string
	}{
		{"GitHub workflow", fs.Sign(t, statement(t, zlib.name, zlib.sha, nil), gh), expect(zlib), channelURL},
		{"no predicate", fs.Sign(t, statement(t, zlib.name, zlib.sha, func(m map[string]any) { delete(m, "predicate") }), gh), expect(zlib), ""},
		{"null predicate", fs.Sign(t, statement(t, zlib.name, zlib.sha, func(m map[string]any) { m["predicate"] = nil }), gh), expect(zlib), ""},
		{"configured channel URL with a trailing slash", fs.Sign(t, statement(t, zlib.name, zlib.sha, nil), gh),
			func() Expect { e := expect(zlib); e.Channel += "/"; return e }(), channelURL},
		{"the issuer in the deprecated extension", fs.Sign(t, statement(t, zlib.name, zlib.sha, nil), attesttest.Signing{SAN: gh.SAN, Issuer: gh.Issuer, Legacy: true}), expect(zlib), channelURL},
		{"RFC 3161 timestamp only from the TSA, log time from Rekor", fs.Sign(t, statement(t, zlib.name, zlib.sha, nil), attesttest.Signing{SAN: gh.SAN, Issuer: gh.Issuer, NoTSA: true}), expect(zlib), channelURL},
		{"one of a token's attestation_identities", fs.Sign(t, statement(t, zlib.name, zlib.sha, nil), attesttest.Signing{SAN: gitlab.SAN, Issuer: gitlabIssuer}),
			func() Expect {
				e := expect(zlib)
				e.Signers = []Identity{GitHub(githubIssuer, "o/r/.github/workflows/x.yml@refs/heads/main"), gitlab}
				return e
			}(), channelURL},
		{"surrounding white space", append(append([]byte("\n "), fs.Sign(t, statement(t, zlib.name, zlib.sha, nil), gh)...), '\n'), expect(zlib), channelURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(tt.bundle, tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(tt.want.Signers, got.Signer) || got.TargetChannel != tt.target {
				t.Fatalf("got %+v", got)
			}
		})
	}
}

// The hostile catalogue: each row is refused, by the check it names.
func TestRefused(t *testing.T) {
	fs, v, zlib := setup(t)
	other := attesttest.New(t)
	quetz := realPackage(t, "quetz/other-package-0.2-0.conda")
	good := statement(t, zlib.name, zlib.sha, nil)
	with := func(edit func(map[string]any)) []byte { return statement(t, zlib.name, zlib.sha, edit) }
	tests := []struct {
		name   string
		bundle []byte
		want   Expect
		check  Check
	}{
		{"wrong digest", fs.Sign(t, statement(t, zlib.name, quetz.sha, nil), gh), expect(zlib), CheckSubjectDigest},
		{"digest not hex", fs.Sign(t, statement(t, zlib.name, "zz"+zlib.sha[2:], nil), gh), expect(zlib), CheckSubjectDigest},
		{"wrong subject name", fs.Sign(t, statement(t, quetz.name, zlib.sha, nil), gh), expect(zlib), CheckSubjectName},
		{"subject name with a subdir", fs.Sign(t, statement(t, "linux-64/"+zlib.name, zlib.sha, nil), gh), expect(zlib), CheckSubjectName},
		{"wrong predicate type", fs.Sign(t, with(func(m map[string]any) { m["predicateType"] = "https://slsa.dev/provenance/v1" }), gh), expect(zlib), CheckPredicateType},
		{"in-toto statement v0.1", fs.Sign(t, with(func(m map[string]any) { m["_type"] = "https://in-toto.io/Statement/v0.1" }), gh), expect(zlib), CheckStatement},
		{"wrong signer identity", fs.Sign(t, good, attesttest.Signing{SAN: "https://github.com/myorg/recipes/.github/workflows/pr.yml@refs/heads/main", Issuer: githubIssuer}), expect(zlib), CheckIdentity},
		{"reusable workflow signing as its caller", fs.Sign(t, good, attesttest.Signing{SAN: "https://github.com/other/shared/.github/workflows/build.yml@refs/heads/main", Issuer: githubIssuer}), expect(zlib), CheckIdentity},
		{"right SAN, wrong issuer", fs.Sign(t, good, attesttest.Signing{SAN: gh.SAN, Issuer: "https://issuer.example.org"}), expect(zlib), CheckIssuer},
		{"a second SAN", fs.Sign(t, good, attesttest.Signing{SAN: gh.SAN, Issuer: githubIssuer, Email: "a@example.org"}), expect(zlib), CheckIdentity},
		{"expired certificate without a timestamp", fs.Sign(t, good, attesttest.Signing{SAN: gh.SAN, Issuer: githubIssuer, NotBefore: time.Now().Add(-2 * time.Hour), NoTSA: true}), expect(zlib), CheckSigstore},
		{"certificate without an SCT", fs.Sign(t, good, attesttest.Signing{SAN: gh.SAN, Issuer: githubIssuer, NoSCT: true}), expect(zlib), CheckSigstore},
		{"not in the transparency log", fs.Sign(t, good, attesttest.Signing{SAN: gh.SAN, Issuer: githubIssuer, NoTlog: true}), expect(zlib), CheckSigstore},
		{"tampered payload", tamper(t, fs.Sign(t, good, gh), func(b map[string]any) {
			env := b["dsseEnvelope"].(map[string]any)
			env["payload"] = base64.StdEncoding.EncodeToString(statement(t, quetz.name, quetz.sha, nil))
		}), expect(quetz), CheckSigstore},
		{"tampered signature", tamper(t, fs.Sign(t, good, gh), func(b map[string]any) {
			sig := b["dsseEnvelope"].(map[string]any)["signatures"].([]any)[0].(map[string]any)
			raw, _ := base64.StdEncoding.DecodeString(sig["sig"].(string))
			raw[len(raw)-1] ^= 1
			sig["sig"] = base64.StdEncoding.EncodeToString(raw)
		}), expect(zlib), CheckSigstore},
		{"two subjects", fs.Sign(t, with(func(m map[string]any) {
			m["subject"] = append(m["subject"].([]any), map[string]any{"name": quetz.name, "digest": map[string]any{"sha256": quetz.sha}})
		}), gh), expect(zlib), CheckSubject},
		{"no subject", fs.Sign(t, with(func(m map[string]any) { m["subject"] = []any{} }), gh), expect(zlib), CheckSubject},
		{"a second digest", fs.Sign(t, with(func(m map[string]any) {
			m["subject"].([]any)[0].(map[string]any)["digest"].(map[string]any)["sha512"] = strings.Repeat("ab", 64)
		}), gh), expect(zlib), CheckSubject},
		{"a bundle from another root", other.Sign(t, good, gh), expect(zlib), CheckSigstore},
		{"a certificate from another CA, logged in the trusted log", fs.Sign(t, good, attesttest.Signing{SAN: gh.SAN, Issuer: githubIssuer, OtherCA: other}), expect(zlib), CheckSigstore},
		{"a valid bundle for another package", fs.Sign(t, statement(t, quetz.name, quetz.sha, nil), gh), expect(zlib), CheckSubjectName},
		{"targetChannel mismatch", fs.Sign(t, with(func(m map[string]any) {
			m["predicate"] = map[string]any{"targetChannel": "https://prefix.dev/conda-forge"}
		}), gh), expect(zlib), CheckTargetChannel},
		{"replay onto another label's channel", fs.Sign(t, good, gh), func() Expect { e := expect(zlib); e.Channel = channelURL + "/label/dev"; return e }(), CheckTargetChannel},
		{"targetChannel with a trailing slash", fs.Sign(t, with(func(m map[string]any) { m["predicate"] = map[string]any{"targetChannel": channelURL + "/"} }), gh), expect(zlib), CheckTargetChannel},
		{"targetChannel not a string", fs.Sign(t, with(func(m map[string]any) { m["predicate"] = map[string]any{"targetChannel": 1} }), gh), expect(zlib), CheckTargetChannel},
		{"targetChannel, channel URL unknown", fs.Sign(t, good, gh), func() Expect { e := expect(zlib); e.Channel = ""; return e }(), CheckTargetChannel},
		{"no signer allowed", fs.Sign(t, good, gh), func() Expect { e := expect(zlib); e.Signers = nil; return e }(), CheckIdentity},
		{"not JSON", []byte("not json"), expect(zlib), CheckBundle},
		{"a JSON array of bundles", append(append([]byte("["), fs.Sign(t, good, gh)...), ']'), expect(zlib), CheckBundle},
		{"too large", bytes.Repeat([]byte(" "), MaxBundle+1), expect(zlib), CheckBundle},
		{"payload is not a statement", fs.Sign(t, []byte(`{"hello":"world"}`), gh), expect(zlib), CheckStatement},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(tt.bundle, tt.want)
			var e *Error
			if !errors.As(err, &e) || !IsRefused(err) {
				t.Fatalf("err = %v, want a refusal by %s", err, tt.check)
			}
			if e.Check != tt.check || !strings.Contains(err.Error(), string(tt.check)) {
				t.Fatalf("refused by %s (%v), want %s", e.Check, err, tt.check)
			}
		})
	}
}

// tamper edits a bundle's JSON after it was signed.
func tamper(t testing.TB, bundle []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(bundle, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A trusted root without CT logs (a private Sigstore's) cannot demand an
// SCT; one with them does (TestRefused).
func TestSCTOnlyWhereTheRootHasCTLogs(t *testing.T) {
	fs, _, zlib := setup(t)
	v, err := NewFromFile(fs.TrustedRoot(t, false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(fs.Sign(t, statement(t, zlib.name, zlib.sha, nil), attesttest.Signing{SAN: gh.SAN, Issuer: githubIssuer, NoSCT: true}), expect(zlib)); err != nil {
		t.Fatal(err)
	}
}

func TestNewRefusesABadTrustedRoot(t *testing.T) {
	if _, err := NewFromFile(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("a missing trusted root was accepted")
	}
	if _, err := New([]byte(`{"mediaType":"nope"}`)); err == nil {
		t.Fatal("a trusted root of an unknown media type was accepted")
	}
}

// BenchmarkVerify measures one verification of a public-good-shaped
// bundle, the cost an upload pays, beside a same-run baseline: hashing a
// 10 MiB package, which every upload does.
func BenchmarkVerify(b *testing.B) {
	fs, v, zlib := setup(b)
	bundle := fs.Sign(b, statement(b, zlib.name, zlib.sha, nil), gh)
	b.Run("verify", func(b *testing.B) {
		timed(b, func() {
			if _, err := v.Verify(bundle, expect(zlib)); err != nil {
				b.Fatal(err)
			}
		})
	})
	pkg := bytes.Repeat([]byte{7}, 10<<20)
	b.Run("baseline-sha256-10MiB", func(b *testing.B) {
		timed(b, func() { sha256.Sum256(pkg) })
	})
}

// timed runs f in b's loop and reports the median and the maximum time.
func timed(b *testing.B, f func()) {
	var times []time.Duration
	for b.Loop() {
		start := time.Now()
		f()
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(times[len(times)-1].Microseconds()), "max-µs")
}

// A real public-good bundle, from sigstore-go's test data: the npm
// provenance of sigstore-js 2.0.0, signed in GitHub Actions by Fulcio's
// certificate with a real SCT and logged in Rekor, checked against the
// public-good trusted root of that time. It is no conda attestation, so it
// must pass the Sigstore, identity and issuer checks and stop at the
// predicate type: what a real bundle from a CI job goes through.
func TestRealPublicGoodBundle(t *testing.T) {
	trJSON, err := data.TrustedRoot(t, "public-good.json").MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(trJSON)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := data.Bundle(t, "sigstore.js@2.0.0-provenance.sigstore.json").MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := Expect{Filename: "sigstore-2.0.0.tgz", SHA256: strings.Repeat("0", 64), Channel: channelURL,
		Signers: []Identity{GitHub(githubIssuer, "sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main")}}
	tests := []struct {
		name    string
		signers []Identity
		check   Check
	}{
		{"its signer", want.Signers, CheckPredicateType},
		{"another workflow of the repository", []Identity{GitHub(githubIssuer, "sigstore/sigstore-js/.github/workflows/ci.yml@refs/heads/main")}, CheckIdentity},
		{"its workflow, from another issuer", []Identity{GitHub("https://token.actions.example.org", "sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main")}, CheckIssuer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := want
			w.Signers = tt.signers
			_, err := v.Verify(bundle, w)
			var e *Error
			if !errors.As(err, &e) || e.Check != tt.check {
				t.Fatalf("err = %v, want a refusal by %s", err, tt.check)
			}
		})
	}
}

// FuzzVerify feeds Verify mangled bundles: it must never panic, and every
// failure must be a refusal naming a check, for the server's 400.
func FuzzVerify(f *testing.F) {
	fs, v, zlib := setup(f)
	good := fs.Sign(f, statement(f, zlib.name, zlib.sha, nil), gh)
	f.Add(good)
	f.Add(fs.Sign(f, statement(f, zlib.name, zlib.sha, func(m map[string]any) { m["subject"] = []any{} }), gh))
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	f.Fuzz(func(t *testing.T, bundle []byte) {
		_, err := v.Verify(bundle, expect(zlib))
		var e *Error
		if err != nil && (!errors.As(err, &e) || e.Check == "") {
			t.Fatalf("%v is not a refusal naming a check", err)
		}
	})
}

// statement is a CEP 27 statement for channelURL.
func statement(t testing.TB, name, sha string, edit func(map[string]any)) []byte {
	t.Helper()
	return attesttest.Statement(t, name, sha, channelURL, edit)
}
