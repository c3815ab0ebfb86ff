package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// TestProxyRattler puts a second instance of the server in front of a
// first, as its upstream: rattler solves through the proxy, the packages
// it picks are downloaded through it, and the cache then holds exactly
// those. With the upstream stopped, the proxy serves what it holds
// (index files marked stale) and says plainly that it cannot fetch the
// rest.
func TestProxyRattler(t *testing.T) {
	needRattler(t)
	pkgs := solvePkgs
	upstream, p, cert, root := proxyPair(t, pkgs)
	channel := p.url + "proxy/up/"
	recs, err := rattlerSolve(t, cert, channel, "stub-depends-run_exports", "other-package")
	if err != nil {
		t.Fatal(err)
	}
	var fetched []string
	for _, r := range recs {
		if r.URL != channel+r.Subdir+"/"+r.Filename {
			t.Errorf("record %s: url %s, want it through the proxy", r.Filename, r.URL)
		}
		st, sum := fetchSum(t, p.client, r.URL)
		if st != 200 || sum != r.SHA256 || sum != sha256File(t, corpusFile(pkgPath(pkgs, r.Filename))) {
			t.Errorf("%s: %d, sha256 %s, want %s", r.URL, st, sum, r.SHA256)
		}
		fetched = append(fetched, r.Filename)
	}
	slices.Sort(fetched)
	if len(fetched) != 3 {
		t.Errorf("solved %v", fetched)
	}
	// A package is renamed into the cache once made durable, which may
	// be just after its client has the last bytes.
	pkgsDir := filepath.Join(root, ".proxy-cache", "up", "pkgs")
	waitUntil(t, func() bool { return slices.Equal(cached(t, pkgsDir), fetched) })
	// The excluded package is absent from every form of the index, and
	// 404 by its exact URL; the proxy is read-only.
	if _, err := rattlerSolve(t, cert, channel, "font-ttf-inconsolata"); err == nil {
		t.Error("rattler solved an excluded package")
	}
	if st, _ := fetchSum(t, p.client, channel+"noarch/font-ttf-inconsolata-23.12.6-0.tar.bz2"); st != 404 {
		t.Errorf("excluded package: %d", st)
	}
	req, _ := http.NewRequest(http.MethodPut, channel+"noarch/x-1-0.conda", strings.NewReader("x"))
	if resp, err := p.client.Do(req); err != nil || resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("PUT through the proxy: %v %v", resp, err)
	}

	// The second download of each package is a cache hit.
	for _, fn := range fetched {
		fetchSum(t, p.client, channel+subdirOf(recs, fn)+"/"+fn)
	}
	resp, err := p.client.Get(p.url + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`conda_upload_proxy_requests_total{kind="package",result="hit",upstream="up"} 3`,
		`conda_upload_proxy_requests_total{kind="package",result="miss",upstream="up"} 3`,
		`conda_upload_proxy_fetched_bytes_total{upstream="up"}`,
		`conda_upload_proxy_index_age_seconds{upstream="up"}`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// The upstream stops.
	upstream.cmd.Process.Kill()
	<-upstream.done
	upstream.done <- nil
	// Once index_ttl (1s) is over, the index is served stale.
	waitUntil(t, func() bool {
		resp, err := p.client.Get(channel + "noarch/repodata_shards.msgpack.zst")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("index with the upstream down: %d", resp.StatusCode)
		}
		return resp.Header.Get("X-Proxy-Stale") == "true"
	})
	for _, fn := range fetched {
		if st, _ := fetchSum(t, p.client, channel+subdirOf(recs, fn)+"/"+fn); st != 200 {
			t.Errorf("cached %s with the upstream down: %d", fn, st)
		}
	}
	st, body := getJSON(t, p.client, channel+"noarch/stub-run_exports-1.0.0-0.conda")
	if st != 502 || !strings.Contains(fmt.Sprint(body["error"]), "upstream") {
		t.Errorf("never-fetched package with the upstream down: %d %v", st, body)
	}
	if st, body := getJSON(t, p.client, p.url+"readyz"); st != 200 || body["status"] != "degraded" {
		t.Errorf("readyz: %d %v", st, body)
	}
	if resp, err := p.client.Get(p.url + "metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), `conda_upload_proxy_stale_served_total{upstream="up"}`) || !strings.Contains(string(b), `conda_upload_proxy_upstream_errors_total{reason="unreachable",upstream="up"}`) {
			t.Error("metrics lack the stale index or the unreachable upstream")
		}
	}
	code, out, errOut := adminCLI(t, p, cert, adminTok, "proxy", "status")
	if code != 0 || !strings.Contains(out, `"reachable":false`) || !strings.Contains(out, `"cached_packages":3`) {
		t.Errorf("admin proxy status: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := adminCLI(t, p, cert, adminTok, "proxy", "purge", "up"); code != 0 {
		t.Errorf("admin proxy purge: %d %s %s", code, out, errOut)
	}
	if got := cached(t, filepath.Join(root, ".proxy-cache", "up")); len(got) != 0 {
		t.Errorf("after a purge the cache holds %v", got)
	}
}

