package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/attest/attesttest"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/corpus"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/web"
)

// browserPage is what test/browser/check.cjs saw on one page.
type browserPage struct {
	Status      int
	CSP         string `json:"cspHeader"`
	Text        string
	Summary     string
	Scripts     []string
	Links       []string
	CopyButtons []bool
	CSPEvents   []string
	LinkStatus  map[string]int
	Axe         []struct {
		ID, Impact, Help string
		Nodes            []string
	}
	Dialogs, Foreign, Errors []string
	ConsoleCSP               []string `json:"cspConsole"`
}

// hostilePackage is a package whose about.json and index.json try to run
// script, link to javascript:, reorder text and be huge.
func hostilePackage(t *testing.T, version string) []byte {
	// Nearly 1 MiB: the indexer leaves out an about.json over 1 MiB.
	big := strings.Repeat("A", 1<<20-8<<10)
	about, _ := json.Marshal(map[string]any{
		"summary": `<script>alert("xss")</script>` + "good\u202Eexe.txt", "description": `<img src=x onerror=alert(1)>` + big,
		"home": "javascript:alert(1)", "dev_url": `https://example.org/"><script>alert(2)</script>`, "license": big[:4<<10],
	})
	s := pkgtest.Simple("evil-pkg", version, "h0_0", "linux-64")
	s.Index = map[string]any{"license": `MIT<script>alert(3)</script>`,
		"depends": []string{`python >=3<script>alert(4)</script>`, "x \u202Ey", big[:600<<10]}, "constrains": []string{`foo <img src=x onerror=alert(5)>`}}
	s.Info = append(s.Info, pkgtest.Member{Name: "info/about.json", Data: about})
	return pkgtest.Conda(t, s)
}

// browserChannel lays out the real corpus and the hostile package (in
// main and label dev, one version yanked in main) for the server to
// index at its start.
const browserSigner = "https://github.com/evil/pkg/.github/workflows/release.yml@refs/tags/v6.6.6"

