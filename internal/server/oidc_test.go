package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/oidctest"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
)

// TestTrustedPublishing runs the three ways in against a test issuer:
// rattler's mint_token (the body is the token), PEP 807's audience and
// mint-token, and the ID token itself as an upload's Bearer token.
func TestTrustedPublishing(t *testing.T) {
	is := oidctest.NewIssuer(t)
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	v, err := trusted.New([]trusted.Publisher{{
		Name: "gh-recipes", Issuer: is.URL, Audiences: []string{"conda-upload.example.org"}, CAFile: is.CAFile,
		Claims:  map[string]string{"repository": "myorg/recipes", "workflow": "release.yml", "ref": "refs/heads/main"},
		Subdirs: []string{"noarch"},
	}}, trusted.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, func(o *server.Options) { o.Trusted = v })
	jti := 0
	jwt := func() string {
		jti++
		c := oidctest.GitHubClaims(is.URL, now())
		c["jti"] = "jti-" + string(rune('a'+jti))
		return is.Sign(t, c)
	}
	post := func(path string, body any) (*http.Response, []byte) {
		b, _ := json.Marshal(body)
		resp, err := e.client.Post(strings.TrimSuffix(e.url, "/")+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp, out
	}
	upload := func(tok, name string, subdir string) response {
		data := pkgtest.Conda(t, pkgtest.Simple(name, "1.0", "0", subdir))
		ct, body := form(part{name: "artifact", filename: name + "-1.0-0.conda", data: data})
		return e.post(t, http.Header{"Authorization": {"Bearer " + tok}}, ct, body)
	}

	r := e.do(t, mustReq(t, "GET", e.url+"_/oidc/audience"))
	if r.status != 200 || r.body["audience"] != "conda-upload.example.org" {
		t.Errorf("audience: %d %s", r.status, r.raw)
	}

	// rattler: the response body is the token.
	resp, tok := post("/api/oidc/mint_token", map[string]string{"token": jwt()})
	if resp.StatusCode != 200 || !strings.HasPrefix(string(tok), "cus_oidc_") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("mint_token: %d %q", resp.StatusCode, tok)
	}
	if r := upload(string(tok), "minted", "noarch"); r.status != 201 {
		t.Errorf("upload with a minted token: %d %s", r.status, r.raw)
	}
	if r := upload(string(tok), "elsewhere", "linux-64"); r.status != 403 {
		t.Errorf("upload outside the publisher's subdirs: %d %s", r.status, r.raw)
	}

	// PEP 807.
	resp, body := post("/_/oidc/mint-token", map[string]string{"token": jwt()})
	var pep struct {
		Success bool
		Token   string
		Expires int64
	}
	if json.Unmarshal(body, &pep); resp.StatusCode != 200 || !pep.Success || pep.Expires != now().Add(15*time.Minute).Unix() {
		t.Errorf("PEP 807 mint-token: %d %s", resp.StatusCode, body)
	}

	// The ID token itself, as curl in CI would send it; once only.
	direct := jwt()
	if r := upload(direct, "direct", "noarch"); r.status != 201 {
		t.Errorf("upload with the ID token: %d %s", r.status, r.raw)
	}
	if r := upload(direct, "again", "noarch"); r.status != 401 || !strings.Contains(r.raw, "already used") {
		t.Errorf("replayed ID token: %d %s", r.status, r.raw)
	}

	// Refusals, with their reasons.
	resp, body = post("/api/oidc/mint_token", map[string]string{"token": "eyJ.bad.token"})
	if resp.StatusCode != 401 || !strings.Contains(string(body), "malformed") {
		t.Errorf("bad JWT: %d %s", resp.StatusCode, body)
	}
	resp, body = post("/api/oidc/mint_token", map[string]string{"nope": "x"})
	if resp.StatusCode != 400 {
		t.Errorf("no token field: %d %s", resp.StatusCode, body)
	}

	// A minted token expires.
	mu.Lock()
	clock = clock.Add(16 * time.Minute)
	mu.Unlock()
	if r := upload(string(tok), "late", "noarch"); r.status != 401 {
		t.Errorf("upload with an expired minted token: %d %s", r.status, r.raw)
	}

	logs := e.logs.String()
	if !strings.Contains(logs, "token=oidc:gh-recipes") || !strings.Contains(logs, "token minted for a trusted publisher") {
		t.Errorf("the log does not name the publisher:\n%s", logs)
	}
	for _, secret := range []string{string(tok), pep.Token, direct} {
		if strings.Contains(logs, secret) {
			t.Error("a token reached the log")
		}
	}
}

func mustReq(t *testing.T, method, url string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
