package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/metrics"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// rawDo sends a request line as it is over HTTP/1.1, and returns the
// response with its body read.
func (e *env) rawDo(t *testing.T, method, target string) (*http.Response, string) {
	t.Helper()
	c := e.dialRaw(t)
	defer c.Close()
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", method, target)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// withMetrics serves /metrics to loopback, with token names.
func withMetrics(o *server.Options) {
	o.Observe.Metrics = metrics.New("test", "test", true)
	o.Observe.MetricsAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// TestTokenPathNeverLogged sends a token in every /t/ form a client
// could get wrong (dot and empty segments, encodings, case, methods,
// other routes) and checks each answer, and that no log line (the
// server's and the http.Server's own), audit record, metric, response
// body or header such as a redirect's Location holds the token. A /t/
// path serves the channel's downloads only: the admin API, /metrics and
// health checks answer 404 under it.
func TestTokenPathNeverLogged(t *testing.T) {
	e := startServing(t, true, withMetrics)
	data := pkgtest.Conda(t, pkgtest.Simple("demo", "1.0", "0", "linux-64"))
	if r := e.upload(t, "demo-1.0-0.conda", data); r.status != 201 {
		t.Fatal(r.raw)
	}
	// The secrets: a read token, an admin token, and wrong ones.
	const wrong = "Wr0ng-SECRET-x7"
	cases := []struct {
		method, target string
		status         int
	}{
		{"GET", "/t/" + readToken + "/./linux-64/repodata.json", 400},
		{"GET", "/t/" + readToken + "//linux-64/", 400},
		{"GET", "/t/" + readToken, 400},
		{"GET", "/t/" + readToken + "/../linux-64/", 400},
		{"GET", "/t/" + readToken + "/linux-64/../noarch/", 400},
		{"GET", "/t/" + readToken + "%2Flinux-64/repodata.json", 400},
		{"GET", "/t/" + readToken + "%2flinux-64%2frepodata.json", 400},
		{"GET", "/t%2F" + readToken + "/linux-64/repodata.json", 400},
		{"GET", "/t%252F" + readToken + "/linux-64/repodata.json", 400},
		{"GET", "/t/" + readToken + "%5Clinux-64/repodata.json", 400},
		{"GET", "/t/" + readToken + "\\linux-64\\repodata.json", 400},
		{"GET", "/t/" + readToken + ";x=1/linux-64/", 400},
		{"GET", "/t;x/" + readToken + "/linux-64/", 400},
		{"GET", "/t/" + readToken + "/linux-64/repodata.json%00", 400},
		{"GET", "/t/" + readToken + "%00/linux-64/", 400},
		{"GET", "/T/" + readToken + "/linux-64/repodata.json", 400},
		{"GET", "//t/" + readToken + "/linux-64/repodata.json", 400},
		{"GET", "/./t/" + readToken + "/linux-64/repodata.json", 400},
		{"GET", "/../t/" + readToken + "/linux-64/", 400},
		{"GET", "/t//" + readToken + "/linux-64/", 400},
		{"GET", "/t/./" + readToken + "/linux-64/", 400},
		{"GET", "/t/%2e%2e%2f" + readToken + "/linux-64/", 400},
		{"GET", "/%54/" + readToken + "/linux-64/../x", 400},
		{"GET", "https://x/t/" + readToken + "/./linux-64/", 400},
		{"GET", "/t/" + readToken + "/%c0%ae%c0%ae/x", 400},
		{"GET", "/t/" + readToken + "/%zz/x", 400}, // refused by net/http itself
		{"POST", "/t/" + readToken + "/", 405},
		{"POST", "/t/" + readToken, 400},
		{"PUT", "/t/" + readToken + "/linux-64/demo-1.0-0.conda", 405},
		{"DELETE", "/t/" + adminToken + "/api/v1/packages/main/linux-64/demo-1.0-0.conda", 405},
		{"OPTIONS", "/t/" + readToken + "/", 405},
		{"PATCH", "/t/" + readToken + "/./x", 400},
		// The /t/ form serves the channel only.
		{"GET", "/t/" + adminToken + "/api/v1/packages/main/linux-64", 404},
		{"GET", "/t/" + adminToken + "/api/v1/patches/main/linux-64", 404},
		{"HEAD", "/t/" + adminToken + "/api/v1/packages/main/linux-64", 404},
		{"GET", "/t/" + adminToken + "/api/v1/packages/main/linux-64/demo-1.0-0.conda", 404},
		{"GET", "/t/" + adminToken + "/metrics", 404},
		{"GET", "/t/" + adminToken + "/healthz", 404},
		{"GET", "/t/" + adminToken + "/readyz", 404},
		{"GET", "/t/" + adminToken + "/_/oidc/audience", 404},
		// Well formed: answered, and still never logged.
		{"GET", "/t/" + readToken + "/linux-64/repodata.json", 200},
		{"HEAD", "/t/" + readToken + "/linux-64/", 200},
		{"GET", "/t/" + readToken + "/linux-64", 301},
		{"GET", "/t/" + readToken + "/label", 301},
		{"GET", "/t/" + readToken + "/nothing-here", 404},
		{"GET", "/t/" + wrong + "/linux-64/repodata.json", 401},
		{"GET", "/t/" + adminToken + "/linux-64/repodata.json", 200},
		{"GET", "/label/dev/t/" + readToken + "/linux-64/", 401},
		{"GET", "/linux-64/t/" + readToken, 401},
	}
	secrets := []string{readToken, adminToken, wrong}
	leaks := func(where, s string) {
		t.Helper()
		for _, line := range strings.Split(s, "\n") {
			for _, sec := range secrets {
				if strings.Contains(line, sec) {
					t.Errorf("%s holds the token %q: %q", where, sec, line)
				}
			}
		}
	}
	for _, c := range cases {
		resp, body := e.rawDo(t, c.method, c.target)
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.target, resp.StatusCode, body, c.status)
		}
		if c.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", c.method, c.target, resp.Header.Get("Allow"))
		}
		leaks(c.method+" "+c.target+" body", body)
		leaks(c.method+" "+c.target+" header", fmt.Sprint(resp.Header))
	}
	// The same over HTTP/2, as Go's client sends them.
	for _, p := range []string{"/t/" + readToken + "/./linux-64/repodata.json", "/t/" + readToken + "//linux-64/", "/t/" + adminToken + "/metrics"} {
		r, b := e.get(t, "GET", p, nil)
		if r.ProtoMajor != 2 || r.StatusCode < 400 {
			t.Errorf("HTTP/2 GET %s: %s %d", p, r.Proto, r.StatusCode)
		}
		leaks("HTTP/2 "+p, string(b)+fmt.Sprint(r.Header))
	}
	resp, m := e.get(t, "GET", "/metrics", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(m), "conda_upload") {
		t.Fatalf("metrics: %d", resp.StatusCode)
	}
	leaks("/metrics", string(m))
	audit, err := os.ReadFile(e.audit)
	if err != nil {
		t.Fatal(err)
	}
	leaks("the audit log", string(audit))
	logs := e.logs.String()
	leaks("the log", logs)
	if n := strings.Count(logs, "REDACTED"); n < len(cases) {
		t.Errorf("%d redacted paths in the log, want at least %d:\n%s", n, len(cases), logs)
	}
}

