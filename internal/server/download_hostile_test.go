package server_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/channel"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// servedPackage starts a serving server with one package of about 64 KiB
// in linux-64 and returns it, the package's bytes and its validators.
func servedPackage(t *testing.T, opts ...option) (e *env, data []byte, etag, modified string) {
	t.Helper()
	e = startServing(t, false, opts...)
	var buf bytes.Buffer
	pkgtest.LargeConda(t, pkgtest.Simple("demo", "1.0", "0", "linux-64"), 64<<10, &buf)
	data = buf.Bytes()
	if r := e.upload(t, "demo-1.0-0.conda", data); r.status != 201 {
		t.Fatalf("upload: %d %s", r.status, r.raw)
	}
	resp, _ := e.get(t, "HEAD", "/linux-64/demo-1.0-0.conda", nil)
	return e, data, resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
}

// TestDownloadPreconditions: every combination of the conditional
// headers gets the answer RFC 9110 §13.2.2 orders, a failed If-Match or
// If-Unmodified-Since included: a JSON 412, logged as 412, not an empty
// 200 logged as status 0.
func TestDownloadPreconditions(t *testing.T) {
	e, data, etag, modified := servedPackage(t)
	const pkg = "/linux-64/demo-1.0-0.conda"
	past := time.Now().Add(-48 * time.Hour).UTC().Format(http.TimeFormat)
	future := time.Now().Add(48 * time.Hour).UTC().Format(http.TimeFormat)
	cases := []struct {
		name   string
		method string
		header http.Header
		status int
		body   int // bytes of the package expected; -1 for a JSON error
	}{
		{"If-Match other", "GET", http.Header{"If-Match": {`"other"`}}, 412, -1},
		{"If-Match other, HEAD", "HEAD", http.Header{"If-Match": {`"other"`}}, 412, 0},
		{"If-Match weak of ours", "GET", http.Header{"If-Match": {"W/" + etag}}, 412, -1},
		{"If-Match ours", "GET", http.Header{"If-Match": {etag}}, 200, len(data)},
		{"If-Match list with ours", "GET", http.Header{"If-Match": {`"a", ` + etag}}, 200, len(data)},
		{"If-Match *", "GET", http.Header{"If-Match": {"*"}}, 200, len(data)},
		{"If-Unmodified-Since past", "GET", http.Header{"If-Unmodified-Since": {past}}, 412, -1},
		{"If-Unmodified-Since future", "GET", http.Header{"If-Unmodified-Since": {future}}, 200, len(data)},
		{"If-Match ours beats If-Unmodified-Since past", "GET", http.Header{"If-Match": {etag}, "If-Unmodified-Since": {past}}, 200, len(data)},
		{"If-Match other before If-None-Match ours", "GET", http.Header{"If-Match": {`"other"`}, "If-None-Match": {etag}}, 412, -1},
		{"If-Unmodified-Since past before If-None-Match ours", "GET", http.Header{"If-Unmodified-Since": {past}, "If-None-Match": {etag}}, 412, -1},
		{"If-Match other with a range", "GET", http.Header{"If-Match": {`"other"`}, "Range": {"bytes=0-9"}}, 412, -1},
		{"If-Match other with bytes=-0", "GET", http.Header{"If-Match": {`"other"`}, "Range": {"bytes=-0"}}, 412, -1},
		{"If-None-Match ours", "GET", http.Header{"If-None-Match": {etag}}, 304, 0},
		{"If-None-Match *", "GET", http.Header{"If-None-Match": {"*"}}, 304, 0},
		{"If-None-Match other beats If-Modified-Since", "GET", http.Header{"If-None-Match": {`"other"`}, "If-Modified-Since": {modified}}, 200, len(data)},
		{"If-Modified-Since now", "GET", http.Header{"If-Modified-Since": {modified}}, 304, 0},
		{"If-Modified-Since past", "GET", http.Header{"If-Modified-Since": {past}}, 200, len(data)},
		{"If-Range other", "GET", http.Header{"If-Range": {`"other"`}, "Range": {"bytes=0-9"}}, 200, len(data)},
		{"If-Range ours", "GET", http.Header{"If-Range": {etag}, "Range": {"bytes=0-9"}}, 206, 10},
		{"If-Range date", "GET", http.Header{"If-Range": {modified}, "Range": {"bytes=0-9"}}, 206, 10},
		{"If-Range past date", "GET", http.Header{"If-Range": {past}, "Range": {"bytes=0-9"}}, 200, len(data)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get(t, c.method, "/linux-64/demo-1.0-0.conda", c.header)
			switch {
			case c.body < 0:
				isJSONError(t, resp, body, c.status)
			case resp.StatusCode != c.status || len(body) != c.body:
				t.Errorf("%d with %d bytes, want %d with %d", resp.StatusCode, len(body), c.status, c.body)
			}
		})
	}
	if logs := e.logs.String(); strings.Contains(logs, "status=0") || !strings.Contains(logs, fmt.Sprintf("path=%s remote", pkg)) ||
		!strings.Contains(logs, "status=412") {
		t.Errorf("412 not logged as such:\n%s", logs)
	}
}

