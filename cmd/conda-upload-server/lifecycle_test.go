package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
)

const (
	ciToken       = "ci-uploads-to-dev"
	operatorToken = "operator-promotes-and-yanks"
)

// adminCLI runs conda-upload-server admin with the token on stdin and
// returns its exit code, stdout and stderr.
func adminCLI(t *testing.T, p *proc, cacert, token string, args ...string) (int, string, string) {
	t.Helper()
	cmd := command(t, append([]string{"admin", "--url", p.url, "--cacert", cacert}, args...)...)
	cmd.Stdin = strings.NewReader(token + "\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		code = cmd.ProcessState.ExitCode()
	}
	return code, stdout.String(), stderr.String()
}

// solvedVersion solves spec from channel with rattler and returns the
// version and URL it picked.
func solvedVersion(t *testing.T, cacert, channel, name string) (string, string, error) {
	t.Helper()
	recs, err := rattlerSolve(t, cacert, channel, name)
	if err != nil {
		return "", "", err
	}
	for _, r := range recs {
		if r.Name == name {
			return r.Version, r.URL, nil
		}
	}
	return "", "", fmt.Errorf("%s not in the solution %v", name, recs)
}

// startLabelled starts the server with a ci token limited to label dev, an
// operator token with the admin scopes, public downloads and an audit
// file. It returns the server, its certificate, the channel root and the
// audit file.
func startLabelled(t *testing.T) (*proc, string, string, string) {
	t.Helper()
	return startAdmin(t, `labels = ["dev"]`, "[download]\nenabled = true\n")
}

// startAdmin starts the server with a ci token (with the keys ciKeys), an
// operator token with the admin scopes, an audit file, and the TOML extra,
// and returns what startLabelled does.
func startAdmin(t *testing.T, ciKeys, extra string) (*proc, string, string, string) {
	t.Helper()
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	auditFile := filepath.Join(serviceOwned(t, filepath.Join(dir, "log")), "audit.jsonl")
	port := freePort(t)
	cfg := userConfig(t, dir, fmt.Sprintf(`
[[tokens]]
name = "ci"
hash = %q
%s
[[tokens]]
name = "operator"
hash = %q
scopes = ["read", "promote", "yank", "delete"]
[audit]
file = %q
`, auth.Hash(auth.DefaultSalt, ciToken), ciKeys, auth.Hash(auth.DefaultSalt, operatorToken), auditFile)+extra)
	p := startServer(t, pool, port, "--config", cfg, "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key)
	return p, cert, root, auditFile
}

// TestPromotionFlow runs what a CI pipeline does with labels, through the
// real server, the operator's CLI and the rattler solver: upload to dev,
// solve from /label/dev, promote to main, solve from the root, yank the
// newest build and see the solver pick the older one while the yanked file
// still downloads, then delete it. Each change is in the audit log.
func TestPromotionFlow(t *testing.T) {
	needRattler(t)
	p, cert, root, auditFile := startLabelled(t)
	pkgs := []string{
		"conda-build-local-channel/noarch/stub-run_exports-1.0.0-0.conda",
		"conda-build-local-channel/noarch/stub-run_exports-2.0.0-0.conda",
		"conda-build-local-channel/linux-64/stub-depends-run_exports-1.0.0-h7bf2920_0.conda",
	}
	if st, body := p.upload(t, ciToken, corpusFile(pkgs[0]), "label", "main"); st != 403 {
		t.Errorf("the ci token uploaded to main: %d %v", st, body)
	}
	for _, pkg := range pkgs {
		if st, body := p.upload(t, ciToken, corpusFile(pkg), "label", "dev"); st != 201 || body["indexed"] != true || body["label"] != "dev" {
			t.Fatalf("upload %s to dev: %d %v", pkg, st, body)
		}
	}
	dev := p.url + "label/dev/"
	if v, u, err := solvedVersion(t, cert, dev, "stub-run_exports"); err != nil || v != "2.0.0" || u != dev+"noarch/stub-run_exports-2.0.0-0.conda" {
		t.Fatalf("solve from label dev: %s %s %v", v, u, err)
	}
	if _, _, err := solvedVersion(t, cert, p.url, "stub-run_exports"); err == nil {
		t.Fatal("solved from main before the promotion")
	}
	// Promote with the operator's CLI; the ci token may not.
	if code, _, stderr := adminCLI(t, p, cert, ciToken, "copy", "dev", "noarch", "stub-run_exports-2.0.0-0.conda", "main"); code != 1 || !strings.Contains(stderr, "403") {
		t.Errorf("ci token promoted: %d %s", code, stderr)
	}
	for _, pkg := range pkgs {
		sub, fn := filepath.Base(filepath.Dir(pkg)), filepath.Base(pkg)
		code, stdout, stderr := adminCLI(t, p, cert, operatorToken, "copy", "dev", sub, fn, "main")
		if code != 0 || !strings.Contains(stdout, `"indexed":true`) {
			t.Fatalf("copy %s: %d %s %s", fn, code, stdout, stderr)
		}
	}
	if v, u, err := solvedVersion(t, cert, p.url, "stub-run_exports"); err != nil || v != "2.0.0" || u != p.url+"noarch/stub-run_exports-2.0.0-0.conda" {
		t.Fatalf("solve from main after the promotion: %s %s %v", v, u, err)
	}
	// Yank 2.0.0 from main: the solver falls back to 1.0.0, and the
	// yanked file still downloads for lock files that pin it.
	if code, stdout, stderr := adminCLI(t, p, cert, operatorToken, "yank", "main", "noarch", "stub-run_exports-2.0.0-0.conda", "breaks downstream builds"); code != 0 || !strings.Contains(stdout, `"yanked":true`) {
		t.Fatalf("yank: %d %s %s", code, stdout, stderr)
	}
	if v, _, err := solvedVersion(t, cert, p.url, "stub-run_exports"); err != nil || v != "1.0.0" {
		t.Errorf("solve after the yank: %s %v", v, err)
	}
	if v, _, err := solvedVersion(t, cert, dev, "stub-run_exports"); err != nil || v != "2.0.0" {
		t.Errorf("the yank in main changed label dev: %s %v", v, err)
	}
	yanked := p.url + "noarch/stub-run_exports-2.0.0-0.conda"
	if sum := getSHA(t, p, yanked); sum != sha256File(t, corpusFile(pkgs[1])) {
		t.Errorf("download of the yanked file: sha256 %s", sum)
	}
	code, stdout, _ := adminCLI(t, p, cert, operatorToken, "list", "main", "noarch")
	if code != 0 || !strings.Contains(stdout, `"yank_reason":"breaks downstream builds"`) {
		t.Errorf("list: %d %s", code, stdout)
	}
	// Delete it: gone from the channel, kept in the trash.
	tokenFile := filepath.Join(t.TempDir(), "operator.token")
	os.WriteFile(tokenFile, []byte(operatorToken+"\n"), 0o600)
	if code, stdout, stderr := adminCLI(t, p, cert, "", "--token-file", tokenFile, "delete", "main", "noarch", "stub-run_exports-2.0.0-0.conda"); code != 0 || !strings.Contains(stdout, `"trash":".trash/`) {
		t.Fatalf("delete: %d %s %s", code, stdout, stderr)
	}
	resp, err := p.client.Get(yanked)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("deleted file still served: %d", resp.StatusCode)
	}
	trashed := filepath.Join(root, ".trash", time.Now().UTC().Format("2006-01-02"), "main", "noarch", "stub-run_exports-2.0.0-0.conda")
	if sha256File(t, trashed) != sha256File(t, corpusFile(pkgs[1])) {
		t.Error("the trash does not hold the deleted package")
	}
	if v, _, err := solvedVersion(t, cert, p.url, "stub-run_exports"); err != nil || v != "1.0.0" {
		t.Errorf("solve after the delete: %s %v", v, err)
	}
	// The audit log has each change with its token, call and sha256.
	f, err := os.Open(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec map[string]any
		json.Unmarshal(sc.Bytes(), &rec)
		if c, _ := rec["call"].(string); c != "" && (rec["status"] == float64(200) || rec["status"] == float64(201)) {
			if rec["token"] != "operator" || len(fmt.Sprint(rec["sha256"])) != 64 {
				t.Errorf("audit record %v", rec)
			}
			seen[fmt.Sprint(rec["call"])]++
		}
	}
	if seen["copy"] != 3 || seen["yank"] != 1 || seen["delete"] != 1 {
		t.Errorf("audited changes %v", seen)
	}
}

