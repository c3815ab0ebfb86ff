package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/oidctest"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// TestTrustedPublishingConfined runs the real binary as nobody, with
// Landlock enforced and a trusted publisher whose keys come by discovery
// from a test issuer on loopback: the sandbox must let the server reach
// the issuer's port (and only it), and a CI job's ID token must mint a
// token that uploads, both with curl as a workflow would use it.
func TestTrustedPublishingConfined(t *testing.T) {
	testneed.Root(t)
	testneed.Tool(t, "curl", "curl")
	testneed.Landlock(t, 2)
	is := oidctest.NewIssuer(t)
	dir := shared(t)
	ca := filepath.Join(dir, "issuer-ca.pem")
	b, _ := os.ReadFile(is.CAFile)
	os.WriteFile(ca, b, 0o644)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	port := freePort(t)
	cfg := userConfig(t, dir, fmt.Sprintf(`
write_dir = %q
port = %d
certfile = %q
keyfile = %q
[[trusted_publishers]]
name = "gh-recipes"
issuer = %q
audiences = ["conda-upload.example.org"]
claims = { repository = "myorg/recipes", repository_owner_id = "1234", workflow = "release.yml", ref = "refs/heads/main" }
ca_file = %q
[sandbox]
landlock = "enforce"
`, root, port, cert, key, is.URL, ca))
	p := startServer(t, pool, port, "--config", cfg)
	u, _ := url.Parse(is.URL)
	if !p.logged("connect only to ports [" + u.Port() + "]") {
		t.Errorf("the sandbox does not say it allows the issuer's port %s", u.Port())
	}
	curl := func(args ...string) (string, string) {
		t.Helper()
		out, err := exec.Command("curl", append([]string{"-sS", "-k", "-w", "\n%{http_code}"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v %s", err, out)
		}
		s := strings.TrimSpace(string(out))
		i := strings.LastIndexByte(s, '\n')
		return s[i+1:], s[:i]
	}
	body, _ := json.Marshal(map[string]string{"token": is.Sign(t, oidctest.GitHubClaims(is.URL, time.Now()))})
	code, tok := curl("-H", "Content-Type: application/json", "--data-binary", string(body), p.url+"api/oidc/mint_token")
	if code != "200" || !strings.HasPrefix(tok, "cus_oidc_") {
		t.Fatalf("mint through the sandbox: %s %s\n%s", code, tok, p.stderr.String())
	}
	code, res := curl("-H", "Authorization: Bearer "+tok, "-F", "artifact=@"+corpusFile("quetz/other-package-0.2-0.conda"), p.url)
	if code != "201" {
		t.Errorf("upload with the minted token: %s %s", code, res)
	}
	audit := p.stderr.String()
	if !strings.Contains(audit, "token=oidc:gh-recipes") || strings.Contains(audit, tok) {
		t.Error("the log does not name the publisher, or holds the token")
	}
}