// TestReadLimits: a read token limited to labels or subdirs reads inside
// its limits and gets 403 outside them, as an upload would, for every
// file the channel serves (packages, repodata.json and .zst, shards,
// run_exports.json, channeldata.json), every listing, each way a token
// is sent, and the admin API's list. A path above a limit (the list of
// labels, a label's root listing or channeldata.json) needs a token
// without that limit.
func TestReadLimits(t *testing.T) {
	type reader struct {
		secret          string
		labels, subdirs []string
	}
	readers := map[string]reader{
		"all":        {"rd-all-secret", nil, nil},
		"dev":        {"rd-dev-secret", []string{"dev"}, nil},
		"linux":      {"rd-linux-secret", nil, []string{"linux-64", "noarch"}},
		"main-linux": {"rd-main-linux-secret", []string{"main"}, []string{"linux-64"}},
	}
	e := startServing(t, true, func(o *server.Options) {
		toks := []auth.Token{{Name: "ci", Hash: mustHash(token)}}
		for name, r := range readers {
			toks = append(toks, auth.Token{Name: name, Hash: mustHash(r.secret), Scopes: []string{auth.ScopeRead}, Labels: r.labels, Subdirs: r.subdirs})
		}
		a, err := auth.New(auth.DefaultSalt, toks)
		if err != nil {
			t.Fatal(err)
		}
		o.Auth = a
	})
	for _, label := range []string{"main", "dev"} {
		for _, subdir := range []string{"linux-64", "osx-64", "noarch"} {
			spec := pkgtest.Simple("demo-"+strings.ReplaceAll(subdir, "-", ""), "1.0", "0", subdir)
			if r := e.uploadTo(t, token, label, spec.Stem()+".conda", pkgtest.Conda(t, spec)); r.status != 201 {
				t.Fatal(r.raw)
			}
		}
	}
	// channeldata.json is off by default; the channel serves it if there.
	for _, dir := range []string{e.root, filepath.Join(e.root, "label", "dev")} {
		if err := os.WriteFile(filepath.Join(dir, "channeldata.json"), []byte(`{"channeldata_version":1,"packages":{},"subdirs":[]}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Every public path, with the label and subdir it lies in.
	type where struct{ label, subdir string }
	// Listings, and redirects to them (which the client follows).
	paths := map[string]where{"/": {"main", ""}, "/label/": {"", ""}, "/label/dev/": {"dev", ""},
		"/label": {"", ""}, "/label/dev": {"dev", ""}, "/osx-64": {"main", "osx-64"}, "/label/dev/linux-64": {"dev", "linux-64"}}
	kinds := map[string]bool{}
	filepath.WalkDir(e.root, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(e.root, p)
		if strings.HasPrefix(d.Name(), ".") && rel != "." {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		parts := strings.Split(rel, "/")
		w := where{"main", ""}
		if parts[0] == "label" && len(parts) > 1 {
			w.label, parts = parts[1], parts[2:]
		}
		switch {
		case d.IsDir() && len(parts) == 1 && parts[0] != "label" && parts[0] != ".":
			w.subdir = parts[0]
			paths["/"+rel+"/"] = w
		case !d.IsDir() && len(parts) == 2:
			w.subdir = parts[0]
			paths["/"+rel] = w
			kinds[strings.TrimPrefix(filepath.Ext(parts[1]), ".")] = true
		case !d.IsDir() && len(parts) == 1:
			paths["/"+rel] = w
			kinds[parts[0]] = true
		}
		return nil
	})
	for _, k := range []string{"conda", "json", "zst", "channeldata.json"} {
		if !kinds[k] {
			t.Fatalf("the channel has no %s file to read: %v", k, kinds)
		}
	}
	allowed := func(r reader, w where) bool {
		return (len(r.labels) == 0 || slices.Contains(r.labels, w.label)) && (len(r.subdirs) == 0 || slices.Contains(r.subdirs, w.subdir))
	}
	checked := 0
	for p, w := range paths {
		for name, r := range readers {
			want := http.StatusForbidden
			if allowed(r, w) {
				want = http.StatusOK
			}
			for i, send := range []func() (*http.Response, []byte){
				func() (*http.Response, []byte) {
					return e.get(t, "GET", p, http.Header{"Authorization": {"Bearer " + r.secret}})
				},
				func() (*http.Response, []byte) { return e.get(t, "HEAD", "/t/"+r.secret+p, nil) },
			} {
				resp, body := send()
				if resp.StatusCode != want {
					t.Errorf("%s reading %s (form %d): %d %s, want %d", name, p, i, resp.StatusCode, body, want)
				} else if want == http.StatusForbidden && i == 0 {
					isJSONError(t, resp, body, want)
				}
				checked++
			}
		}
	}
	t.Logf("%d reads of %d paths checked", checked, len(paths))
	// The example, and the admin API's list.
	if r, b := e.get(t, "GET", "/osx-64/demo-osx64-1.0-0.conda", http.Header{"Authorization": {"Bearer " + readers["linux"].secret}}); r.StatusCode != 403 {
		t.Errorf("a linux-64 token downloads osx-64: %d %s", r.StatusCode, b)
	}
	for _, c := range []struct {
		reader, label, subdir string
		status                int
	}{
		{"dev", "main", "linux-64", 403},
		{"dev", "dev", "linux-64", 200},
		{"main-linux", "main", "osx-64", 403},
		{"main-linux", "dev", "linux-64", 403},
		{"main-linux", "main", "linux-64", 200},
		{"linux", "dev", "noarch", 200},
		{"all", "dev", "osx-64", 200},
	} {
		if r := e.call(t, "GET", "api/v1/packages/"+c.label+"/"+c.subdir, readers[c.reader].secret, ""); r.status != c.status {
			t.Errorf("%s listing %s/%s: %d %s, want %d", c.reader, c.label, c.subdir, r.status, r.raw, c.status)
		}
	}
}
