package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/daemon"
	"github.com/conda-upload-server/conda-upload-server/internal/stats"
)

// fetch sends a GET (or HEAD) with headers as name, value pairs and
// returns the status and body.
func fetch(t *testing.T, p *proc, method, path string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, p.url+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// flushed reads a copy of the server's counts log, as the next start
// would, and returns the total it holds.
func flushed(t *testing.T, root string) uint64 {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(root, daemon.StatsDir, stats.LogName))
	if err != nil {
		return 0
	}
	os.WriteFile(filepath.Join(dir, stats.LogName), b, 0o600)
	c, err := stats.Open(stats.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.Total()
}

// TestDownloadCountsSurviveKill counts downloads through the real
// server: whole GETs count, HEAD and 304 do not, one client's ranges
// count once. The counts reach the log within the flush interval without
// a shutdown, survive a kill -9, and come back in the JSON endpoint, in
// /metrics and on the package page.
func TestDownloadCountsSurviveKill(t *testing.T) {
	p, root := startWith(t, "[download]\nenabled = true\n")
	const fn = "mock-2.0.0-py37_1000.conda"
	st, body := p.upload(t, testToken, corpusFile("cph/"+fn))
	if st != 201 {
		t.Fatalf("upload: %d %v", st, body)
	}
	path := fmt.Sprint(body["subdir"]) + "/" + fn
	_, h, _ := fetch(t, p, "GET", path)
	for range 2 {
		fetch(t, p, "GET", path)
	}
	fetch(t, p, "HEAD", path)
	if st, _, _ := fetch(t, p, "GET", path, "If-None-Match", h.Get("ETag")); st != 304 {
		t.Fatalf("conditional GET: %d, want 304", st)
	}
	for _, r := range []string{"bytes=0-99", "bytes=100-199", "bytes=200-"} {
		if st, _, _ := fetch(t, p, "GET", path, "Range", r); st != 206 {
			t.Fatalf("range %s: %d, want 206", r, st)
		}
	}
	const want = 3 + 1 // three whole GETs, and one client's ranges
	waitUntil(t, func() bool { return flushed(t, root) >= want })
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.done <- nil

	pool := p.client.Transport.(*http.Transport).TLSClientConfig.RootCAs
	p = startServer(t, pool, p.port, p.cmd.Args[1:]...)
	_, _, js := fetch(t, p, "GET", "api/v1/stats/files/"+path+"?days=1")
	var a struct{ Total uint64 }
	if err := json.Unmarshal([]byte(js), &a); err != nil || a.Total != want {
		t.Fatalf("after kill -9 and restart, the file's count is %s; want total %d", js, want)
	}
	for _, q := range []string{"abc", "0", "1000"} {
		if st, _, js := fetch(t, p, "GET", "api/v1/stats?days="+q); st != 400 || js != `{"error":"days must be a whole number from 1 to 400","status":400}`+"\n" {
			t.Errorf("?days=%s: %d %q; want 400 and a one-line JSON error", q, st, js)
		}
	}
	_, _, text := fetch(t, p, "GET", "metrics")
	if v, ok := metricValue(text, "conda_package_downloads_total"); !ok || v != want {
		t.Errorf("conda_package_downloads_total = %v (%v), want %d", v, ok, want)
	}
	_, ph, page := fetch(t, p, "GET", "packages/mock", "Accept", "text/html")
	if !strings.Contains(page, fmt.Sprintf("%d downloads in all", want)) || !strings.Contains(ph.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("package page lacks the count or its CSP:\n%.600s", page)
	}
	if st, _, listing := fetch(t, p, "GET", ""); st != 200 || strings.Contains(listing, "<form") {
		t.Errorf("curl's listing of / became the page: %d %.200s", st, listing)
	}
}

// TestPrivatePages: a private channel's pages ask a browser for a read
// token through HTTP Basic, show what the token's subdirs allow, and
// never show the token.
func TestPrivatePages(t *testing.T) {
	const reader = "reader-secret-4711"
	tokens := fmt.Sprintf("[[tokens]]\nname = \"reader\"\nhash = %q\nscopes = [\"read\"]\nsubdirs = [\"osx-64\"]\n",
		auth.Hash(auth.DefaultSalt, reader))
	p, _ := startWith(t, "[download]\nenabled = true\naccess = \"token\"\n"+tokens)
	for _, f := range []string{"cph/mock-2.0.0-py37_1000.conda", "conda/sample_noarch_python-1.0-py_0.conda"} {
		if st, body := p.upload(t, testToken, corpusFile(f)); st != 201 {
			t.Fatalf("upload %s: %d %v", f, st, body)
		}
	}
	st, h, _ := fetch(t, p, "GET", "", "Accept", "text/html")
	if st != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic ") {
		t.Fatalf("private home page without a token: %d, WWW-Authenticate %q; want 401 and a Basic challenge", st, h.Get("WWW-Authenticate"))
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("me:"+reader))
	st, _, home := fetch(t, p, "GET", "", "Accept", "text/html", "Authorization", basic)
	if st != 200 || !strings.Contains(home, `href="/packages/mock"`) || strings.Contains(home, "sample_noarch_python") {
		t.Errorf("home page of an osx-64 reader: %d; want mock and not the noarch package:\n%.3000s", st, home)
	}
	st, _, pkg := fetch(t, p, "GET", "packages/mock", "Accept", "text/html", "Authorization", basic)
	if st != 200 || !strings.Contains(pkg, "/t/&lt;TOKEN&gt;") || strings.Contains(pkg, reader) {
		t.Errorf("private package page: %d; want the <TOKEN> placeholder and never the token", st)
	}
	if st, _, _ := fetch(t, p, "GET", "packages/sample_noarch_python", "Accept", "text/html", "Authorization", basic); st != 404 {
		t.Errorf("a noarch package's page for an osx-64 reader: %d, want 404", st)
	}
	if !p.logged("path=/packages/mock") || strings.Contains(p.stderr.String(), reader) {
		t.Error("the log lacks the page request, or holds the token")
	}
}