// TestDownloadRanges: a request for many ranges, or many that overlap
// or come out of order, gets the whole file (200), not a multipart
// answer many times its size; a range no byte satisfies (bytes=-0) is
// 416, not a 206 with an impossible Content-Range.
func TestDownloadRanges(t *testing.T) {
	e, data, etag, _ := servedPackage(t)
	size := len(data)
	if size < 14000 {
		t.Fatalf("package of %d bytes is too small for this test", size)
	}
	spans := func(n, step int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("%d-%d", i*step, i*step)
		}
		return "bytes=" + strings.Join(s, ",")
	}
	cases := []struct {
		name, rng string
		status    int
		parts     int    // parts of a multipart 206
		crange    string // Content-Range of a single-part 206 or a 416
	}{
		{"14000 ranges of 0-0", "bytes=" + strings.TrimSuffix(strings.Repeat("0-0,", 14000), ","), 200, 0, ""},
		{"one more than the bound", spans(channel.MaxRanges+1, 2), 200, 0, ""},
		{"the bound", spans(channel.MaxRanges, 2), 206, channel.MaxRanges, ""},
		{"three overlapping", "bytes=0-10,5-15,20-30", 200, 0, ""},
		{"three out of order", "bytes=20-29,0-9,40-49", 200, 0, ""},
		{"three repeated", "bytes=0-0,0-0,0-0", 200, 0, ""},
		{"two overlapping", "bytes=0-10,5-15", 206, 2, ""},
		{"three in order", "bytes=0-9,20-29,40-49", 206, 3, ""},
		{"suffix of 0", "bytes=-0", 416, 0, fmt.Sprintf("bytes */%d", size)},
		{"suffixes of 0", "bytes=-0,-0", 416, 0, fmt.Sprintf("bytes */%d", size)},
		{"suffix of 0 and a range", "bytes=-0,0-3", 206, 0, fmt.Sprintf("bytes 0-3/%d", size)},
		{"suffix of 5", "bytes=-5", 206, 0, fmt.Sprintf("bytes %d-%d/%d", size-5, size-1, size)},
		{"past the end", fmt.Sprintf("bytes=%d-", size), 416, 0, fmt.Sprintf("bytes */%d", size)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get(t, "GET", "/linux-64/demo-1.0-0.conda", http.Header{"Range": {c.rng}})
			if c.status == 416 {
				isJSONError(t, resp, body, 416)
			}
			if resp.StatusCode != c.status {
				t.Fatalf("%d, want %d", resp.StatusCode, c.status)
			}
			if c.status == 200 && string(body) != string(data) {
				t.Errorf("200 with %d bytes, want the whole %d", len(body), size)
			}
			if cr := resp.Header.Get("Content-Range"); c.crange != "" && cr != c.crange {
				t.Errorf("Content-Range %q, want %q", cr, c.crange)
			}
			if c.parts > 0 {
				mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
				if n := strings.Count(string(body), "--"+params["boundary"]+"\r\n"); mt != "multipart/byteranges" || n != c.parts {
					t.Errorf("%s with %d parts, want %d", mt, n, c.parts)
				}
			}
		})
	}
	// If-Range that does not match makes even an unsatisfiable range moot.
	if resp, body := e.get(t, "GET", "/linux-64/demo-1.0-0.conda", http.Header{"Range": {"bytes=-0"}, "If-Range": {`"other"`}}); resp.StatusCode != 200 || len(body) != size {
		t.Errorf("bytes=-0 with a stale If-Range: %d, %d bytes", resp.StatusCode, len(body))
	}
	if resp, _ := e.get(t, "GET", "/linux-64/demo-1.0-0.conda", http.Header{"Range": {"bytes=-0"}, "If-Range": {etag}}); resp.StatusCode != 416 {
		t.Errorf("bytes=-0 with a matching If-Range: %d", resp.StatusCode)
	}
}