// TestProxyPythonAndCurl fetches through the proxy as conda does, with
// Python's requests (conda's HTTP client): repodata.json with the
// encodings conda accepts, revalidated with its ETag, then a package,
// checked against its record; and with curl, the .zst twin and a
// package. Excluded names are in neither index form.
func TestProxyPythonAndCurl(t *testing.T) {
	python := testneed.Python(t, "requests", "python3-requests")
	testneed.Tool(t, "curl", "curl")
	_, p, cert, root := proxyPair(t, solvePkgs)
	channel := p.url + "proxy/up/"
	py := `
import hashlib, json, requests, sys
channel, cert, fn = sys.argv[1:4]
s = requests.Session()
s.headers["Accept-Encoding"] = "gzip, deflate, br, zstd"
r = s.get(channel + "noarch/repodata.json", verify=cert)
r.raise_for_status()
rd = r.json()
again = s.get(channel + "noarch/repodata.json", verify=cert, headers={"If-None-Match": r.headers["ETag"]})
rec = rd["packages.conda"][fn]
pkg = s.get(channel + "noarch/" + fn, verify=cert)
pkg.raise_for_status()
print(json.dumps({
    "revalidated": again.status_code,
    "verified": hashlib.sha256(pkg.content).hexdigest() == rec["sha256"] and len(pkg.content) == rec["size"],
    "names": sorted({v["name"] for k in ("packages", "packages.conda") for v in rd[k].values()}),
}))
`
	const fn = "stub-run_exports-2.0.0-0.conda"
	out, err := exec.Command(python, "-c", py, channel, cert, fn).CombinedOutput()
	if err != nil {
		t.Fatalf("python requests: %v\n%s", err, out)
	}
	var got struct {
		Revalidated int
		Verified    bool
		Names       []string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("python printed %q: %v", out, err)
	}
	if got.Revalidated != http.StatusNotModified || !got.Verified || !slices.Equal(got.Names, []string{"stub-run_exports"}) {
		t.Errorf("python requests through the proxy: %+v; want 304, a verified package, and only stub-run_exports in noarch", got)
	}

	// curl: the .zst twin holds the same records, and a package fetched
	// first by curl is the upstream's.
	zst := filepath.Join(t.TempDir(), "repodata.json.zst")
	if out, err := exec.Command("curl", "-sSf", "--cacert", cert, "-o", zst, channel+"noarch/repodata.json.zst").CombinedOutput(); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	b, err := os.ReadFile(zst)
	if err != nil {
		t.Fatal(err)
	}
	if names := packagesOfZst(t, b); !slices.Equal(names, []string{"stub-run_exports-1.0.0-0.conda", fn}) {
		t.Errorf("curl: repodata.json.zst lists %v", names)
	}
	const other = "stub-run_exports-1.0.0-0.conda"
	out, err = exec.Command("sh", "-c", "curl -sSf --cacert \"$1\" \"$2\" | sha256sum", "-", cert, channel+"noarch/"+other).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), sha256File(t, corpusFile(pkgPath(solvePkgs, other)))) {
		t.Errorf("curl of %s through the proxy: %v %s", other, err, out)
	}
	pkgsDir := filepath.Join(root, ".proxy-cache", "up", "pkgs")
	waitUntil(t, func() bool { return slices.Equal(cached(t, pkgsDir), []string{other, fn}) })
}

// proxyPair starts two instances of the server: an upstream holding
// pkgs, and, as nobody, a proxy of it named "up" (linux-64 and noarch,
// font-ttf-* excluded, index_ttl 1s). It returns both, the proxy's
// certificate and its write_dir.
func proxyPair(t *testing.T, pkgs []string) (upstream, p *proc, cert, root string) {
	t.Helper()
	dir := shared(t)
	upCert, upKey, upPool, _ := certPair(t, dir, "up-")
	upRoot := serviceOwned(t, filepath.Join(dir, "up"))
	upPort := freePort(t)
	upCfg := userConfig(t, dir, "[download]\nenabled = true\n")
	upstream = startServer(t, upPool, upPort, "--config", upCfg, "-d", upRoot, "-p", strconv.Itoa(upPort), "-c", upCert, "-k", upKey,
		"-t", auth.Hash(auth.DefaultSalt, testToken))
	for _, p := range pkgs {
		if st, body := upstream.upload(t, testToken, corpusFile(p)); st != 201 || body["indexed"] != true {
			t.Fatalf("upload %s: %d %v", p, st, body)
		}
	}

	cert, key, pool, _ := certPair(t, dir, "")
	root = serviceOwned(t, filepath.Join(dir, "channel"))
	port := freePort(t)
	cfgFile := filepath.Join(dir, "proxy.toml")
	os.WriteFile(cfgFile, []byte("user = \"nobody\"\n"+upConfig(upstream.url, upCert,
		`subdirs = ["linux-64", "noarch"]
exclude = ["font-ttf-*"]
index_ttl = "1s"
`)), 0o644)
	p = startServer(t, pool, port, "--config", cfgFile, "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key,
		"-t", auth.Hash(auth.DefaultSalt, testToken))
	return upstream, p, cert, root
}