// hostileStatus is a reason phrase an upstream sends with a 503: the
// upstream's page shows it, as the cause of the failure, as text.
const hostileStatus = `<script>alert("upstream")</script>`

// failsWhen is a testChannel hook: while down is set, the upstream
// answers a 503 whose reason phrase is hostileStatus, which net/http's
// ResponseWriter cannot send.
func failsWhen(down *atomic.Bool) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !down.Load() {
			return false
		}
		c, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		defer c.Close()
		buf.WriteString("HTTP/1.1 503 " + hostileStatus + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		buf.Flush()
		return true
	}
}

// TestUpstreamPages: on a private channel with an upstream, the home
// page lists the upstream and the upstream's page shows what it is, that
// it answered, and the package a client fetched through the proxy, with
// the channel URL and a <TOKEN> placeholder, never the token. A token's
// subdirs limit the page as they do the proxy's files. Once the upstream
// fails, the page says so, with its hostile reason as text, and that the
// index is served stale.
func TestUpstreamPages(t *testing.T) {
	const fn = "big-1.0-0.conda"
	var down atomic.Bool
	dir := shared(t)
	up, caFile, _ := testChannel(t, dir, fn, failsWhen(&down))
	const reader, linux, osx, noarch, dev = "reader-secret-1", "linux-secret-2", "osx-secret-3", "noarch-secret-4", "dev-secret-5"
	var tokens string
	for name, tc := range map[string]struct{ tok, limits string }{"reader": {reader, ""}, "linux": {linux, `subdirs = ["linux-64", "noarch"]`},
		"osx": {osx, `subdirs = ["osx-64"]`}, "noarch": {noarch, `subdirs = ["noarch"]`}, "dev": {dev, `labels = ["dev"]`}} {
		tokens += fmt.Sprintf("[[tokens]]\nname = %q\nhash = %q\nscopes = [\"read\"]\n%s\n", name, auth.Hash(auth.DefaultSalt, tc.tok), tc.limits)
	}
	p, _ := startWith(t, tokens+"[download]\nenabled = true\naccess = \"token\"\n"+fmt.Sprintf(
		"[[upstreams]]\nname = \"up.stream\"\nurl = %q\nsubdirs = [\"linux-64\", \"noarch\"]\nexclude = [\"font-*\"]\nindex_ttl = \"1s\"\nca_file = %q\n", up.URL, caFile))
	basic := func(tok string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte("me:"+tok)) }
	page := func(tok, path string) (int, string) {
		st, _, body := fetch(t, p, "GET", path, "Accept", "text/html", "Authorization", basic(tok))
		return st, body
	}
	if st, h, _ := fetch(t, p, "GET", "proxy/up.stream/", "Accept", "text/html"); st != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic ") {
		t.Fatalf("the upstream's page without a token: %d %v", st, h)
	}
	for _, f := range []string{"repodata.json", fn} {
		if st, _, _ := fetch(t, p, "GET", "t/"+reader+"/proxy/up.stream/linux-64/"+f); st != 200 {
			t.Fatalf("%s through the proxy: %d", f, st)
		}
	}
	// The package is renamed into the cache just after the client has it.
	var body string
	waitUntil(t, func() bool { _, body = page(reader, "proxy/up.stream/"); return strings.Contains(body, fn) })
	for _, want := range []string{
		"<h1>Upstream up.stream</h1>", "A caching proxy of <a href=\"" + up.URL + "\"", "linux-64, noarch", "never names matching <code>font-*</code>",
		"The upstream answered the last fetch", "confirmed by the upstream", "fresh for 1 s", "1 package, 8.0 MiB, without a size limit",
		`<td>big</td><td><a href="/proxy/up.stream/linux-64/` + fn + `">` + fn + `</a></td><td>linux-64</td><td>8.0 MiB</td>`,
		fmt.Sprintf("  - https://localhost:%d/t/&lt;TOKEN&gt;/proxy/up.stream/", p.port),
		fmt.Sprintf("conda install -c https://localhost:%d/t/&lt;TOKEN&gt;/proxy/up.stream/ &lt;package&gt;", p.port),
		fmt.Sprintf("pixi auth login localhost:%d --token &lt;TOKEN&gt;", p.port),
		fmt.Sprintf("pixi workspace channel add https://localhost:%d/proxy/up.stream/", p.port),
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the upstream's page lacks %q", want)
		}
	}
	if _, home := page(reader, ""); !strings.Contains(home, `<a href="/proxy/up.stream/">up.stream</a>`) || !strings.Contains(home, "1 package, 8.0 MiB") {
		t.Errorf("the home page does not list the upstream:\n%.3000s", home)
	}
	// Clients other than browsers get what they got before: a 404.
	if st, _, js := fetch(t, p, "GET", "t/"+reader+"/proxy/up.stream/"); st != 404 || !strings.HasPrefix(js, "{") {
		t.Errorf("curl of the upstream's root: %d %s", st, js)
	}
	// A token of other subdirs sees no upstream; one of its subdirs sees
	// the page and fetches through the proxy.
	if st, _ := page(osx, "proxy/up.stream/"); st != 404 {
		t.Errorf("the upstream's page for an osx-64 token: %d, want 404", st)
	}
	if _, home := page(osx, ""); strings.Contains(home, "/proxy/up.stream/") {
		t.Error("the home page lists the upstream to an osx-64 token")
	}
	if st, b := page(linux, "proxy/up.stream/"); st != 200 || !strings.Contains(b, fn) {
		t.Errorf("the upstream's page for a linux-64 token: %d", st)
	}
	if st, _, b := fetch(t, p, "GET", "t/"+linux+"/proxy/up.stream/linux-64/"+fn); st != 200 {
		t.Errorf("a linux-64 token through the proxy: %d %.200s", st, b)
	}
	limited(t, p, fn, osx, dev, linux)
	// A token of noarch alone sees the page (noarch is one of the
	// upstream's subdirs), but not the linux-64 package in the cache.
	if st, b := page(noarch, "proxy/up.stream/"); st != 200 || !strings.Contains(b, "0 packages, 0 B, without a size limit") || strings.Contains(b, fn) {
		t.Errorf("the upstream's page for a noarch token: %d; want 0 packages, 0 B and not %s", st, fn)
	}
	if _, home := page(noarch, ""); !strings.Contains(home, `<a href="/proxy/up.stream/">up.stream</a>`) || !strings.Contains(home, "<td>0 packages, 0 B</td>") {
		t.Errorf("the home page's row of the upstream for a noarch token lacks 0 packages, 0 B:\n%.3000s", home)
	}

	down.Store(true)
	waitUntil(t, func() bool {
		_, h, _ := fetch(t, p, "GET", "t/"+reader+"/proxy/up.stream/linux-64/repodata.json")
		return h.Get("X-Proxy-Stale") == "true"
	})
	_, body = page(reader, "proxy/up.stream/")
	for _, want := range []string{"The upstream cannot be reached", "503 &lt;script&gt;alert(&#34;upstream&#34;)&lt;/script&gt;", "<strong>marked stale</strong> once older than 1 s", fn} {
		if !strings.Contains(body, want) {
			t.Errorf("with the upstream failing, the page lacks %q", want)
		}
	}
	if strings.Contains(body, hostileStatus) {
		t.Error("the upstream's reason phrase reached the page as markup")
	}
	if _, home := page(reader, ""); !strings.Contains(home, "unreachable") {
		t.Error("the home page does not say the upstream is unreachable")
	}
	for _, tok := range []string{reader, linux, osx, noarch, dev} {
		if strings.Contains(p.stderr.String(), tok) {
			t.Errorf("the token %s reached the log", tok)
		}
	}
}

