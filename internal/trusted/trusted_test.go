package trusted_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/oidctest"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
)

func publisher(iss, caFile string) trusted.Publisher {
	return trusted.Publisher{
		Name: "gh-recipes", Issuer: iss, Audiences: []string{"conda-upload.example.org"}, CAFile: caFile,
		Claims:  map[string]string{"repository": "myorg/recipes", "repository_owner_id": "1234", "workflow": "release.yml", "ref": "refs/heads/main", "environment": "release"},
		Subdirs: []string{"linux-64", "noarch"},
	}
}

func with(c map[string]any, kv ...any) map[string]any {
	out := maps.Clone(c)
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// TestVerify: a GitHub token that meets the rules is accepted once, with
// the publisher's scopes; the hostile catalogue of tokens is refused, each
// for its reason.
func TestVerify(t *testing.T) {
	is := oidctest.NewIssuer(t)
	other := oidctest.NewIssuer(t)
	clock := time.Now()
	v, err := trusted.New([]trusted.Publisher{publisher(is.URL, is.CAFile)}, trusted.WithClock(func() time.Time { return clock }))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good := oidctest.GitHubClaims(is.URL, clock)
	id, err := v.Verify(ctx, is.Sign(t, good))
	if err != nil {
		t.Fatalf("a valid token: %v", err)
	}
	if id.Publisher != "gh-recipes" || id.Repository != "myorg/recipes" || id.Ref != "refs/heads/main" || id.SHA == "" ||
		!id.Token.Can(auth.ScopeUpload) || id.Token.Can(auth.ScopeOverwrite) || !id.Token.Allows("noarch") || id.Token.Allows("osx-64") ||
		id.Issuer != is.URL || id.JobWorkflowRef != "myorg/recipes/.github/workflows/release.yml@refs/heads/main" || id.CIConfigRefURI != "" {
		t.Errorf("identity %+v", id)
	}
	// Case in a repository name is not an identity (PyPI compares it
	// folded); the workflow file name is exact.
	if _, err := v.Verify(ctx, is.Sign(t, with(good, "jti", "case-1", "repository", "MyOrg/Recipes",
		"sub", "repo:MyOrg/Recipes:ref:refs/heads/main", "job_workflow_ref", "MyOrg/Recipes/.github/workflows/release.yml@refs/heads/main"))); err != nil {
		t.Errorf("repository in other case: %v", err)
	}

	key, kid := is.Key()
	otherKey, _ := other.Key()
	pub, _ := x509.MarshalPKIXPublicKey(key.Public().Key)
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+is.URL+`","aud":"conda-upload.example.org","repository":"myorg/recipes"}`)) + "."
	hostile := []struct {
		name   string
		token  string
		reason string
	}{
		{"alg none", none, "malformed or wrongly signed"},
		{"HS256 with the public key as secret", oidctest.SignWith(t, jose.HS256, pub, kid, good), "malformed or wrongly signed"},
		{"unknown kid", oidctest.SignWith(t, jose.RS256, otherKey.Key, "no-such-kid", with(good, "jti", "h1")), "verify"},
		{"another issuer's key, our iss", oidctest.SignWith(t, jose.RS256, otherKey.Key, kid, with(good, "jti", "h2")), "verify"},
		{"another issuer", other.Sign(t, with(oidctest.GitHubClaims(other.URL, clock), "jti", "h3")), "no trusted publisher for issuer"},
		{"wrong aud", is.Sign(t, with(good, "jti", "h4", "aud", "prefix.dev")), "audience"},
		{"wrong iss", is.Sign(t, with(good, "jti", "h5", "iss", "https://token.actions.githubusercontent.com")), "no trusted publisher"},
		{"wrong sub", is.Sign(t, with(good, "jti", "h6", "sub", "repo:evil/recipes:ref:refs/heads/main")), "sub"},
		{"expired", is.Sign(t, with(good, "jti", "h7", "exp", clock.Add(-2*time.Minute).Unix())), "expired"},
		{"not yet valid", is.Sign(t, with(good, "jti", "h8", "nbf", clock.Add(3*time.Minute).Unix())), "not valid before"},
		{"issued in the future", is.Sign(t, with(good, "jti", "h9", "iat", clock.Add(3*time.Minute).Unix())), "issued in the future"},
		{"no exp", is.Sign(t, with(good, "jti", "h10", "exp", nil)), "exp"},
		{"valid for a week", is.Sign(t, with(good, "jti", "h11", "exp", clock.Add(7*24*time.Hour).Unix())), "more than a day"},
		{"replayed jti", is.Sign(t, good), "already used"},
		{"no jti", is.Sign(t, with(good, "jti", nil)), "jti"},
		{"same repository, another ref", is.Sign(t, with(good, "jti", "h12", "ref", "refs/heads/dev", "job_workflow_ref", "myorg/recipes/.github/workflows/release.yml@refs/heads/dev")), "ref is"},
		{"another workflow file", is.Sign(t, with(good, "jti", "h13", "job_workflow_ref", "myorg/recipes/.github/workflows/pr.yml@refs/heads/main")), "not workflow release.yml"},
		{"workflow file in other case", is.Sign(t, with(good, "jti", "h14", "job_workflow_ref", "myorg/recipes/.github/workflows/Release.yml@refs/heads/main")), "not workflow release.yml"},
		{"workflow of another repository", is.Sign(t, with(good, "jti", "h15", "job_workflow_ref", "evil/recipes/.github/workflows/release.yml@refs/heads/main")), "not workflow"},
		{"job_workflow_ref at another ref", is.Sign(t, with(good, "jti", "h16", "job_workflow_ref", "myorg/recipes/.github/workflows/release.yml@refs/heads/evil")), "does not end in the token's ref"},
		{"look-alike repository", is.Sign(t, with(good, "jti", "h17", "repository", "myorg/recipes\u200b", "sub", "repo:myorg/recipes\u200b:ref:refs/heads/main")), "repository"},
		{"longer repository", is.Sign(t, with(good, "jti", "h18", "repository", "myorg/recipes-fork", "sub", "repo:myorg/recipes-fork:ref:refs/heads/main")), "sub"},
		{"another owner id", is.Sign(t, with(good, "jti", "h19", "repository_owner_id", "9999")), "repository_owner_id"},
		{"another environment", is.Sign(t, with(good, "jti", "h20", "environment", "staging")), "environment"},
		{"truncated", is.Sign(t, with(good, "jti", "h21"))[:200], "malformed"},
		{"oversized", "ey" + strings.Repeat("A", 20<<10) + ".x.y", "over"},
		{"not a JWT", "eyJ.not-base64!.x", "malformed"},
		{"payload not JSON", oidctest.SignWith(t, jose.RS256, key.Key, kid, nil)[:0] + rawSigned(t, is, []byte("not json")), "payload"},
	}
	for _, h := range hostile {
		t.Run(h.name, func(t *testing.T) {
			_, err := v.Verify(ctx, h.token)
			if err == nil || !trusted.IsRefused(err) || !strings.Contains(err.Error(), h.reason) {
				t.Errorf("err %v, want a refusal saying %q", err, h.reason)
			}
		})
	}
}

