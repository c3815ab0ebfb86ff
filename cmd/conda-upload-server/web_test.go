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