// limited checks what tokens limited to other subdirs (osx), to a label
// other than main (dev) or to subdirs (linux) may not read below
// /proxy/<name>/: fn in linux-64, the upstream's page and home page row,
// the upstream's root and its channeldata.json, which span subdirs.
func limited(t *testing.T, p *proc, fn, osx, dev, linux string) {
	t.Helper()
	for _, tc := range []struct {
		tok, path string
		html      bool
		want      int
	}{
		{osx, "proxy/up.stream/linux-64/" + fn, false, 403},
		{dev, "proxy/up.stream/linux-64/" + fn, false, 403},
		{dev, "proxy/up.stream/", true, 404},
		{linux, "proxy/up.stream/channeldata.json", false, 403},
		{linux, "proxy/up.stream/", false, 403},
	} {
		hdr := []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("me:"+tc.tok))}
		if tc.html {
			hdr = append(hdr, "Accept", "text/html")
		}
		if st, _, b := fetch(t, p, "GET", tc.path, hdr...); st != tc.want {
			t.Errorf("GET /%s (html %v) with a limited token: %d, want %d: %.200q", tc.path, tc.html, st, tc.want, b)
		}
	}
	_, _, home := fetch(t, p, "GET", "", "Accept", "text/html", "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("me:"+dev)))
	if !strings.Contains(home, "<h1") || strings.Contains(home, "/proxy/up.stream/") {
		t.Errorf("the home page lists the upstream to a dev token:\n%.2000s", home)
	}
}
