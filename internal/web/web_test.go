package web

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/attest"
	"github.com/conda-upload-server/conda-upload-server/internal/attest/attesttest"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/corpus"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
	"github.com/conda-upload-server/conda-upload-server/internal/stats"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// The hostile package: every about.json and index.json string a page
// shows tries to run script, to link to javascript:, to reorder text,
// or to be 1 MiB long.
const (
	hostileName  = "evil-pkg"
	hostileFile  = "evil-pkg-6.6.6-h0_0.conda"
	scriptProbe  = `<script>alert("xss")</script>`
	imgProbe     = `<img src=x onerror=alert(1)>`
	rtlProbe     = "good\u202Eexe.txt"
	yankedFile   = "evil-pkg-6.6.5-h0_0.conda"
	yankedReason = `broken <b>build</b>`
)

func hostileSpec(version string) pkgtest.Spec {
	// Nearly 1 MiB: the indexer leaves out an about.json over 1 MiB.
	big := strings.Repeat("A", 1<<20-8<<10)
	about, _ := json.Marshal(map[string]any{
		"summary":     scriptProbe + rtlProbe,
		"description": imgProbe + big,
		"home":        "javascript:alert(1)",
		"dev_url":     "https://example.org/dev\"><script>alert(2)</script>",
		"doc_url":     "data:text/html,<script>alert(3)</script>",
		"license":     big[:4<<10],
	})
	s := pkgtest.Simple(hostileName, version, "h0_0", "linux-64")
	s.Index = map[string]any{
		"license": "MIT" + scriptProbe,
		// index.json may be 1 MiB in all.
		// Each spec must start with a name, or the indexer leaves the
		// package out.
		"depends":    []string{"python >=3" + scriptProbe, "x " + rtlProbe, big[:600<<10]},
		"constrains": []string{"foo " + imgProbe},
	}
	s.Info = append(s.Info, pkgtest.Member{Name: "info/about.json", Data: about})
	return s
}

