package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/attest"
	"github.com/conda-upload-server/conda-upload-server/internal/attest/attesttest"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/oidctest"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
)

const (
	channelURL = "https://conda.example.org/recipes"
	// The trusted publisher's workflow, as oidctest.GitHubClaims says.
	jobWorkflowRef = "myorg/recipes/.github/workflows/release.yml@refs/heads/main"
	// scanToken may add attestations signed by the scan workflow.
	scanToken = "sc4n-attest-only"
	scanSAN   = "https://github.com/myorg/scans/.github/workflows/scan.yml@refs/heads/main"
)

// attestEnv is a server that verifies attestations against an offline
// Sigstore, with a trusted publisher from an oidctest issuer.
type attestEnv struct {
	*env
	sig    *attesttest.Sigstore
	issuer *oidctest.Issuer
	// gh is how Fulcio certifies the publisher's workflow.
	gh attesttest.Signing
}

func startAttest(t testing.TB, policy func(*server.Attestations)) *attestEnv {
	t.Helper()
	sig := attesttest.New(t)
	v, err := attest.NewFromFile(sig.TrustedRoot(t, true))
	if err != nil {
		t.Fatal(err)
	}
	is := oidctest.NewIssuer(t)
	tv, err := trusted.New([]trusted.Publisher{{
		Name: "gh-recipes", Issuer: is.URL, Audiences: []string{"conda-upload.example.org"}, CAFile: is.CAFile,
		Claims: map[string]string{"repository": "myorg/recipes", "workflow": "release.yml"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, func(o *server.Options) {
		o.Trusted = tv
		o.Attest = server.Attestations{Mode: "verify", Verifier: v, ChannelURL: channelURL}
		if policy != nil {
			policy(&o.Attest)
		}
		a, err := auth.New(auth.DefaultSalt, []auth.Token{
			{Name: "ci-linux", Hash: mustHash(token)},
			{Name: "operator", Hash: mustHash(adminToken), Scopes: []string{auth.ScopeUpload, auth.ScopeRead, auth.ScopePromote, auth.ScopeDelete}},
			{Name: "scanner", Hash: mustHash(scanToken), Scopes: []string{auth.ScopeAttest}, Signers: []auth.Signer{{SAN: scanSAN, Issuer: is.URL}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		o.Auth = a
	})
	return &attestEnv{env: e, sig: sig, issuer: is, gh: attesttest.Signing{SAN: "https://github.com/" + jobWorkflowRef, Issuer: is.URL}}
}

// mint returns a token minted for the publisher's job.
func (e *attestEnv) mint(t testing.TB) string {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"token": e.issuer.Sign(t, oidctest.GitHubClaims(e.issuer.URL, time.Now()))})
	resp, err := e.client.Post(e.url+"api/oidc/mint_token", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	tok, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("mint: %d %s", resp.StatusCode, tok)
	}
	return string(tok)
}

// pkg is a package and its sha256.
type pkg struct {
	fn   string
	data []byte
	sha  string
}

func newPkg(t testing.TB, name string) pkg {
	data := pkgtest.Conda(t, pkgtest.Simple(name, "1.0", "0", "noarch"))
	return pkg{name + "-1.0-0.conda", data, hexSHA(data)}
}

// bundle signs a statement about p for channel.
func (e *attestEnv) bundle(t testing.TB, p pkg, channel string, o attesttest.Signing, edit func(map[string]any)) []byte {
	t.Helper()
	return e.sig.Sign(t, attesttest.Statement(t, p.fn, p.sha, channel, edit), o)
}

// stored lists what is below label/noarch for p: the package and its
// sidecars.
func (e *attestEnv) stored(t *testing.T, label string, p pkg) []string {
	t.Helper()
	dir := filepath.Join(e.root, "noarch")
	if label != "main" {
		dir = filepath.Join(e.root, "label", label, "noarch")
	}
	m, _ := filepath.Glob(filepath.Join(dir, p.fn+"*"))
	return m
}

// TestAttestationRefusals: each attestation that does not verify is a 400
// naming the failed check, and nothing is stored, neither the package
// nor a sidecar.
func TestAttestationRefusals(t *testing.T) {
	e := startAttest(t, nil)
	tok := e.mint(t)
	p, other := newPkg(t, "att"), newPkg(t, "other")
	otherSigstore := attesttest.New(t)
	tampered := func() []byte {
		var b map[string]any
		json.Unmarshal(e.bundle(t, p, channelURL, e.gh, nil), &b)
		b["dsseEnvelope"].(map[string]any)["payload"] = base64.StdEncoding.EncodeToString(attesttest.Statement(t, p.fn, other.sha, channelURL, nil))
		out, _ := json.Marshal(b)
		return out
	}
	tests := []struct {
		name   string
		label  string
		bundle []byte
		check  attest.Check
	}{
		{"wrong digest", "main", e.bundle(t, pkg{p.fn, nil, other.sha}, channelURL, e.gh, nil), attest.CheckSubjectDigest},
		{"wrong subject name", "main", e.bundle(t, pkg{other.fn, nil, p.sha}, channelURL, e.gh, nil), attest.CheckSubjectName},
		{"wrong predicate type", "main", e.bundle(t, p, channelURL, e.gh, func(m map[string]any) { m["predicateType"] = "https://slsa.dev/provenance/v1" }), attest.CheckPredicateType},
		{"wrong signer identity", "main", e.bundle(t, p, channelURL, attesttest.Signing{SAN: "https://github.com/myorg/recipes/.github/workflows/pr.yml@refs/heads/main", Issuer: e.issuer.URL}, nil), attest.CheckIdentity},
		{"a token's identity is not the publisher's", "main", e.bundle(t, p, channelURL, attesttest.Signing{SAN: scanSAN, Issuer: e.issuer.URL}, nil), attest.CheckIdentity},
		{"wrong issuer", "main", e.bundle(t, p, channelURL, attesttest.Signing{SAN: e.gh.SAN, Issuer: "https://issuer.example.org"}, nil), attest.CheckIssuer},
		{"expired certificate without a timestamp", "main", e.bundle(t, p, channelURL, attesttest.Signing{SAN: e.gh.SAN, Issuer: e.issuer.URL, NotBefore: time.Now().Add(-2 * time.Hour), NoTSA: true}, nil), attest.CheckSigstore},
		{"tampered bundle", "main", tampered(), attest.CheckSigstore},
		{"two subjects", "main", e.bundle(t, p, channelURL, e.gh, func(m map[string]any) {
			m["subject"] = append(m["subject"].([]any), map[string]any{"name": other.fn, "digest": map[string]any{"sha256": other.sha}})
		}), attest.CheckSubject},
		{"another root", "main", otherSigstore.Sign(t, attesttest.Statement(t, p.fn, p.sha, channelURL, nil), e.gh), attest.CheckSigstore},
		{"a valid bundle for another package", "main", e.bundle(t, other, channelURL, e.gh, nil), attest.CheckSubjectName},
		{"a replay onto another label", "dev", e.bundle(t, p, channelURL, e.gh, nil), attest.CheckTargetChannel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.attest(t, tt.label, p.fn, p.data, tt.bundle, tok, "")
			if r.status != 400 || !strings.Contains(r.raw, "attestation refused: "+string(tt.check)+":") {
				t.Errorf("%d %s, want 400 naming %s", r.status, r.raw, tt.check)
			}
			if got := e.stored(t, tt.label, p); len(got) != 0 {
				t.Errorf("stored: %q", got)
			}
		})
	}
}

// TestAttestationVerified: the publisher's own attestation is accepted
// with the package (prefix.dev's part, and the attestation field of
// POST /), published as <file>.sigs and its revision, and named in
// repodata; a later one from a token's identity is appended, not
// replacing it, and the admin list shows both signers. A replay onto a
// copy in another label is refused.
func TestAttestationVerified(t *testing.T) {
	e := startAttest(t, nil)
	tok := e.mint(t)
	p := newPkg(t, "good")
	first := e.bundle(t, p, channelURL, e.gh, nil)
	if r := e.attest(t, "main", p.fn, p.data, first, tok, ""); r.status != 201 {
		t.Fatal(r.raw)
	}
	sigs := filepath.Join(e.root, "noarch", p.fn+".sigs")
	b, err := os.ReadFile(sigs)
	if err != nil || !bytes.Equal(b, append(append([]byte("["), first...), ']')) {
		t.Fatalf(".sigs: %v %.80s", err, b)
	}
	if _, err := os.Stat(sigs + "." + sidecar.Digest(b)); err != nil {
		t.Fatal(err)
	}
	if got := e.recordField(t, "noarch", p.fn); got != sidecar.Digest(b) {
		t.Errorf("attestations_sha256 %q, want %s", got, sidecar.Digest(b))
	}

	// A later attestation: the scanner's, with its own scope and identity.
	scan := e.bundle(t, p, channelURL, attesttest.Signing{SAN: scanSAN, Issuer: e.issuer.URL}, nil)
	path := "api/v1/attestations/main/noarch/" + p.fn
	if r := e.call(t, "POST", path, token, string(scan)); r.status != 403 {
		t.Errorf("without the attest scope: %d %s", r.status, r.raw)
	}
	if r := e.call(t, "POST", path, scanToken, string(e.bundle(t, p, channelURL, e.gh, nil))); r.status != 400 || !strings.Contains(r.raw, "identity") {
		t.Errorf("signed by an identity the token does not have: %d %s", r.status, r.raw)
	}
	if r := e.call(t, "POST", path, scanToken, string(scan)); r.status != 200 || r.body["indexed"] != true {
		t.Fatalf("later attestation: %d %s", r.status, r.raw)
	}
	after, _ := os.ReadFile(sigs)
	if !bytes.HasPrefix(after, b[:len(b)-1]) || !bytes.HasSuffix(after, append(append([]byte(","), scan...), ']')) {
		t.Errorf("not appended byte for byte: %.120s", after)
	}
	if got := e.recordField(t, "noarch", p.fn); got != sidecar.Digest(after) {
		t.Errorf("after the later attestation, attestations_sha256 %q", got)
	}
	r := e.call(t, "GET", "api/v1/packages/main/noarch", adminToken, "")
	files, _ := r.body["files"].([]any)
	if len(files) != 1 || !strings.Contains(r.raw, `"signers":["`+e.gh.SAN+`","`+scanSAN+`"]`) || !strings.Contains(r.raw, sidecar.Digest(after)) {
		t.Errorf("admin list: %s", r.raw)
	}

	// A replay onto a copy: the copy carries the sidecar, but the same
	// bundle sent for the copy's label names main's URL.
	if r := e.call(t, "POST", "api/v1/packages/main/noarch/"+p.fn+"/copy", adminToken, `{"to":"dev"}`); r.status != 200 && r.status != 201 {
		t.Fatal(r.raw)
	}
	devSigs := filepath.Join(e.root, "label", "dev", "noarch", p.fn+".sigs")
	before, _ := os.ReadFile(devSigs)
	if !bytes.Equal(before, after) || e.recordField(t, "label/dev/noarch", p.fn) != sidecar.Digest(after) {
		t.Errorf("the copy's sidecar %.60s, attestations_sha256 %v", before, e.recordField(t, "label/dev/noarch", p.fn))
	}
	if r := e.call(t, "POST", "api/v1/attestations/dev/noarch/"+p.fn, adminToken, string(first)); r.status != 403 {
		t.Errorf("admin without attest scope: %d %s", r.status, r.raw)
	}
	replay := e.bundle(t, p, channelURL, attesttest.Signing{SAN: scanSAN, Issuer: e.issuer.URL}, func(m map[string]any) { m["predicate"] = map[string]any{"targetChannel": channelURL} })
	if r := e.call(t, "POST", "api/v1/attestations/dev/noarch/"+p.fn, scanToken, string(replay)); r.status != 400 || !strings.Contains(r.raw, "target_channel") {
		t.Errorf("replay onto dev: %d %s", r.status, r.raw)
	}
	if now, _ := os.ReadFile(devSigs); !bytes.Equal(now, before) {
		t.Error("a refused replay changed the copy's sidecar")
	}

	// The attestation field of POST /, for the dev label's URL.
	q := newPkg(t, "form")
	ct, body := form(part{name: "token", data: []byte(tok)}, part{name: "label", data: []byte("dev")},
		part{name: "attestation", data: e.bundle(t, q, channelURL+"/label/dev", e.gh, nil)}, part{name: "artifact", filename: q.fn, data: q.data})
	if r := e.post(t, nil, ct, body); r.status != 201 {
		t.Fatalf("POST / with an attestation field: %s", r.raw)
	}
	if got := e.stored(t, "dev", q); len(got) != 3 {
		t.Errorf("dev holds %q", got)
	}
}

// recordField returns the attestations_sha256 of fn in dir's repodata.json.
func (e *attestEnv) recordField(t *testing.T, dir, fn string) any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, dir, "repodata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Conda map[string]map[string]any `json:"packages.conda"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	return idx.Conda[fn]["attestations_sha256"]
}

// TestAttestationRequired: require, per label and per trusted publisher,
// refuses an upload without a valid attestation, storing nothing; other
// labels and publishers are not bound.
func TestAttestationRequired(t *testing.T) {
	for _, tt := range []struct {
		name   string
		policy func(*server.Attestations)
		label  string
		plain  bool // a plain token, not the publisher
		want   int
	}{
		{"required everywhere", func(a *server.Attestations) { a.Require = true }, "main", false, 400},
		{"required for the label", func(a *server.Attestations) { a.RequireLabels = []string{"main"} }, "main", false, 400},
		{"another label", func(a *server.Attestations) { a.RequireLabels = []string{"main"} }, "dev", false, 201},
		{"required for the publisher", func(a *server.Attestations) { a.RequirePublishers = []string{"gh-recipes"} }, "main", false, 400},
		{"a plain token, not the publisher", func(a *server.Attestations) { a.RequirePublishers = []string{"gh-recipes"} }, "main", true, 201},
		{"not required", nil, "main", false, 201},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := startAttest(t, tt.policy)
			tok := token
			if !tt.plain {
				tok = e.mint(t)
			}
			p := newPkg(t, "req")
			r := e.attest(t, tt.label, p.fn, p.data, nil, tok, "")
			if r.status != tt.want {
				t.Fatalf("%d %s, want %d", r.status, r.raw, tt.want)
			}
			if tt.want == 400 {
				if !strings.Contains(r.raw, "needs a valid attestation") || len(e.stored(t, tt.label, p)) != 0 {
					t.Errorf("%s; stored %q", r.raw, e.stored(t, tt.label, p))
				}
				// With a valid attestation it goes in.
				if r := e.attest(t, tt.label, p.fn, p.data, e.bundle(t, p, channelURL, e.gh, nil), tok, ""); r.status != 201 {
					t.Errorf("with an attestation: %s", r.raw)
				}
			}
		})
	}
}

// TestAttestationsOff: "off" drops an upload's attestation and refuses a
// later one; the package is stored.
func TestAttestationsOff(t *testing.T) {
	e := startAttest(t, func(a *server.Attestations) { a.Mode = "off" })
	p := newPkg(t, "off")
	if r := e.attest(t, "main", p.fn, p.data, []byte(`{"mediaType": "x"}`), token, ""); r.status != 201 {
		t.Fatal(r.raw)
	}
	if got := e.stored(t, "main", p); !slices.Equal(got, []string{filepath.Join(e.root, "noarch", p.fn)}) {
		t.Errorf("stored %q", got)
	}
	if r := e.call(t, "POST", "api/v1/attestations/main/noarch/"+p.fn, scanToken, `{"mediaType": "x"}`); r.status != http.StatusForbidden {
		t.Errorf("later attestation with attestations off: %d %s", r.status, r.raw)
	}
}

// BenchmarkUploadAttested measures what verification adds to an upload:
// small packages over TLS by prefix.dev's protocol with a minted token,
// each until it is stored and indexed, alternately without and with a
// verified attestation on the same server, so that both see the same
// load. It reports each kind's p50 and max, their ratio at the p50, and
// the verification's own p50 and max (from the server's log).
func BenchmarkUploadAttested(b *testing.B) {
	e := startAttest(b, nil)
	tok := e.mint(b)
	times := map[bool][]time.Duration{}
	i := 0
	for b.Loop() {
		for _, attested := range []bool{false, true} {
			b.StopTimer()
			p := newPkg(b, fmt.Sprintf("bench%d", i))
			i++
			parts := []prefixPart{filePart(p.fn, p.data, true)}
			if attested {
				parts = append([]prefixPart{{name: "attestation", data: e.bundle(b, p, channelURL, e.gh, nil)}}, parts...)
			}
			req := e.prefixRequest("main", "", bearer(tok), parts...)
			b.StartTimer()
			start := time.Now()
			resp, err := e.client.Do(req)
			if err != nil || resp.StatusCode != 201 {
				b.Fatalf("%v %v", resp, err)
			}
			resp.Body.Close()
			times[attested] = append(times[attested], time.Since(start))
		}
	}
	b.StopTimer()
	plain, attested := report(b, times[false], "plain"), report(b, times[true], "attested")
	b.ReportMetric(float64(attested)/float64(plain), "attested/plain-p50")
	report(b, verifyTimes(b, e.logs.String()), "verify")
}

// report reports the p50 and max of times, in milliseconds, and returns
// the p50.
func report(b *testing.B, times []time.Duration, what string) time.Duration {
	slices.Sort(times)
	p50 := times[len(times)/2]
	b.ReportMetric(float64(p50.Microseconds())/1000, what+"-p50-ms")
	b.ReportMetric(float64(times[len(times)-1].Microseconds())/1000, what+"-max-ms")
	return p50
}

// verifyTimes reads the verification times the server logged.
func verifyTimes(b *testing.B, logs string) []time.Duration {
	var out []time.Duration
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `msg="attestation verified"`) {
			continue
		}
		_, v, _ := strings.Cut(line, " seconds=")
		var sec float64
		if _, err := fmt.Sscan(v, &sec); err != nil {
			b.Fatal(line)
		}
		out = append(out, time.Duration(sec*float64(time.Second)))
	}
	if len(out) == 0 {
		b.Fatal("no verification logged")
	}
	return out
}
