// Package oidctest is a test OIDC issuer on loopback, for the tests of
// trusted publishing: an HTTPS server with discovery and a JWKS, signing
// ID tokens with keys it generates, which it can rotate.
package oidctest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// T is what the helpers need of a *testing.T.
type T interface {
	Helper()
	Fatal(args ...any)
	TempDir() string
	Cleanup(func())
}

// Issuer is a test OIDC issuer.
type Issuer struct {
	Srv     *httptest.Server
	URL     string
	CAFile  string // its certificate, to trust it
	mu      sync.Mutex
	keys    []*jose.JSONWebKey // private; the public halves are served
	fetches atomic.Int64
}

// NewIssuer starts an issuer.
func NewIssuer(t T) *Issuer {
	t.Helper()
	is := &Issuer{}
	is.Rotate(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": is.URL, "jwks_uri": is.URL + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"}})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		is.fetches.Add(1)
		is.mu.Lock()
		defer is.mu.Unlock()
		var set jose.JSONWebKeySet
		for _, k := range is.keys {
			set.Keys = append(set.Keys, k.Public())
		}
		json.NewEncoder(w).Encode(set)
	})
	is.Srv = httptest.NewTLSServer(mux)
	t.Cleanup(is.Srv.Close)
	is.URL = is.Srv.URL
	is.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(is.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: is.Srv.Certificate().Raw}), 0o644)
	return is
}

// Rotate replaces the signing keys with a new RSA and a new EC key.
func (is *Issuer) Rotate(t T) {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	is.mu.Lock()
	defer is.mu.Unlock()
	n := time.Now().UnixNano()
	is.keys = []*jose.JSONWebKey{
		{Key: rk, KeyID: "rsa-" + time.Unix(0, n).Format("150405.000000000"), Algorithm: "RS256", Use: "sig"},
		{Key: ek, KeyID: "ec-" + time.Unix(0, n).Format("150405.000000000"), Algorithm: "ES256", Use: "sig"},
	}
}

// Sign signs claims with the issuer's current RSA key.
func (is *Issuer) Sign(t T, claims map[string]any) string {
	t.Helper()
	is.mu.Lock()
	k := is.keys[0]
	is.mu.Unlock()
	return SignWith(t, jose.RS256, k.Key, k.KeyID, claims)
}

// Key returns the issuer's current RSA key and its id.
func (is *Issuer) Key() (*jose.JSONWebKey, string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.keys[0], is.keys[0].KeyID
}

// Fetches counts the requests for the JWKS.
func (is *Issuer) Fetches() int64 { return is.fetches.Load() }

// SignWith signs claims with any key and algorithm, for hostile tokens.
func SignWith(t T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// WriteJWKS writes the issuer's public keys to a file.
func (is *Issuer) WriteJWKS(path string) error {
	is.mu.Lock()
	defer is.mu.Unlock()
	var set jose.JSONWebKeySet
	for _, k := range is.keys {
		set.Keys = append(set.Keys, k.Public())
	}
	b, err := json.Marshal(set)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// GitHubClaims are the claims of a GitHub Actions ID token of the release
// workflow of myorg/recipes on main, as GitHub documents them.
func GitHubClaims(iss string, now time.Time) map[string]any {
	return map[string]any{
		"iss": iss, "aud": "conda-upload.example.org",
		"sub":                 "repo:myorg/recipes:ref:refs/heads/main",
		"repository":          "myorg/recipes",
		"repository_owner":    "myorg",
		"repository_owner_id": "1234",
		"job_workflow_ref":    "myorg/recipes/.github/workflows/release.yml@refs/heads/main",
		"ref":                 "refs/heads/main",
		"sha":                 "0123456789abcdef0123456789abcdef01234567",
		"environment":         "release",
		"jti":                 "jti-" + now.Format(time.RFC3339Nano),
		"iat":                 now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}
}