func browserChannel(t *testing.T, root string) {
	for _, p := range corpus.Load(t, "pkgs") {
		b, err := os.ReadFile(p.Path())
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(root, p.Subdir), 0o755)
		os.WriteFile(filepath.Join(root, p.Subdir, p.Name()), b, 0o644)
		if p.Subdir == "noarch" {
			os.MkdirAll(filepath.Join(root, "label/dev/noarch"), 0o755)
			os.WriteFile(filepath.Join(root, "label/dev/noarch", p.Name()), b, 0o644)
		}
	}
	for _, dir := range []string{"linux-64", "label/dev/linux-64"} {
		os.MkdirAll(filepath.Join(root, dir), 0o755)
		for _, v := range []string{"6.6.5", "6.6.6"} {
			os.WriteFile(filepath.Join(root, dir, "evil-pkg-"+v+"-h0_0.conda"), hostilePackage(t, v), 0o644)
		}
	}
	// An attested build: the page shows its signers as text.
	sig, evil := attesttest.New(t), "evil-pkg-6.6.6-h0_0.conda"
	for _, san := range []string{browserSigner, "javascript:alert(1)"} {
		b := sig.Sign(t, attesttest.Statement(t, evil, strings.Repeat("0", 64), "", nil), attesttest.Signing{SAN: san, Issuer: "https://token.actions.githubusercontent.com"})
		if _, err := sidecar.Add(filepath.Join(root, "linux-64", evil), b); err != nil {
			t.Fatal(err)
		}
	}
	st, err := store.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := lifecycle.New(st).SetYank("main", "linux-64", "evil-pkg-6.6.5-h0_0.conda", true,
		lifecycle.Yank{Reason: "broken <b>build</b>", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// TestBrowser loads every kind of page in a real browser (Debian's
// chromium driven by puppeteer-core, test/browser) from the real server:
// what a person sees, that every link answers, that the hostile
// package's strings are text and nothing of them runs, that axe-core
// finds no WCAG 2.1 AA violation, and that the pages work without
// JavaScript. Screenshots go to test/output/browser/.
func TestBrowser(t *testing.T) {
	dir, _ := filepath.Abs(filepath.Join("..", "..", "test", "browser"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "puppeteer-core")); err != nil {
		t.Fatalf("the browser test is not installed: run (cd test/browser && npm install), as test/run.sh does: %v", err)
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatalf("chromium is not installed (apt-get install chromium, as test/run.sh does): %v", err)
	}
	d := shared(t)
	root := filepath.Join(d, "channel")
	browserChannel(t, root)
	serviceOwned(t, root)
	upstream, down := browserUpstream(t, d)
	p, _ := startWithRoot(t, d, root, "[download]\nenabled = true\n"+upstream)
	failUpstream(t, p, down)
	out, _ := filepath.Abs(filepath.Join("..", "..", "test", "output", "browser"))
	cmd := exec.Command("node", "check.cjs", p.url, out, "mock", "evil-pkg", "/proxy/up/")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+filepath.Join(d, "cert.pem"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("check.cjs: %v\n%s", err, stderr.String())
	}
	if !p.logged("index run done") || strings.Contains(p.stderr.String(), "left out of the index") {
		t.Fatalf("a package was left out of the index:\n%s", p.stderr.String())
	}
	var report map[string]browserPage
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
		t.Fatalf("check.cjs's report: %v\n%.500s", err, stdout.String())
	}
	for name, pg := range report {
		checkPage(t, name, pg, strings.HasSuffix(name, "-nojs"))
	}
	install := fmt.Sprintf("conda install -c https://localhost:%d mock", p.port)
	for _, tc := range []struct{ page, want string }{
		{"home", "Recent uploads"}, {"home", "evil-pkg"}, {"home-nojs", "Recent uploads"},
		{"search", "mock"}, {"package", install}, {"package-nojs", install}, {"package", "Versions and platforms"},
		{"hostile", "attested by\n" + browserSigner}, {"hostile", "no attestation"}, {"hostile", "yanked in main"}, {"hostile", "broken <b>build</b>"}, {"hostile", `python >=3<script>alert(4)</script>`},
		{"label", "Label dev"}, {"subdir", "repodata.json"},
		{"home", "Upstream channels"}, {"home", "unreachable"}, {"upstream", "Upstream up"}, {"upstream-nojs", "Upstream up"},
		{"upstream", "mirror: every package served"}, {"upstream", "complete"}, {"upstream", browserCached},
		{"upstream", "The upstream cannot be reached"}, {"upstream", "503 " + hostileStatus}, {"upstream", "/proxy/up/"},
	} {
		if !strings.Contains(report[tc.page].Text, tc.want) {
			t.Errorf("%s: a person does not see %q", tc.page, tc.want)
		}
	}
	if s := report["hostile"].Summary; !strings.HasPrefix(s, `<script>alert("xss")</script>good`) || strings.Contains(s, "\u202E") {
		t.Errorf("hostile summary shows as %q; want the script tag as text and no RTL override", s)
	}
	t.Logf("screenshots in %s", out)
}

// browserCached is the package of the browser test's upstream.
const browserCached = "big-1.0-0.conda"

// browserUpstream starts an upstream on loopback that answers a 503 with
// a script for its reason phrase once down is set, and returns the
// [[upstreams]] block of a mirror of it.
func browserUpstream(t *testing.T, dir string) (string, *atomic.Bool) {
	down := new(atomic.Bool)
	up, caFile, _ := testChannel(t, dir, browserCached, failsWhen(down))
	return fmt.Sprintf("[[upstreams]]\nname = \"up\"\nurl = %q\nsubdirs = [\"linux-64\", \"noarch\"]\nmode = \"mirror\"\nindex_ttl = \"1s\"\nca_file = %q\n", up.URL, caFile), down
}

// failUpstream waits for the mirror's first sync to complete, then makes
// the upstream fail until its index is served stale.
func failUpstream(t *testing.T, p *proc, down *atomic.Bool) {
	waitUntil(t, func() bool {
		_, _, page := fetch(t, p, "GET", "proxy/up/", "Accept", "text/html")
		return strings.Contains(page, ", complete") && strings.Contains(page, browserCached)
	})
	down.Store(true)
	waitUntil(t, func() bool {
		_, h, _ := fetch(t, p, "GET", "proxy/up/linux-64/repodata.json")
		return h.Get("X-Proxy-Stale") == "true"
	})
}

// checkPage asserts what holds on every page.
func checkPage(t *testing.T, name string, pg browserPage, nojs bool) {
	t.Helper()
	if pg.Status != 200 || pg.CSP != web.CSP {
		t.Errorf("%s: status %d, CSP %q", name, pg.Status, pg.CSP)
	}
	if len(pg.Dialogs)+len(pg.Foreign)+len(pg.Errors)+len(pg.ConsoleCSP)+len(pg.CSPEvents) != 0 {
		t.Errorf("%s: something ran or was blocked: dialogs %q, foreign requests %q, errors %q, CSP violations %q %q",
			name, pg.Dialogs, pg.Foreign, pg.Errors, pg.ConsoleCSP, pg.CSPEvents)
	}
	if len(pg.Scripts) != 1 || !strings.HasSuffix(pg.Scripts[0], "/static/copy.js") {
		t.Errorf("%s: scripts %q; want only /static/copy.js", name, pg.Scripts)
	}
	for _, v := range pg.Axe {
		t.Errorf("%s: axe-core: %s (%s): %s at %q", name, v.ID, v.Impact, v.Help, v.Nodes)
	}
	for l, st := range pg.LinkStatus {
		if st != 200 {
			t.Errorf("%s: link %s answers %d", name, l, st)
		}
	}
	if slices.Contains(pg.CopyButtons, nojs) {
		t.Errorf("%s: copy buttons shown %v; want shown only with JavaScript", name, pg.CopyButtons)
	}
	for _, l := range pg.Links {
		if strings.HasPrefix(l, "javascript:") || strings.HasPrefix(l, "data:") {
			t.Errorf("%s: link %q", name, l)
		}
	}
}

// startWithRoot starts the server on a channel laid out beforehand in
// root, below dir, as startWith does on an empty one.
func startWithRoot(t *testing.T, dir, root, extra string) (*proc, string) {
	t.Helper()
	cert, key, pool, _ := certPair(t, dir, "")
	port := freePort(t)
	cfg := userConfig(t, dir, fmt.Sprintf("write_dir = %q\nport = %d\ncertfile = %q\nkeyfile = %q\ntoken_hash = %q\n",
		root, port, cert, key, auth.Hash(auth.DefaultSalt, testToken))+extra)
	return startServer(t, pool, port, "--config", cfg), root
}