// testChannel builds a channel of the real corpus plus the hostile
// package (in main and in label dev, one version yanked), indexed by the
// built-in indexer, and returns its root, the indexer and the lifecycle
// manager.
func testChannel(t testing.TB) (string, *repodata.Writer, *lifecycle.Manager) {
	t.Helper()
	root := t.TempDir()
	for _, p := range corpus.Load(t, "pkgs") {
		dir := filepath.Join(root, p.Subdir)
		os.MkdirAll(dir, 0o755)
		b, err := os.ReadFile(p.Path())
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, p.Name()), b, 0o644)
	}
	for _, dir := range []string{"linux-64", "label/dev/linux-64"} {
		os.MkdirAll(filepath.Join(root, dir), 0o755)
		for _, v := range []string{"6.6.6", "6.6.5"} {
			s := hostileSpec(v)
			os.WriteFile(filepath.Join(root, dir, s.Stem()+".conda"), pkgtest.Conda(t, s), 0o644)
		}
	}
	st, err := store.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	lm := lifecycle.New(st)
	if _, _, err := lm.SetYank("main", "linux-64", yankedFile, true, lifecycle.Yank{Reason: yankedReason, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	x := repodata.New(root, condapkg.DefaultLimits(), slog.New(slog.DiscardHandler))
	dirs, _ := filepath.Glob(filepath.Join(root, "*-*"))
	more, _ := filepath.Glob(filepath.Join(root, "noarch"))
	labelled, _ := filepath.Glob(filepath.Join(root, "label", "*", "*"))
	for _, d := range append(append(dirs, more...), labelled...) {
		rel, _ := filepath.Rel(root, d)
		if err := x.Run(context.Background(), rel); err != nil {
			t.Fatal(err)
		}
	}
	return root, x, lm
}

type fixture struct {
	srv   *httptest.Server
	stats *stats.Counter
}

// serve starts the pages over HTTP; the X-Test-Labels header stands in
// for a token's labels (the server's authorization decides them).
func serve(t *testing.T, private bool) fixture {
	t.Helper()
	_, x, lm := testChannel(t)
	sc, err := stats.Open(stats.Options{Dir: t.TempDir(), FlushEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	ui, err := New(Options{Source: x, Stats: sc, Yanks: lm.YankReasons, Private: private, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var acc Access
		if l := r.Header.Get("X-Test-Labels"); l != "" {
			acc.Labels = strings.Split(l, ",")
		}
		if !Wants(r) {
			http.Error(w, "plain listing", http.StatusTeapot)
			return
		}
		if err := ui.Serve(w, r, acc); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return fixture{srv, sc}
}

func get(t *testing.T, f fixture, path string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestPages(t *testing.T) {
	f := serve(t, false)
	for _, tc := range []struct {
		path     string
		want     []string
		wantNot  []string
		wantCode int
		hdr      []string
	}{
		{path: "/", want: []string{"packages", "Recent uploads", "evil-pkg", "conda install -c http://", "/label/dev/", "/linux-64/", "Search packages"}},
		{path: "/?q=mock", want: []string{`Results for “mock”`, `href="/packages/mock"`}},
		{path: "/?q=zzznothing", want: []string{"No packages match"}},
		{path: "/packages/" + hostileName, want: []string{hostileFile, "yanked", "broken &lt;b&gt;build&lt;/b&gt;",
			"conda install -c http://", "mamba install -c", "pixi add evil-pkg", "main, dev", "Versions and platforms", "Depends",
			`href="https://example.org/dev%22%3E%3Cscript%3Ealert%282%29%3C/script%3E"`}},
		{path: "/packages/" + hostileName + "?label=dev", want: []string{"/label/dev evil-pkg", `aria-current="page"`}},
		{path: "/label/dev/", want: []string{"Label dev", "evil-pkg"}, wantNot: []string{">mock<"}},
		{path: "/linux-64/", want: []string{hostileFile, "repodata.json"}},
		{path: "/packages/no-such-thing", wantCode: http.StatusNotFound},
		{path: "/label/nosuch/", wantCode: http.StatusNotFound},
		{path: "/nosuch-64/", wantCode: http.StatusNotFound},
	} {
		code, h, body := get(t, f, tc.path, tc.hdr...)
		want := tc.wantCode
		if want == 0 {
			want = http.StatusOK
		}
		if code != want {
			t.Errorf("GET %s: %d, want %d\n%.300s", tc.path, code, want, body)
			continue
		}
		if code != http.StatusOK {
			continue
		}
		if h.Get("Content-Security-Policy") != CSP || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") == "" {
			t.Errorf("GET %s: security headers missing: %v", tc.path, h)
		}
		for _, s := range tc.want {
			if !strings.Contains(body, s) {
				t.Errorf("GET %s: page lacks %q", tc.path, s)
			}
		}
		for _, s := range tc.wantNot {
			if strings.Contains(body, s) {
				t.Errorf("GET %s: page has %q", tc.path, s)
			}
		}
	}
}

// TestHostileRendersInert: the hostile package's strings are escaped,
// its javascript: and data: links are not links, its RTL override is
// gone, and its 1 MiB strings are clipped.
func TestHostileRendersInert(t *testing.T) {
	f := serve(t, false)
	for _, path := range []string{"/", "/packages/" + hostileName, "/packages/" + hostileName + "?file=linux-64/" + hostileFile, "/?q=evil", "/label/dev/"} {
		_, _, body := get(t, f, path)
		// ZgotmplZ would mean html/template, not link, stopped a URL.
		for _, bad := range []string{"<script>alert", "<img src=x", "javascript:", "data:text/html", "\u202E", `"><script>`, "ZgotmplZ"} {
			if strings.Contains(body, bad) {
				t.Errorf("GET %s: page contains %q", path, bad)
			}
		}
		if len(body) > 200<<10 {
			t.Errorf("GET %s: page is %d bytes; the 1 MiB strings were not clipped", path, len(body))
		}
		if strings.Contains(path, "packages") && !strings.Contains(body, `<p class="summary">&lt;script&gt;alert(&#34;xss&#34;)&lt;/script&gt;goodexe.txt</p>`) {
			t.Errorf("GET %s: the summary is not shown as text", path)
		}
	}
}

// TestAccessLimitsPages: a token of label dev sees dev's packages only.
func TestAccessLimitsPages(t *testing.T) {
	f := serve(t, false)
	_, _, home := get(t, f, "/", "X-Test-Labels", "dev")
	if strings.Contains(home, `href="/packages/mock"`) || !strings.Contains(home, "evil-pkg") || strings.Contains(home, `href="/label/main/"`) {
		t.Errorf("home page of a dev token shows main's packages or lacks dev's:\n%.2000s", home)
	}
	if code, _, _ := get(t, f, "/packages/mock", "X-Test-Labels", "dev"); code != http.StatusNotFound {
		t.Errorf("package page of a main-only package for a dev token: %d, want 404", code)
	}
	if code, _, _ := get(t, f, "/linux-64/", "X-Test-Labels", "dev"); code != http.StatusNotFound {
		t.Errorf("main's subdir page for a dev token: %d, want 404", code)
	}
	if code, _, _ := get(t, f, "/api/v1/stats/packages/mock", "X-Test-Labels", "dev"); code != http.StatusNotFound {
		t.Errorf("counts of a main-only package for a dev token: %d, want 404", code)
	}
}

// TestPrivateInstallCommand: a private channel's commands show where the
// token goes, never a token.
func TestPrivateInstallCommand(t *testing.T) {
	f := serve(t, true)
	_, h, body := get(t, f, "/packages/"+hostileName+"?label=dev")
	for _, s := range []string{"/t/&lt;TOKEN&gt;/label/dev evil-pkg", "pixi auth login"} {
		if !strings.Contains(body, s) {
			t.Errorf("private package page lacks %q", s)
		}
	}
	if !strings.Contains(h.Get("Cache-Control"), "private") {
		t.Errorf("private page's Cache-Control is %q", h.Get("Cache-Control"))
	}
}

// TestPlainClientsUnaffected: only a browser's request for a listing
// gets a page; index files, packages and curl's listings do not.
func TestPlainClientsUnaffected(t *testing.T) {
	for _, tc := range []struct {
		path, accept string
		want         bool
	}{
		{"/", "text/html", true},
		{"/", "*/*", false},
		{"/linux-64/", "text/html,*/*", true},
		{"/linux-64/repodata.json", "text/html", false},
		{"/linux-64/" + hostileFile, "text/html", false},
		{"/channeldata.json", "text/html", false},
		// A label may hold a dot; its listings are still pages.
		{"/label/rc.1/", "text/html", true},
		{"/label/rc.1/linux-64/", "text/html", true},
		{"/label/rc.1/linux-64/repodata.json", "text/html", false},
		{"/label/rc.1/", "*/*", false},
		{"/packages/foo", "*/*", true},
		{"/api/v1/stats", "application/json", true},
		// An upstream's page; its files stay the proxy's.
		{"/proxy/up.stream/", "text/html", true},
		{"/proxy/up.stream/", "*/*", false},
		{"/proxy/up.stream/linux-64/repodata.json", "text/html", false},
		{"/proxy/up.stream/linux-64/x-1.0-0.conda", "text/html", false},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.path, nil)
		r.Header.Set("Accept", tc.accept)
		if got := Wants(r); got != tc.want {
			t.Errorf("Wants(GET %s, Accept %s) = %v, want %v", tc.path, tc.accept, got, tc.want)
		}
	}
}

// TestCountsShown: downloads recorded show on the package page and in
// the JSON endpoint, per file and per day.
func TestCountsShown(t *testing.T) {
	f := serve(t, false)
	for range 3 {
		f.stats.Record("linux-64/"+hostileFile, "10.0.0.1", false, time.Now())
	}
	// A label's copy is the same file.
	file, _ := stats.Countable("label/dev/linux-64/" + hostileFile)
	f.stats.Record(file, "10.0.0.2", false, time.Now())
	_, _, body := get(t, f, "/packages/"+hostileName)
	if !strings.Contains(body, "4 downloads in all") {
		t.Errorf("package page does not say 4 downloads")
	}
	_, _, js := get(t, f, "/api/v1/stats/packages/"+hostileName)
	var a statsAnswer
	if err := json.Unmarshal([]byte(js), &a); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	if a.Total != 4 || len(a.Days) != 90 || a.Days[89].Downloads != 4 {
		t.Errorf("stats of the package: total %d, %d days, today %v; want 4, 90, 4", a.Total, len(a.Days), a.Days[len(a.Days)-1])
	}
	_, _, js = get(t, f, "/api/v1/stats/files/linux-64/"+hostileFile+"?days=7")
	a = statsAnswer{}
	json.Unmarshal([]byte(js), &a)
	if a.Total != 4 || len(a.Days) != 7 {
		t.Errorf("stats of the file: %s", js)
	}
}

// TestAttestationsShown: a file whose record names a sidecar shows who
// signed its attestations, read from its real sidecar for the rows shown
// only, as text, clipped, each signer once; the other files say they
// have none, and the page says the server verifies.
func TestAttestationsShown(t *testing.T) {
	root, x, _ := testChannel(t)
	sig := attesttest.New(t)
	const issuer = "https://token.actions.githubusercontent.com"
	workflow := "https://github.com/o/r/.github/workflows/release.yml@refs/tags/v1"
	long := "https://example.org/" + strings.Repeat("a", 400)
	statement := attesttest.Statement(t, hostileFile, strings.Repeat("0", 64), "", nil)
	// In dev only: the file's row (it is in main and dev, main first) is
	// attested.
	pkg := filepath.Join(root, "label", "dev", "linux-64", hostileFile)
	for _, b := range [][]byte{
		sig.Sign(t, statement, attesttest.Signing{SAN: workflow, Issuer: issuer}),
		sig.Sign(t, statement, attesttest.Signing{SAN: "javascript:alert(1)", Issuer: issuer}),
		sig.Sign(t, statement, attesttest.Signing{SAN: long, Issuer: issuer}),
		sig.Sign(t, statement, attesttest.Signing{SAN: workflow, Issuer: issuer}),
		[]byte(`{"not": "a bundle"}`),
	} {
		if _, err := sidecar.Add(pkg, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Run(context.Background(), "label/dev/linux-64"); err != nil {
		t.Fatal(err)
	}
	var reads []string
	ui, err := New(Options{Source: x, AttestMode: "verify", Signers: func(dir, fn string) []string {
		reads = append(reads, dir+"/"+fn)
		st, err := attest.ReadStored(filepath.Join(root, dir, fn))
		if err != nil || st == nil {
			t.Errorf("read the sidecar of %s/%s: %v", dir, fn, err)
			return nil
		}
		return st.Signers
	}})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	if err := ui.Serve(w, httptest.NewRequest(http.MethodGet, "/packages/"+hostileName, nil), Access{}); err != nil {
		t.Fatal(err)
	}
	page := w.Body.String()
	row := rowOf(page, hostileFile)
	for _, want := range []string{
		`attested by<ul class="signers"><li><code class="signer">` + workflow + "</code>",
		`<code class="signer">javascript:alert(1)</code>`,
		`<code class="signer">` + long[:maxText] + "…</code>",
		"a certificate that names no one",
	} {
		if !strings.Contains(row, want) {
			t.Errorf("the row of %s lacks %q:\n%s", hostileFile, want, row)
		}
	}
	if strings.Count(row, workflow) != 1 || strings.Contains(row, long) || strings.Contains(row, `href="javascript`) {
		t.Errorf("the row of %s shows a signer twice, unclipped, or as a link:\n%s", hostileFile, row)
	}
	if row := rowOf(page, yankedFile); !strings.Contains(row, "no attestation") {
		t.Errorf("the row of %s does not say it has no attestation:\n%s", yankedFile, row)
	}
	if len(reads) != 1 || reads[0] != "label/dev/linux-64/"+hostileFile {
		t.Errorf("sidecars read: %q, want the attested file's alone", reads)
	}
	if !strings.Contains(page, "This server verified each attestation when it accepted it") {
		t.Error("the page does not say the server verifies attestations")
	}
}

// rowOf returns the row of a page's files table that links to filename.
func rowOf(page, filename string) string {
	for _, row := range strings.Split(page, "<tr") {
		if strings.Contains(row, "/"+filename+`"`) {
			return row
		}
	}
	return ""
}