// rawSigned signs an arbitrary payload with the issuer's key.
func rawSigned(t *testing.T, is *oidctest.Issuer, payload []byte) string {
	t.Helper()
	key, kid := is.Key()
	s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key.Key},
		(&jose.SignerOptions{}).WithHeader(jose.HeaderKey("kid"), kid))
	obj, _ := s.Sign(payload)
	out, _ := obj.CompactSerialize()
	return out
}

// TestKeyRotationAndOutage: after the issuer rotates its keys, a token
// with the new kid makes the keys be fetched again, at most once every
// 30 s; when the issuer is unreachable, verification fails closed with a
// KeysError (not a 401 of the job's making).
func TestKeyRotationAndOutage(t *testing.T) {
	is := oidctest.NewIssuer(t)
	clock := time.Now()
	var failures []string
	v, _ := trusted.New([]trusted.Publisher{publisher(is.URL, is.CAFile)}, trusted.WithClock(func() time.Time { return clock }),
		trusted.WithKeyFailures(func(iss string) { failures = append(failures, iss) }))
	ctx := context.Background()
	if _, err := v.Verify(ctx, is.Sign(t, oidctest.GitHubClaims(is.URL, clock))); err != nil {
		t.Fatal(err)
	}
	if n := is.Fetches(); n != 1 {
		t.Fatalf("%d key fetches", n)
	}
	is.Rotate(t)
	clock = clock.Add(time.Second)
	// Within 30 s of the last fetch, an unknown kid does not refetch.
	if _, err := v.Verify(ctx, is.Sign(t, oidctest.GitHubClaims(is.URL, clock))); err == nil {
		t.Error("a token of the new key verified without a refetch")
	}
	if n := is.Fetches(); n != 1 {
		t.Errorf("unknown kid refetched within 30 s: %d fetches", n)
	}
	clock = clock.Add(31 * time.Second)
	if _, err := v.Verify(ctx, is.Sign(t, oidctest.GitHubClaims(is.URL, clock))); err != nil {
		t.Errorf("after rotation: %v", err)
	}
	if n := is.Fetches(); n != 2 {
		t.Errorf("%d key fetches after rotation, want 2", n)
	}

	// An issuer that is down, for a verifier that has no keys yet.
	v2, _ := trusted.New([]trusted.Publisher{publisher(is.URL, is.CAFile)}, trusted.WithKeyFailures(func(iss string) { failures = append(failures, iss) }))
	tok := is.Sign(t, oidctest.GitHubClaims(is.URL, time.Now()))
	is.Srv.Close()
	_, err := v2.Verify(ctx, tok)
	var ke *trusted.KeysError
	if !errors.As(err, &ke) || trusted.IsRefused(err) {
		t.Errorf("issuer down: %v, want a KeysError", err)
	}
	if len(failures) == 0 {
		t.Error("key failures not reported")
	}
}