// getSHA downloads url and returns the sha256 of the body.
func getSHA(t *testing.T, p *proc, url string) string {
	t.Helper()
	resp, err := p.client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	h := sha256.New()
	io.Copy(h, resp.Body)
	return hex.EncodeToString(h.Sum(nil))
}

// TestAdminCLIErrors checks the CLI's refusals: no token, a wrong command
// line, an unreachable server.
func TestAdminCLIErrors(t *testing.T) {
	p, cert, _, _ := startLabelled(t)
	other, _, _, _ := certPair(t, shared(t), "other-")
	tests := []struct {
		name, token string
		args        []string
		code        int
		msg         string
	}{
		{"no token", "", []string{"list", "main", "noarch"}, 1, "no token"},
		{"unknown call", "x", []string{"promote", "main"}, 2, `unknown call "promote"`},
		{"wrong arity", "x", []string{"copy", "main", "noarch", "x-1-0.conda"}, 2, "copy takes LABEL SUBDIR FILENAME TO"},
		{"untrusted certificate", "x", []string{"list", "main", "noarch"}, 1, "certificate"},
		{"token without the scope", ciToken, []string{"list", "main", "noarch"}, 1, "403"},
		{"unknown token", "wrong", []string{"list", "main", "noarch"}, 1, "401"},
		{"unknown label", operatorToken, []string{"list", "nope", "noarch"}, 1, "404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := cert
			if tt.name == "untrusted certificate" {
				ca = other
			}
			code, _, stderr := adminCLI(t, p, ca, tt.token, tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.msg) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tt.code, tt.msg)
			}
		})
	}
}
