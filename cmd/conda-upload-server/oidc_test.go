package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/attest/attesttest"
	"github.com/conda-upload-server/conda-upload-server/internal/oidctest"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// TestTrustedPublishingConfined runs the real binary as nobody, with
// Landlock enforced and a trusted publisher whose keys come by discovery
// from a test issuer on loopback: the sandbox must let the server reach
// the issuer's port (and only it), and a CI job's ID token must mint a
// token that uploads, both with curl as a workflow would use it. The
// job's attestation, signed as its workflow, is verified against the
// trusted root the sandbox lets the server read; another is refused. The
// package's page names the workflow that signed the attested build.
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
	sig := attesttest.New(t)
	// A folder of its own, which no other rule of the sandbox covers.
	trustedRoot := filepath.Join(shared(t), "trusted_root.json")
	b, _ = os.ReadFile(sig.TrustedRoot(t, true))
	os.WriteFile(trustedRoot, b, 0o644)
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
[attestations]
trusted_root_file = %q
channel_url = "https://conda.example.org/recipes"
[download]
enabled = true
[sandbox]
landlock = "enforce"
`, root, port, cert, key, is.URL, ca, trustedRoot))
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
	// With an attestation: the workflow's is stored beside the package,
	// another workflow's refused with nothing stored.
	pkg := corpusFile("quetz/test-package-0.1-0.tar.bz2")
	data, _ := os.ReadFile(pkg)
	sum := sha256.Sum256(data)
	statement := attesttest.Statement(t, filepath.Base(pkg), hex.EncodeToString(sum[:]), "https://conda.example.org/recipes", nil)
	workflow := "https://github.com/" + oidctest.GitHubClaims(is.URL, time.Now())["job_workflow_ref"].(string)
	for _, tt := range []struct {
		san, want string
	}{
		{"https://github.com/myorg/recipes/.github/workflows/pr.yml@refs/heads/main", "400"},
		{workflow, "201"},
	} {
		bundle := filepath.Join(t.TempDir(), "bundle.json")
		os.WriteFile(bundle, sig.Sign(t, statement, attesttest.Signing{SAN: tt.san, Issuer: is.URL}), 0o644)
		code, res := curl("-H", "Authorization: Bearer "+tok, "-F", "attestation=<"+bundle, "-F", "artifact=@"+pkg, p.url)
		// created: the refused upload stored nothing.
		_, err := os.Stat(filepath.Join(root, "linux-64", filepath.Base(pkg)+".sigs"))
		if code != tt.want || (code == "201") != (err == nil) || code == "201" && !strings.Contains(res, `"created":true`) {
			t.Errorf("attested upload signed by %s: %s %s; sidecar: %v", tt.san, code, res, err)
		}
	}
	// A build without one, for the package's page.
	if code, res := curl("-H", "Authorization: Bearer "+tok, "-F", "artifact=@"+corpusFile("conda/test-package-1.0.0-0.tar.bz2"), p.url); code != "201" {
		t.Errorf("plain upload: %s %s", code, res)
	}
	attestedOnPage(t, p, workflow)
	audit := p.stderr.String()
	if !strings.Contains(audit, "token=oidc:gh-recipes") || strings.Contains(audit, tok) {
		t.Error("the log does not name the publisher, or holds the token")
	}
}

// attestedOnPage checks test-package's page: the attested build names
// the workflow as its signer, the other build has no attestation, and
// the page says the server verified them.
func attestedOnPage(t *testing.T, p *proc, workflow string) {
	t.Helper()
	code, _, page := fetch(t, p, "GET", "packages/test-package", "Accept", "text/html")
	if code != 200 {
		t.Fatalf("package page: %d %s", code, page)
	}
	for fn, want := range map[string]string{
		"test-package-0.1-0.tar.bz2":   `attested by<ul class="signers"><li><code class="signer">` + workflow + "</code>",
		"test-package-1.0.0-0.tar.bz2": "no attestation",
	} {
		// The row: from the file's link to the end of its row.
		_, row, _ := strings.Cut(page, "/"+fn+`"`)
		if row, _, _ = strings.Cut(row, "</tr>"); !strings.Contains(row, want) {
			t.Errorf("the page's row of %s lacks %q:\n%s", fn, want, row)
		}
	}
	if !strings.Contains(page, "This server verified each attestation when it accepted it") {
		t.Error("the page does not say the attestations were verified")
	}
}