// TestJWKSFile: keys from a file, for hosts with no way out.
func TestJWKSFile(t *testing.T) {
	is := oidctest.NewIssuer(t)
	file := t.TempDir() + "/jwks.json"
	if err := is.WriteJWKS(file); err != nil {
		t.Fatal(err)
	}
	p := publisher(is.URL, "")
	p.JWKSFile = file
	v, _ := trusted.New([]trusted.Publisher{p})
	is.Srv.Close() // no network needed
	if _, err := v.Verify(context.Background(), is.Sign(t, oidctest.GitHubClaims(is.URL, time.Now()))); err != nil {
		t.Errorf("jwks_file: %v", err)
	}
}

// TestMint: a minted token carries the identity until its expiry.
func TestMint(t *testing.T) {
	is := oidctest.NewIssuer(t)
	clock := time.Now()
	v, _ := trusted.New([]trusted.Publisher{publisher(is.URL, is.CAFile)}, trusted.WithClock(func() time.Time { return clock }), trusted.WithTokenTTL(time.Hour))
	if v.TTL() != trusted.MaxTokenTTL {
		t.Errorf("TTL %s, want at most %s", v.TTL(), trusted.MaxTokenTTL)
	}
	id, err := v.Verify(context.Background(), is.Sign(t, oidctest.GitHubClaims(is.URL, clock)))
	if err != nil {
		t.Fatal(err)
	}
	tok, exp := v.Mint(id)
	if !exp.Equal(clock.Add(15 * time.Minute)) {
		t.Errorf("expires %s", exp)
	}
	if got, ok := v.Lookup(tok); !ok || got.Publisher != "gh-recipes" || !got.Token.Expires.Equal(exp) {
		t.Errorf("lookup: %+v %v", got, ok)
	}
	if _, ok := v.Lookup(tok + "x"); ok {
		t.Error("a wrong token was found")
	}
	clock = clock.Add(15 * time.Minute)
	if _, ok := v.Lookup(tok); ok {
		t.Error("an expired minted token is still accepted")
	}
}
