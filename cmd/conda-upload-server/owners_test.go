package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// ownersFile reads WRITE_DIR/.admin/owners.json: name to owners.
func ownersFile(t *testing.T, root string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, ".admin", "owners.json"))
	if os.IsNotExist(err) {
		return map[string][]string{}
	}
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Packages map[string][]string }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("owners.json is not JSON after a kill: %v\n%s", err, b)
	}
	return f.Packages
}

// checkClaims: every name has at most one owner, and every package of a
// claimed name that is stored is its owner's (the build string names the
// token that sent it).
func checkClaims(t *testing.T, root string, rounds int) map[string][]string {
	t.Helper()
	own := ownersFile(t, root)
	for r := range rounds {
		name := fmt.Sprintf("claim%d", r)
		if len(own[name]) > 1 {
			t.Errorf("%s has owners %v", name, own[name])
		}
		for _, tok := range []string{"a", "b"} {
			_, err := os.Stat(filepath.Join(root, "noarch", fmt.Sprintf("%s-1.0-%s.conda", name, tok)))
			if err == nil && !slices.Equal(own[name], []string{"team-" + tok}) {
				t.Errorf("%s: team-%s's package stored, owners %v", name, tok, own[name])
			}
		}
	}
	return own
}

// TestOwnersKillDuringClaim runs the real server with owners =
// "first-upload" and kills it with SIGKILL while two tokens race to claim
// a new name: after each restart every name has one owner at most, and
// only the owner's package is stored. Then, with owners.json deleted, a
// restart rebuilds the owners from the audit log, and the admin CLI
// transfers a name.
func TestOwnersKillDuringClaim(t *testing.T) {
	testneed.Root(t)
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	logs := serviceOwned(t, filepath.Join(dir, "log"))
	pkgs := shared(t)
	toks := map[string]string{"a": "team-a-secret", "b": "team-b-secret"}
	config := func(port int) string {
		return userConfig(t, dir, fmt.Sprintf("write_dir = %q\nport = %d\ncertfile = %q\nkeyfile = %q\n"+
			"[[tokens]]\nname = \"team-a\"\nhash = %q\n[[tokens]]\nname = \"team-b\"\nhash = %q\n"+
			"[[tokens]]\nname = \"platform\"\nhash = %q\nscopes = [\"owners\"]\n"+
			"[policy]\nowners = \"first-upload\"\n[audit]\nfile = %q\n",
			root, port, cert, key, auth.Hash(auth.DefaultSalt, toks["a"]), auth.Hash(auth.DefaultSalt, toks["b"]),
			auth.Hash(auth.DefaultSalt, testToken), filepath.Join(logs, "audit.jsonl")))
	}
	rng := rand.New(rand.NewPCG(25, 1))
	const rounds = 16
	for r := range rounds {
		port := freePort(t)
		p := startServer(t, pool, port, "--config", config(port))
		checkClaims(t, root, r)
		var wg sync.WaitGroup
		for tok, secret := range toks {
			path := filepath.Join(pkgs, fmt.Sprintf("claim%d-1.0-%s.conda", r, tok))
			writeSynthetic(t, path, fmt.Sprintf("claim%d", r), "1.0", tok, "noarch")
			ct, body := multipartBody(t, secret, path)
			wg.Go(func() {
				if resp, err := p.client.Post(p.url, ct, bytes.NewReader(body)); err == nil {
					resp.Body.Close()
				}
			})
		}
		time.Sleep(time.Duration(rng.IntN(30_000)) * time.Microsecond)
		p.cmd.Process.Signal(syscall.SIGKILL)
		wg.Wait()
		<-p.done
		p.done <- nil
	}
	port := freePort(t)
	p := startServer(t, pool, port, "--config", config(port))
	before := checkClaims(t, root, rounds)
	t.Logf("after %d kills: %d of %d names claimed", rounds, len(before), rounds)

	// One clean claim, and a transfer by the admin CLI.
	path := filepath.Join(pkgs, "settled-1.0-a.conda")
	writeSynthetic(t, path, "settled", "1.0", "a", "noarch")
	if st, body := p.upload(t, toks["a"], path); st != 201 {
		t.Fatalf("clean claim: %d %v", st, body)
	}
	admin := func(args ...string) string {
		cmd := command(t, append([]string{"admin", "--url", p.url, "--cacert", cert}, args...)...)
		cmd.Stdin = strings.NewReader(testToken)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("admin %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := admin("owners", "transfer", "settled", "team-b"); !strings.Contains(out, `"owners":["team-b"]`) {
		t.Errorf("transfer: %s", out)
	}
	if out := admin("owners", "list", "settled"); !strings.Contains(out, `"owners":["team-b"]`) {
		t.Errorf("list: %s", out)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	p.done <- nil

	// owners.json lost: the restart rebuilds it from the audit log.
	want := ownersFile(t, root)
	os.Remove(filepath.Join(root, ".admin", "owners.json"))
	port = freePort(t)
	startServer(t, pool, port, "--config", config(port))
	got := ownersFile(t, root)
	if !slices.Equal(got["settled"], []string{"team-b"}) {
		t.Errorf("rebuilt settled: %v", got["settled"])
	}
	for name, o := range got {
		if !slices.Equal(o, want[name]) {
			t.Errorf("rebuilt %s: %v, was %v", name, o, want[name])
		}
	}
	checkClaims(t, root, rounds)
}

// TestOwnersDevToken: under --dev, the dev token may upload anything: a
// name another token claimed, and a new name, which it does not claim.
func TestOwnersDevToken(t *testing.T) {
	wd := shared(t)
	port := freePort(t)
	cfg := filepath.Join(wd, "dev.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[[tokens]]\nname = \"team-a\"\nhash = %q\n[policy]\nowners = \"first-upload\"\n",
		auth.Hash(auth.DefaultSalt, "team-a-secret"))), 0o644)
	out := startDev(t, wd, "-p", fmt.Sprint(port), "--config", cfg)
	var devToken string
	for deadline := time.Now().Add(15 * time.Second); devToken == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, l := range strings.Split(out.String(), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "token:" {
				devToken = f[1]
			}
		}
	}
	if devToken == "" {
		t.Fatalf("no token in the banner: %q", out.String())
	}
	p := &proc{client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}},
		url: fmt.Sprintf("https://127.0.0.1:%d/", port)}
	pkgs := t.TempDir()
	send := func(tok, name, build string) int {
		path := filepath.Join(pkgs, fmt.Sprintf("%s-1.0-%s.conda", name, build))
		writeSynthetic(t, path, name, "1.0", build, "noarch")
		st, _ := p.upload(t, tok, path)
		return st
	}
	if st := send("team-a-secret", "shared-tool", "a"); st != 201 {
		t.Fatalf("team-a's claim: %d", st)
	}
	if st := send(devToken, "shared-tool", "dev"); st != 201 {
		t.Errorf("the dev token on a claimed name: %d", st)
	}
	if st := send(devToken, "dev-only", "dev"); st != 201 {
		t.Errorf("the dev token on a new name: %d", st)
	}
	if own := ownersFile(t, filepath.Join(wd, "channel")); !slices.Equal(own["shared-tool"], []string{"team-a"}) || own["dev-only"] != nil {
		t.Errorf("owners: %v", own)
	}
	// The package's page names its owner by the token's name, never the
	// token; a name nobody owns shows none.
	st, _, page := fetch(t, p, http.MethodGet, "packages/shared-tool", "Accept", "text/html")
	if st != 200 || !strings.Contains(page, "Owners: team-a") || strings.Contains(page, "team-a-secret") || strings.Contains(page, devToken) {
		t.Errorf("shared-tool's page (%d) does not name its owner team-a alone, or shows a token", st)
	}
	if st, _, page := fetch(t, p, http.MethodGet, "packages/dev-only", "Accept", "text/html"); st != 200 || strings.Contains(page, "Owners:") {
		t.Errorf("dev-only's page (%d) names owners", st)
	}
}

// startDev starts the program with --dev and args in dir, and returns
// its standard output, where the banner goes; the test's end stops it.
func startDev(t *testing.T, dir string, args ...string) *syncBuffer {
	t.Helper()
	cmd := command(t, append([]string{"--dev"}, args...)...)
	cmd.Dir = dir
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return out
}