const adminTok = "proxy-admin-token"

// upConfig is the configuration of a proxy of url, named "up", with the
// upstream keys given, and an admin token (adminTok) that may purge it.
func upConfig(url, caFile, keys string) string {
	return fmt.Sprintf(`[[tokens]]
name = "admin"
hash = %q
scopes = ["read", "delete"]
[download]
enabled = true
[[upstreams]]
name = "up"
url = %q
ca_file = %q
%s`, auth.Hash(auth.DefaultSalt, adminTok), url, caFile, keys)
}

// solvePkgs are the corpus packages the rattler tests upload and solve.
var solvePkgs = []string{
	"conda-build-local-channel/linux-64/stub-depends-run_exports-1.0.0-h00ce149_0.conda",
	"conda-build-local-channel/linux-64/stub-depends-run_exports-1.0.0-h7bf2920_0.conda",
	"conda-build-local-channel/noarch/stub-run_exports-1.0.0-0.conda",
	"conda-build-local-channel/noarch/stub-run_exports-2.0.0-0.conda",
	"quetz/other-package-0.2-0.conda",
	"conda/font-ttf-inconsolata-23.12.6-0.tar.bz2",
}

// packagesOfZst lists the filenames a repodata.json.zst holds, sorted.
func packagesOfZst(t *testing.T, b []byte) []string {
	t.Helper()
	d, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	raw, err := d.DecodeAll(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	var rd struct {
		Packages      map[string]json.RawMessage `json:"packages"`
		PackagesConda map[string]json.RawMessage `json:"packages.conda"`
	}
	if err := json.Unmarshal(raw, &rd); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range []map[string]json.RawMessage{rd.Packages, rd.PackagesConda} {
		for fn := range m {
			names = append(names, fn)
		}
	}
	slices.Sort(names)
	return names
}

func pkgPath(pkgs []string, fn string) string {
	for _, p := range pkgs {
		if filepath.Base(p) == fn {
			return p
		}
	}
	return fn
}

func subdirOf(recs []solved, fn string) string {
	for _, r := range recs {
		if r.Filename == fn {
			return r.Subdir
		}
	}
	return ""
}

func fetchSum(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	io.Copy(h, resp.Body)
	return resp.StatusCode, hex.EncodeToString(h.Sum(nil))
}

func getJSON(t *testing.T, c *http.Client, url string) (int, map[string]any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func cached(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, d.Name())
		}
		return nil
	})
	slices.Sort(out)
	return out
}

// TestProxyDropInExposure measures the unit with systemd/proxy.conf,
// which opens the network to any address (an upstream behind a CDN has
// no fixed one).
func TestProxyDropInExposure(t *testing.T) {
	base := dropInExposure(t, "mirror.conf")
	score := dropInExposure(t, "proxy.conf")
	if score > 1.0 {
		t.Errorf("exposure with the proxy drop-in %.1f (mirror's %.1f), want ≤ 1.0", score, base)
	}
}

