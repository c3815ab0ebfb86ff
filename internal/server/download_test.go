package server_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
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

// startServing runs a server that also serves its channel, with access
// "token" if tokenAccess.
func startServing(t *testing.T, tokenAccess bool, opts ...option) *env {
	t.Helper()
	root := t.TempDir()
	ch, err := channel.Open(root, tokenAccess)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	opts = append(opts, func(o *server.Options) { o.Channel.Files, o.Channel.TokenDownloads = ch, tokenAccess })
	return startAt(t, root, 0, opts...)
}

// get fetches path (below the server's root) with extra request headers.
func (e *env) get(t *testing.T, method, path string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, strings.TrimSuffix(e.url, "/")+path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// isJSONError checks a one-line JSON error body with its status.
func isJSONError(t *testing.T, resp *http.Response, body []byte, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d %q, want %d", resp.StatusCode, body, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q for an error", ct)
	}
	var v struct {
		Error  string `json:"error"`
		Status int    `json:"status"`
	}
	if strings.Count(strings.TrimSuffix(string(body), "\n"), "\n") != 0 || json.Unmarshal(body, &v) != nil || v.Status != status || v.Error == "" {
		t.Errorf("not a one-line JSON error: %q", body)
	}
}

// TestServeChannel uploads a package and fetches it and the index back:
// validators and conditional requests, ranges, types, cache lifetimes,
// listings, redirects and clean 404s.
func TestServeChannel(t *testing.T) {
	e := startServing(t, false)
	data := pkgtest.Conda(t, pkgtest.Simple("demo", "1.0", "0", "linux-64"))
	if r := e.upload(t, "demo-1.0-0.conda", data); r.status != 201 {
		t.Fatalf("upload: %d %s", r.status, r.raw)
	}

	resp, body := e.get(t, "GET", "/linux-64/repodata.json", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"demo-1.0-0.conda"`) {
		t.Fatalf("repodata.json: %d %s", resp.StatusCode, body)
	}
	h := resp.Header
	if h.Get("Content-Type") != "application/json" || h.Get("ETag") == "" || h.Get("Last-Modified") == "" ||
		h.Get("Cache-Control") != "public, max-age=30, must-revalidate" {
		t.Errorf("repodata.json headers: %v", h)
	}
	for _, cond := range []http.Header{
		{"If-None-Match": {h.Get("ETag")}},
		{"If-Modified-Since": {h.Get("Last-Modified")}},
	} {
		if r, b := e.get(t, "GET", "/linux-64/repodata.json", cond); r.StatusCode != 304 || len(b) != 0 {
			t.Errorf("%v: %d %q, want 304", cond, r.StatusCode, b)
		}
	}
	if r, _ := e.get(t, "GET", "/linux-64/repodata.json", http.Header{"If-None-Match": {`"stale"`}}); r.StatusCode != 200 {
		t.Errorf("stale ETag: %d", r.StatusCode)
	}

	resp, body = e.get(t, "GET", "/linux-64/demo-1.0-0.conda", nil)
	if sum := sha256.Sum256(body); resp.StatusCode != 200 || sum != sha256.Sum256(data) {
		t.Fatalf("package: %d, %d bytes", resp.StatusCode, len(body))
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
		t.Errorf("package Cache-Control %q", cc)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("package Content-Type %q", ct)
	}
	if r, b := e.get(t, "HEAD", "/linux-64/demo-1.0-0.conda", nil); r.StatusCode != 200 || len(b) != 0 || r.ContentLength != int64(len(data)) {
		t.Errorf("HEAD: %d, %d body bytes, length %d", r.StatusCode, len(b), r.ContentLength)
	}

	// Ranges: one, several, and one past the end.
	r, b := e.get(t, "GET", "/linux-64/demo-1.0-0.conda", http.Header{"Range": {"bytes=10-19"}})
	if r.StatusCode != 206 || string(b) != string(data[10:20]) || r.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(data)) {
		t.Errorf("range: %d %q %q", r.StatusCode, b, r.Header.Get("Content-Range"))
	}
	r, b = e.get(t, "GET", "/linux-64/demo-1.0-0.conda", http.Header{"Range": {"bytes=0-3,100-103"}})
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if r.StatusCode != 206 || mt != "multipart/byteranges" {
		t.Fatalf("multiple ranges: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(strings.NewReader(string(b)), params["boundary"])
	var parts []string
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		pb, _ := io.ReadAll(p)
		parts = append(parts, string(pb))
	}
	if len(parts) != 2 || parts[0] != string(data[0:4]) || parts[1] != string(data[100:104]) {
		t.Errorf("multiple ranges: %q", parts)
	}
	r, b = e.get(t, "GET", "/linux-64/demo-1.0-0.conda", http.Header{"Range": {fmt.Sprintf("bytes=%d-", len(data)+10)}})
	isJSONError(t, r, b, 416)
	if r.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(data)) {
		t.Errorf("416 Content-Range %q", r.Header.Get("Content-Range"))
	}

	// The other index files, with their types.
	for path, ct := range map[string]string{
		"/linux-64/repodata.json.zst":           "application/zstd",
		"/linux-64/repodata_shards.msgpack.zst": "application/zstd",
		"/linux-64/run_exports.json":            "application/json",
		"/noarch/repodata.json":                 "application/json",
	} {
		if r, _ := e.get(t, "GET", path, nil); r.StatusCode != 200 || r.Header.Get("Content-Type") != ct {
			t.Errorf("%s: %d %s", path, r.StatusCode, r.Header.Get("Content-Type"))
		}
	}
	// A shard: immutable.
	shards, _ := filepath.Glob(filepath.Join(e.root, "linux-64", "*.msgpack.zst"))
	for _, s := range shards {
		if name := filepath.Base(s); name != "repodata_shards.msgpack.zst" {
			if r, _ := e.get(t, "GET", "/linux-64/"+name, nil); r.StatusCode != 200 || !strings.Contains(r.Header.Get("Cache-Control"), "immutable") {
				t.Errorf("shard %s: %d %s", name, r.StatusCode, r.Header.Get("Cache-Control"))
			}
		}
	}

	// Listings for people.
	r, b = e.get(t, "GET", "/", nil)
	if r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(b), `href="linux-64/"`) || strings.Contains(string(b), ".incoming") {
		t.Errorf("root listing: %d %s", r.StatusCode, b)
	}
	r, b = e.get(t, "GET", "/linux-64/", nil)
	if r.StatusCode != 200 || !strings.Contains(string(b), `href="demo-1.0-0.conda"`) || strings.Contains(string(b), ".index-cache") {
		t.Errorf("subdir listing: %d %s", r.StatusCode, b)
	}
	noRedirect := *e.client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if resp, err := noRedirect.Get(strings.TrimSuffix(e.url, "/") + "/linux-64"); err != nil || resp.StatusCode != 301 || resp.Header.Get("Location") != "linux-64/" {
		t.Errorf("subdir without slash: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Absent files are a plain JSON 404, which rattler reads as absent.
	for _, path := range []string{"/osx-64/repodata_shards.msgpack.zst", "/linux-64/repodata.json.bz2", "/linux-64/nope-1.0-0.conda", "/label/dev/linux-64/repodata.json", "/favicon.ico"} {
		r, b := e.get(t, "GET", path, nil)
		isJSONError(t, r, b, 404)
	}
	// Other methods on channel paths.
	r, b = e.get(t, "DELETE", "/linux-64/demo-1.0-0.conda", nil)
	isJSONError(t, r, b, 405)
}

// rawGet sends a request line as it is, for paths that no client library
// would send unaltered, and returns the status and body.
func (e *env) rawGet(t *testing.T, target string, header string) (int, string) {
	t.Helper()
	c := e.dialRaw(t)
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n", target, header)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHostilePaths is the hostile catalogue of the channel's GET side:
// every way to name something outside the channel's public files, each
// sent as a raw request line, must be refused with a JSON 400 or 404 and
// never return a secret's bytes.
func TestHostilePaths(t *testing.T) {
	e := startServing(t, false)
	data := pkgtest.Conda(t, pkgtest.Simple("demo", "1.0", "0", "linux-64"))
	if r := e.upload(t, "demo-1.0-0.conda", data); r.status != 201 {
		t.Fatal(r.raw)
	}
	const secret = "TOP-SECRET-CONTENT"
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret.conda"), []byte(secret), 0o644)
	os.WriteFile(filepath.Join(e.root, ".incoming", "upload-1.part"), []byte(secret), 0o644)
	os.WriteFile(filepath.Join(e.root, "linux-64", ".hidden-1.0-0.conda"), []byte(secret), 0o644)
	// Symlinks the allow-list would accept by name.
	os.Symlink(filepath.Join(outside, "secret.conda"), filepath.Join(e.root, "linux-64", "evil-1.0-0.conda"))
	os.Symlink("../.incoming/upload-1.part", filepath.Join(e.root, "linux-64", "inner-1.0-0.conda"))
	os.Symlink(outside, filepath.Join(e.root, "osx-64"))
	os.Mkdir(filepath.Join(e.root, "win-64"), 0o755)
	os.Symlink(filepath.Join(outside, "secret.conda"), filepath.Join(e.root, "win-64", "repodata.json"))

	cases := []struct {
		target string
		status int
	}{
		{"/../../../../etc/passwd", 400},
		{"/linux-64/../../etc/passwd", 400},
		{"/linux-64/../.incoming/upload-1.part", 400},
		{"/%2e%2e/%2e%2e/etc/passwd", 400},
		{"/linux-64/%2e%2e/.incoming/upload-1.part", 400},
		{"/linux-64%2f..%2f.incoming%2fupload-1.part", 400},
		{"/linux-64%2Frepodata.json", 400},
		{"/linux-64/..;/.incoming/upload-1.part", 400},
		{"/linux-64/repodata.json;.conda", 400},
		{"/linux-64\\..\\.incoming\\upload-1.part", 400},
		{"/linux-64%5c..%5c.incoming%5cupload-1.part", 400},
		{"//linux-64/repodata.json", 400},
		{"/linux-64//repodata.json", 400},
		{"/./linux-64/repodata.json", 400},
		{"/linux-64/./repodata.json", 400},
		{"/linux-64/repodata.json%00", 400},
		{"/linux-64/repodata.json%00.conda", 400},
		{"/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", 400},
		{"/linux-64/%c0%afrepodata.json", 400},
		{"/%e0%80%ae%e0%80%ae/etc/passwd", 400},
		{"/t/tok/../../etc/passwd", 400},
		{"/.incoming/upload-1.part", 404},
		{"/.incoming/", 404},
		{"/linux-64/.index-cache/records.jsonl", 404},
		{"/linux-64/.hidden-1.0-0.conda", 404},
		{"/.indexer-tmp/", 404},
		{"/linux-64/evil-1.0-0.conda", 404},
		{"/linux-64/inner-1.0-0.conda", 404},
		{"/osx-64/secret.conda", 404},
		{"/osx-64/", 404},
		{"/win-64/repodata.json", 404},
		{"/etc/passwd", 404},
		{"/proc/self/environ", 404},
		{"/linux-64/demo-1.0-0.conda/", 404},
		{"/linux-64/demo-1.0-0.conda/x", 404},
		{"http://example.org/linux-64/repodata.json", 200},
	}
	for _, c := range cases {
		t.Run(c.target, func(t *testing.T) {
			status, body := e.rawGet(t, c.target, "")
			if status != c.status {
				t.Errorf("status %d %q, want %d", status, body, c.status)
			}
			if strings.Contains(body, secret) || strings.Contains(body, "root:") {
				t.Errorf("served a secret: %q", body)
			}
			if c.status >= 400 && !strings.HasPrefix(body, `{"error":`) {
				t.Errorf("not a JSON error: %q", body)
			}
		})
	}
}

// TestTokenDownloads: with access "token", the three forms clients send
// a token in all work for a token with the read scope; no token is 401
// with a challenge, a token without read is 403, a wrong one counts
// toward the address's limit, and no token ever reaches the log.
func TestTokenDownloads(t *testing.T) {
	e := startServing(t, true, func(o *server.Options) { o.Limits.AuthLimiter = &server.AuthLimiter{Limit: 3, Window: time.Minute} })
	data := pkgtest.Conda(t, pkgtest.Simple("demo", "1.0", "0", "noarch"))
	if r := e.upload(t, "demo-1.0-0.conda", data); r.status != 201 {
		t.Fatal(r.raw)
	}
	basic := func(user, pass string) http.Header {
		return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}}
	}
	ok := []struct {
		name   string
		path   string
		header http.Header
	}{
		{"bearer", "/noarch/repodata.json", http.Header{"Authorization": {"Bearer " + readToken}}},
		{"bearer lower case", "/noarch/repodata.json", http.Header{"Authorization": {"bearer " + readToken}}},
		{"basic password", "/noarch/repodata.json", basic("anyone", readToken)},
		{"basic user only", "/noarch/repodata.json", basic(readToken, "")},
		{"token in path", "/t/" + readToken + "/noarch/repodata.json", nil},
		{"token in path, package", "/t/" + readToken + "/noarch/demo-1.0-0.conda", nil},
		{"token in path, listing", "/t/" + readToken + "/noarch/", nil},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			r, b := e.get(t, "GET", c.path, c.header)
			if r.StatusCode != 200 {
				t.Errorf("%d %s", r.StatusCode, b)
			}
			if cc := r.Header.Get("Cache-Control"); !strings.HasPrefix(cc, "private") {
				t.Errorf("Cache-Control %q for a private channel", cc)
			}
		})
	}
	r, b := e.get(t, "GET", "/noarch/repodata.json", nil)
	isJSONError(t, r, b, 401)
	if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("401 without a challenge: %v", r.Header)
	}
	r, b = e.get(t, "GET", "/noarch/repodata.json", http.Header{"Authorization": {"Bearer " + token}})
	isJSONError(t, r, b, 403) // an upload token does not read
	// A read token does not upload.
	ct, body := form(part{name: "token", data: []byte(readToken)}, part{name: "artifact", filename: "demo-2.0-0.conda", data: data})
	if r := e.post(t, nil, ct, body); r.status != 403 {
		t.Errorf("upload with a read token: %d %s", r.status, r.raw)
	}
	// Wrong tokens count toward the limit, in any form.
	for _, path := range []string{"/t/wrong1/noarch/repodata.json", "/t/wrong2/noarch/repodata.json", "/t/wrong3/noarch/repodata.json"} {
		r, b := e.get(t, "GET", path, nil)
		isJSONError(t, r, b, 401)
	}
	r, b = e.get(t, "GET", "/t/"+readToken+"/noarch/repodata.json", nil)
	isJSONError(t, r, b, 429)
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	logs := e.logs.String()
	for _, secret := range []string{readToken, token, "wrong1", "wrong3"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds the token %q", secret)
		}
	}
	if !strings.Contains(logs, "/t/REDACTED/noarch/repodata.json") {
		t.Errorf("token paths are not logged redacted:\n%s", logs)
	}
}