// TestDownloadHSTS: every response over TLS carries Strict-Transport-
// Security, whoever writes it: files, listings, redirects, 304, 206,
// 412, 416 and the JSON errors alike.
func TestDownloadHSTS(t *testing.T) {
	e, _, etag, _ := servedPackage(t)
	noRedirect := *e.client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cases := []struct {
		method, path string
		header       http.Header
		status       int
	}{
		{"GET", "/linux-64/demo-1.0-0.conda", nil, 200},
		{"HEAD", "/linux-64/demo-1.0-0.conda", nil, 200},
		{"GET", "/linux-64/repodata.json", nil, 200},
		{"GET", "/", nil, 200},
		{"GET", "/linux-64/", nil, 200},
		{"GET", "/label/", nil, 404}, // no label yet
		{"GET", "/linux-64", nil, 301},
		{"GET", "/linux-64/demo-1.0-0.conda", http.Header{"If-None-Match": {etag}}, 304},
		{"GET", "/linux-64/demo-1.0-0.conda", http.Header{"Range": {"bytes=0-0"}}, 206},
		{"GET", "/linux-64/demo-1.0-0.conda", http.Header{"If-Match": {`"x"`}}, 412},
		{"GET", "/linux-64/demo-1.0-0.conda", http.Header{"Range": {"bytes=-0"}}, 416},
		{"GET", "/linux-64/nope-1.0-0.conda", nil, 404},
		{"DELETE", "/linux-64/demo-1.0-0.conda", nil, 405},
		{"GET", "/healthz", nil, 200},
		{"GET", "/t/x", nil, 400},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, strings.TrimSuffix(e.url, "/")+c.path, nil)
		for k, v := range c.header {
			req.Header[k] = v
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("Strict-Transport-Security") != "max-age=31536000" {
			t.Errorf("%s %s %v: %d with HSTS %q, want %d with max-age=31536000", c.method, c.path, c.header, resp.StatusCode,
				resp.Header.Get("Strict-Transport-Security"), c.status)
		}
	}
}