// TestProxyKill9DuringFetch kills the server while it fetches a package:
// the cache holds no partial package, the temp file goes at the next
// start, and the package is then fetched whole.
func TestProxyKill9DuringFetch(t *testing.T) {
	const fn = "big-1.0-0.conda"
	var stall atomic.Bool
	stall.Store(true)
	dir := shared(t)
	var good []byte
	up, caFile, sub := testChannel(t, dir, fn, func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, fn) || !stall.Load() {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(good)))
		w.Write(good[:1<<20])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	})
	good, _ = os.ReadFile(filepath.Join(sub, fn))
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	cfg := userConfig(t, dir, fmt.Sprintf("[download]\nenabled = true\n[[upstreams]]\nname = \"up\"\nurl = %q\nsubdirs = [\"linux-64\"]\nca_file = %q\n", up.URL, caFile))
	start := func() *proc {
		port := freePort(t)
		return startServer(t, pool, port, "--config", cfg, "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key,
			"-t", auth.Hash(auth.DefaultSalt, testToken))
	}
	p := start()
	go func() {
		if resp, err := p.client.Get(p.url + "proxy/up/linux-64/" + fn); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	cache := filepath.Join(root, ".proxy-cache", "up", "pkgs", "linux-64")
	var temp string
	waitUntil(t, func() bool {
		m, _ := filepath.Glob(filepath.Join(cache, "."+fn+".tmp-*"))
		if len(m) != 1 {
			return false
		}
		fi, err := os.Stat(m[0])
		temp = m[0]
		return err == nil && fi.Size() >= 1<<20
	})
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.done <- nil
	if got := cached(t, cache); len(got) != 1 || !strings.HasPrefix(got[0], ".") {
		t.Fatalf("after kill -9 the cache holds %v, want only the fetch's temp file", got)
	}
	stall.Store(false)
	p = start()
	if _, err := os.Stat(temp); !os.IsNotExist(err) {
		t.Errorf("the temp file survived the restart: %v", err)
	}
	if st, sum := fetchSum(t, p.client, p.url+"proxy/up/linux-64/"+fn); st != 200 || sum != sha256File(t, filepath.Join(sub, fn)) {
		t.Errorf("after the restart: %d %s", st, sum)
	}
	// The package goes into the cache once durable, which may be just
	// after the client has it.
	waitUntil(t, func() bool { return slices.Equal(cached(t, cache), []string{fn}) })
}

// testChannel serves, over TLS on loopback, a channel whose linux-64
// holds a valid 8 MiB package fn, indexed by the built-in indexer; hook
// may answer a request instead. It returns the server, a CA file that
// trusts it, and the linux-64 directory.
func testChannel(t *testing.T, dir, fn string, hook func(http.ResponseWriter, *http.Request) bool) (*httptest.Server, string, string) {
	t.Helper()
	upRoot := t.TempDir()
	sub := filepath.Join(upRoot, "linux-64")
	os.MkdirAll(sub, 0o755)
	f, err := os.Create(filepath.Join(sub, fn))
	if err != nil {
		t.Fatal(err)
	}
	name, _, _ := strings.Cut(fn, "-")
	pkgtest.LargeConda(t, pkgtest.Simple(name, "1.0", "0", "linux-64"), 8<<20, f)
	f.Close()
	if err := repodata.New(upRoot, condapkg.DefaultLimits(), slog.New(slog.DiscardHandler)).Run(context.Background(), "linux-64"); err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(http.Dir(upRoot))
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hook == nil || !hook(w, r) {
			files.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(up.Close)
	caFile := filepath.Join(dir, "up-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o644)
	return up, caFile, sub
}

// TestProxyTokenAccess: with access = "token", the proxy's routes need a
// token with the read scope, in any form the channel takes, /t/ included.
func TestProxyTokenAccess(t *testing.T) {
	const fn = "big-1.0-0.conda"
	dir := shared(t)
	up, caFile, sub := testChannel(t, dir, fn, nil)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	const readTok = "proxy-reader-token"
	cfg := userConfig(t, dir, fmt.Sprintf("[[tokens]]\nname = \"reader\"\nhash = %q\nscopes = [\"read\"]\n"+
		"[download]\nenabled = true\naccess = \"token\"\n[[upstreams]]\nname = \"up\"\nurl = %q\nsubdirs = [\"linux-64\"]\nca_file = %q\n",
		auth.Hash(auth.DefaultSalt, readTok), up.URL, caFile))
	port := freePort(t)
	p := startServer(t, pool, port, "--config", cfg, "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key,
		"-t", auth.Hash(auth.DefaultSalt, testToken))
	if st, _ := fetchSum(t, p.client, p.url+"proxy/up/linux-64/repodata.json"); st != 401 {
		t.Errorf("no token: %d, want 401", st)
	}
	if st, _ := fetchSum(t, p.client, p.url+"t/"+testToken+"/proxy/up/linux-64/repodata.json"); st != 403 {
		t.Errorf("an upload token: %d, want 403", st)
	}
	if st, sum := fetchSum(t, p.client, p.url+"t/"+readTok+"/proxy/up/linux-64/"+fn); st != 200 || sum != sha256File(t, filepath.Join(sub, fn)) {
		t.Errorf("/t/<read token>/: %d", st)
	}
	req, _ := http.NewRequest(http.MethodGet, p.url+"proxy/up/linux-64/repodata.json", nil)
	req.Header.Set("Authorization", "Bearer "+readTok)
	if resp, err := p.client.Do(req); err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Cache-Control"), "private") {
		t.Errorf("bearer read token: %v %v", resp, err)
	}
	if strings.Contains(p.stderr.String(), readTok) {
		t.Error("the read token reached the log")
	}
}