// TestDownloadSymlinkedLabels: a symlink at any level below label/ (a
// label that links into .trash/, or a label's subdir that does) serves
// nothing and is listed nowhere, so deleted packages stay deleted.
func TestDownloadSymlinkedLabels(t *testing.T) {
	e, data, _, _ := servedPackage(t)
	const secret = "deleted-1.0-0.conda"
	trash := filepath.Join(e.root, ".trash", "2026-01-01", "main")
	for _, sub := range []string{"linux-64", "noarch"} {
		os.MkdirAll(filepath.Join(trash, sub), 0o755)
		os.WriteFile(filepath.Join(trash, sub, secret), data, 0o644)
		os.WriteFile(filepath.Join(trash, sub, "repodata.json"), []byte(`{"packages.conda":{"`+secret+`":{}}}`), 0o644)
	}
	os.WriteFile(filepath.Join(trash, "channeldata.json"), []byte(`{"`+secret+`":1}`), 0o644)
	labels := filepath.Join(e.root, "label")
	os.MkdirAll(filepath.Join(labels, "dev", "noarch"), 0o755)
	must(t, os.Symlink("../.trash/2026-01-01/main", filepath.Join(labels, "evil")))
	must(t, os.Symlink("../../../.trash/2026-01-01/main/linux-64", filepath.Join(labels, "dev", "linux-64")))
	must(t, os.Symlink("../../../.trash/2026-01-01/main/noarch/"+secret, filepath.Join(labels, "dev", "noarch", secret)))

	for _, path := range []string{
		"/label/evil/linux-64/" + secret, "/label/evil/linux-64/repodata.json", "/label/evil/linux-64/",
		"/label/evil/channeldata.json", "/label/evil/", "/label/evil/noarch/" + secret,
		"/label/dev/linux-64/" + secret, "/label/dev/linux-64/repodata.json", "/label/dev/linux-64/",
		"/label/dev/noarch/" + secret,
	} {
		for _, method := range []string{"GET", "HEAD"} {
			resp, body := e.get(t, method, path, nil)
			if resp.StatusCode != 404 || (method == "GET" && !strings.HasPrefix(string(body), `{"error":"not found`)) {
				t.Errorf("%s %s: %d with %d bytes, want 404", method, path, resp.StatusCode, len(body))
			}
		}
	}
	for _, path := range []string{"/label/", "/label/dev/", "/label/dev/noarch/"} {
		resp, body := e.get(t, "GET", path, nil)
		if resp.StatusCode != 200 || strings.Contains(string(body), "evil") || strings.Contains(string(body), "linux-64") || strings.Contains(string(body), secret) {
			t.Errorf("listing %s: %d %.300s", path, resp.StatusCode, body)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDownloadSendTimeout: over HTTP/1.1, a client that asks for a large
// package and never reads holds the only download slot until the send
// timeout, not for good: meanwhile another download gets a JSON 503 with
// Retry-After (and HSTS), an upload still gets 201; then the server cuts
// the reader's connection short of the file's end and the slot is free.
func TestDownloadSendTimeout(t *testing.T) {
	e := startServing(t, false, func(o *server.Options) {
		o.Limits.Downloads = server.DownloadLimits{MaxConcurrent: 1, MaxPerConnection: 1, SendTimeout: time.Second}
	})
	var buf bytes.Buffer
	pkgtest.LargeConda(t, pkgtest.Simple("big", "1.0", "0", "linux-64"), 32<<20, &buf)
	if r := e.upload(t, "big-1.0-0.conda", buf.Bytes()); r.status != 201 {
		t.Fatalf("upload: %d %s", r.status, r.raw)
	}
	c := e.dialRaw(t)
	defer c.Close()
	fmt.Fprintf(c, "GET /linux-64/big-1.0-0.conda HTTP/1.1\r\nHost: x\r\n\r\n")
	// The hog's request is in flight once its response has started.
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "200") {
		t.Fatalf("hog: %q %v", line, err)
	}

	resp, body := e.get(t, "GET", "/noarch/repodata.json", nil)
	isJSONError(t, resp, body, 503)
	if resp.Header.Get("Retry-After") == "" || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Errorf("503 headers: %v", resp.Header)
	}
	if r := e.upload(t, "demo-1.0-0.conda", pkgtest.Conda(t, pkgtest.Simple("demo", "1.0", "0", "noarch"))); r.status != 201 {
		t.Errorf("upload while a download is stuck: %d %s", r.status, r.raw)
	}
	// The server gives up on the hog: its log line is written when the
	// handler returns.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(e.logs.String(), "path=/linux-64/big-1.0-0.conda remote"); {
		if time.Now().After(deadline) {
			t.Fatal("the server still sends to a client that has read nothing for 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, _ := io.Copy(io.Discard, br); n >= int64(buf.Len()) {
		t.Errorf("the hog got all %d bytes", n)
	}
	if resp, _ := e.get(t, "GET", "/noarch/repodata.json", nil); resp.StatusCode != 200 {
		t.Errorf("after the send timeout: %d", resp.StatusCode)
	}
}
