package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
)

// The requests below are built as conda/rattler builds them
// (crates/rattler_upload/src/upload/mod.rs and prefix.rs): reqwest with
// a streamed body, so the raw protocols send no Content-Length.

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// streamed hides a body's length, so that the client sends it chunked (or
// as HTTP/2 DATA frames without content-length), as reqwest's
// Body::wrap_stream does.
type streamed struct{ r io.Reader }

func (s streamed) Read(p []byte) (int, error) { return s.r.Read(p) }

type cred struct{ name, key, value string }

func bearer(tok string) cred { return cred{"Bearer", "Authorization", "Bearer " + tok} }
func basic(tok string) cred {
	return cred{"Basic", "Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("ci:"+tok))}
}
func apiKey(tok string) cred { return cred{"X-API-Key", "X-API-Key", tok} }

// quetzRequest is rattler's quetz upload.
func (e *env) quetzRequest(channel, filename string, data []byte, a cred, query string) *http.Request {
	u := fmt.Sprintf("%sapi/channels/%s/upload/%s?%s", e.url, channel, filename, query)
	req, _ := http.NewRequest(http.MethodPost, u, streamed{bytes.NewReader(data)})
	req.Header.Set(a.key, a.value)
	return req
}

// artifactoryRequest is rattler's Artifactory upload.
func (e *env) artifactoryRequest(channel, subdir, filename string, data []byte, a cred) *http.Request {
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s%s/%s/%s", e.url, channel, subdir, filename), streamed{bytes.NewReader(data)})
	req.Header.Set(a.key, a.value)
	return req
}

// prefixPart is one part of a prefix.dev upload form.
type prefixPart struct {
	name, filename string
	header         map[string]string
	data           []byte
}

// prefixRequest is rattler's prefix.dev upload: part "file" with
// Content-Type, Content-Length, X-File-Name and X-File-SHA256, and an
// optional text part "attestation".
func (e *env) prefixRequest(channel, query string, a cred, parts ...prefixPart) *http.Request {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		cd := fmt.Sprintf(`form-data; name=%q`, p.name)
		if p.filename != "" {
			cd += fmt.Sprintf(`; filename=%q`, p.filename)
		}
		h.Set("Content-Disposition", cd)
		for k, v := range p.header {
			h.Set(k, v)
		}
		w, _ := mw.CreatePart(h)
		w.Write(p.data)
	}
	mw.Close()
	u := fmt.Sprintf("%sapi/v1/upload/%s", e.url, channel)
	if query != "" {
		u += "?" + query
	}
	req, _ := http.NewRequest(http.MethodPost, u, &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set(a.key, a.value)
	return req
}

func filePart(filename string, data []byte, withSum bool) prefixPart {
	h := map[string]string{"Content-Type": "application/octet-stream", "Content-Length": fmt.Sprint(len(data)), "X-File-Name": filename}
	if withSum {
		h["X-File-SHA256"] = hexSHA(data)
	}
	return prefixPart{name: "file", filename: filename, header: h, data: data}
}

// TestUploadProtocols replays each protocol as rattler sends it, in each
// auth form it allows, with and without the client's checksum: every one
// stores the package and lists it, and answers as POST / does.
func TestUploadProtocols(t *testing.T) {
	s := pkgtest.Simple("proto", "1.0", "0", "linux-64")
	data := pkgtest.Conda(t, s)
	fn := "proto-1.0-0.conda"
	sum := hexSHA(data)
	type tc struct {
		name string
		req  func(e *env) *http.Request
	}
	var cases []tc
	for _, a := range []cred{apiKey(token), bearer(token), basic(token), {"bearer lower case", "Authorization", "bearer " + token}} {
		for _, withSum := range []bool{false, true} {
			q := "force=false"
			if withSum {
				q += "&sha256=" + sum
			}
			cases = append(cases, tc{fmt.Sprintf("quetz/%s/sha256=%v", a.name, withSum), func(e *env) *http.Request { return e.quetzRequest("main", fn, data, a, q) }})
		}
	}
	for _, a := range []cred{bearer(token), basic(token), {"BEARER", "Authorization", "BEARER " + token}} {
		for _, withSum := range []bool{false, true} {
			cases = append(cases, tc{fmt.Sprintf("prefix/%s/sha256=%v", a.name, withSum), func(e *env) *http.Request {
				return e.prefixRequest("main", "", a, filePart(fn, data, withSum))
			}})
		}
	}
	for _, a := range []cred{bearer(token), basic(token), apiKey(token)} {
		cases = append(cases, tc{"artifactory/" + a.name, func(e *env) *http.Request { return e.artifactoryRequest("main", "linux-64", fn, data, a) }})
		cases = append(cases, tc{"artifactory/" + a.name + "/Repr-Digest", func(e *env) *http.Request {
			r := e.artifactoryRequest("main", "linux-64", fn, data, a)
			b, _ := hex.DecodeString(sum)
			s512 := sha512.Sum512(data)
			r.Header.Set("Repr-Digest", "crc32c=:AAAAAA==:, sha-512=:"+base64.StdEncoding.EncodeToString(s512[:])+":, sha-256=:"+base64.StdEncoding.EncodeToString(b)+":")
			return r
		}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := start(t)
			r := e.do(t, c.req(e))
			if r.status != 201 || r.body["sha256"] != sum || r.body["indexed"] != true || r.body["subdir"] != "linux-64" {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if got := e.files(t); len(got) != 1 || got[0] != "linux-64/"+fn {
				t.Errorf("files %v", got)
			}
			if l := e.listed(t, "linux-64"); len(l) != 1 || l[0] != fn {
				t.Errorf("listed %v", l)
			}
			// The same upload again is 200, created false.
			if r := e.do(t, c.req(e)); r.status != 200 || r.body["created"] != false {
				t.Errorf("again: %d %s", r.status, r.raw)
			}
		})
	}
}

// TestProtocolRefusals: each protocol's ways to get it wrong, with the
// status rattler stops at (never a 5xx for a client mistake), and nothing
// stored.
func TestProtocolRefusals(t *testing.T) {
	data := pkgtest.Conda(t, pkgtest.Simple("proto", "1.0", "0", "linux-64"))
	other := pkgtest.Conda(t, pkgtest.Simple("proto", "1.0", "1", "linux-64"))
	fn := "proto-1.0-0.conda"
	wrong := strings.Repeat("ab", 32)
	cases := []struct {
		name   string
		req    func(e *env) *http.Request
		status int
		reason string
	}{
		{"quetz wrong sha256", func(e *env) *http.Request {
			return e.quetzRequest("main", fn, data, apiKey(token), "force=false&sha256="+wrong)
		}, 400, "sha256 mismatch"},
		{"quetz wrong channel", func(e *env) *http.Request { return e.quetzRequest("Conda_Forge", fn, data, apiKey(token), "") }, 404, `this server holds channel "main"`},
		{"quetz no token", func(e *env) *http.Request { return e.quetzRequest("main", fn, data, cred{"none", "X-Other", "x"}, "") }, 401, "missing or invalid token"},
		{"quetz wrong token", func(e *env) *http.Request { return e.quetzRequest("main", fn, data, apiKey("nope"), "") }, 401, "missing or invalid token"},
		{"quetz read-only token", func(e *env) *http.Request { return e.quetzRequest("main", fn, data, apiKey(readToken), "") }, 403, "upload scope"},
		{"quetz bad force", func(e *env) *http.Request { return e.quetzRequest("main", fn, data, apiKey(token), "force=maybe") }, 400, "force"},
		{"quetz filename not the package's", func(e *env) *http.Request {
			return e.quetzRequest("main", "proto-2.0-0.conda", data, apiKey(token), "")
		}, 400, ""},
		{"quetz empty body", func(e *env) *http.Request { return e.quetzRequest("main", fn, nil, apiKey(token), "") }, 400, "empty file"},
		{"prefix wrong X-File-SHA256", func(e *env) *http.Request {
			p := filePart(fn, data, false)
			p.header["X-File-SHA256"] = wrong
			return e.prefixRequest("main", "", bearer(token), p)
		}, 400, "X-File-SHA256"},
		{"prefix X-File-Name disagrees", func(e *env) *http.Request {
			p := filePart(fn, data, true)
			p.header["X-File-Name"] = "other-1.0-0.conda"
			return e.prefixRequest("main", "", bearer(token), p)
		}, 400, "X-File-Name"},
		{"prefix no file part", func(e *env) *http.Request {
			return e.prefixRequest("main", "", bearer(token), prefixPart{name: "attestation", data: []byte("{}")})
		}, 400, "no part named file"},
		{"prefix two file parts", func(e *env) *http.Request {
			return e.prefixRequest("main", "", bearer(token), filePart(fn, data, true), filePart(fn, data, true))
		}, 400, "one file part"},
		{"prefix attestation not JSON", func(e *env) *http.Request {
			return e.prefixRequest("main", "", bearer(token), prefixPart{name: "attestation", data: []byte("not json")}, filePart(fn, data, true))
		}, 400, "not JSON"},
		{"prefix wrong channel", func(e *env) *http.Request {
			return e.prefixRequest("No.Pe", "", bearer(token), filePart(fn, data, true))
		}, 404, "channel"},
		{"prefix no token", func(e *env) *http.Request {
			return e.prefixRequest("main", "", cred{"none", "X-Other", "x"}, filePart(fn, data, true))
		}, 401, ""},
		{"artifactory subdir not the package's", func(e *env) *http.Request { return e.artifactoryRequest("main", "osx-64", fn, data, bearer(token)) }, 400, "names subdir osx-64, but the package's info/index.json says linux-64"},
		{"artifactory unknown subdir", func(e *env) *http.Request { return e.artifactoryRequest("main", "linux-65", fn, data, bearer(token)) }, 400, "linux-65"},
		{"artifactory wrong channel", func(e *env) *http.Request { return e.artifactoryRequest("dev", "linux-64", fn, data, bearer(token)) }, 404, "channel"},
		{"artifactory wrong Content-Digest", func(e *env) *http.Request {
			r := e.artifactoryRequest("main", "linux-64", fn, data, bearer(token))
			r.Header.Set("Content-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(make([]byte, 32))+":")
			return r
		}, 400, "Content-Digest"},
		{"artifactory malformed Repr-Digest", func(e *env) *http.Request {
			r := e.artifactoryRequest("main", "linux-64", fn, data, bearer(token))
			r.Header.Set("Repr-Digest", "sha-256=abc")
			return r
		}, 400, "base64"},
		{"artifactory conflict", func(e *env) *http.Request {
			return e.artifactoryRequest("main", "linux-64", "proto-1.0-0.conda", other, bearer(token))
		}, 400, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := start(t)
			r := e.do(t, c.req(e))
			if r.status != c.status {
				t.Errorf("status %d %s, want %d", r.status, r.raw, c.status)
			}
			if msg, _ := r.body["error"].(string); !strings.Contains(msg, c.reason) {
				t.Errorf("error %q does not say %q", msg, c.reason)
			}
			if files := e.files(t); len(files) != 0 {
				t.Errorf("stored %v", files)
			}
		})
	}
	// A checksum mismatch is a reason of its own in the log.
	e := start(t)
	e.do(t, e.quetzRequest("main", fn, data, apiKey(token), "sha256="+wrong))
	if !strings.Contains(e.logs.String(), "reason=checksum_mismatch") {
		t.Errorf("no checksum_mismatch in the log:\n%s", e.logs.String())
	}
}

// TestForce: force=true never overwrites without the overwrite scope;
// with it, the package is replaced atomically, the old bytes kept in
// .trash/, and the index lists the new ones.
func TestForce(t *testing.T) {
	e := start(t)
	fn := "proto-1.0-0.conda"
	first := pkgtest.Conda(t, pkgtest.Simple("proto", "1.0", "0", "linux-64"))
	s := pkgtest.Simple("proto", "1.0", "0", "linux-64")
	s.Index = map[string]any{"depends": []string{"python"}}
	second := pkgtest.Conda(t, s)
	if r := e.do(t, e.quetzRequest("main", fn, first, apiKey(token), "")); r.status != 201 {
		t.Fatal(r.raw)
	}
	for _, q := range []string{"force=false", ""} {
		if r := e.do(t, e.quetzRequest("main", fn, second, apiKey(token), q)); r.status != 409 {
			t.Errorf("%q: %d %s", q, r.status, r.raw)
		}
	}
	r := e.do(t, e.prefixRequest("main", "force=true", bearer(token), filePart(fn, second, true)))
	if msg, _ := r.body["error"].(string); r.status != 409 || !strings.Contains(msg, "overwrite scope") {
		t.Errorf("force without the scope: %d %s", r.status, r.raw)
	}
	stored := filepath.Join(e.root, "linux-64", fn)
	if b, _ := os.ReadFile(stored); !bytes.Equal(b, first) {
		t.Fatal("the stored package changed without the overwrite scope")
	}
	r = e.do(t, e.quetzRequest("main", fn, second, apiKey(overwriteToken), "force=true&sha256="+hexSHA(second)))
	if r.status != 201 || r.body["replaced"] != true || r.body["indexed"] != true {
		t.Fatalf("force with the scope: %d %s", r.status, r.raw)
	}
	if b, _ := os.ReadFile(stored); !bytes.Equal(b, second) {
		t.Error("the package was not replaced")
	}
	trash, _ := filepath.Glob(filepath.Join(e.root, ".trash", "*", "main", "linux-64", fn))
	if len(trash) != 1 {
		t.Fatalf("old bytes in trash: %v", trash)
	}
	if b, _ := os.ReadFile(trash[0]); !bytes.Equal(b, first) {
		t.Error("the trash does not hold the old bytes")
	}
	var doc struct {
		Packages map[string]struct {
			SHA256  string   `json:"sha256"`
			Depends []string `json:"depends"`
		} `json:"packages.conda"`
	}
	b, _ := os.ReadFile(filepath.Join(e.root, "linux-64", "repodata.json"))
	json.Unmarshal(b, &doc)
	if got := doc.Packages[fn]; got.SHA256 != hexSHA(second) || len(got.Depends) != 1 {
		t.Errorf("index after replace: %+v", got)
	}
	if !strings.Contains(e.logs.String(), "package replaced by a forced upload") {
		t.Error("the replacement is not logged")
	}
	// The same bytes forced again change nothing.
	if r := e.do(t, e.quetzRequest("main", fn, second, apiKey(overwriteToken), "force=true")); r.status != 200 {
		t.Errorf("identical forced upload: %d %s", r.status, r.raw)
	}
}

// TestAttestationAndSameIndex: a prefix.dev attestation is kept beside
// the package as <filename>.sigs (a JSON array, CEP 50), and served; and a
// quetz upload and a POST / of the same package store the same bytes and
// the same index.
func TestAttestationAndSameIndex(t *testing.T) {
	data := pkgtest.Conda(t, pkgtest.Simple("proto", "1.0", "0", "noarch"))
	fn := "proto-1.0-0.conda"
	e := startServing(t, false)
	att := `{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": {}}`
	r := e.do(t, e.prefixRequest("main", "", bearer(token), prefixPart{name: "attestation", data: []byte(att)}, filePart(fn, data, true)))
	if r.status != 201 {
		t.Fatal(r.raw)
	}
	resp, body := e.get(t, "GET", "/noarch/"+fn+".sigs", nil)
	var sigs []map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(body, &sigs) != nil || len(sigs) != 1 || sigs[0]["mediaType"] == nil {
		t.Errorf(".sigs: %d %s", resp.StatusCode, body)
	}
	// CEP 50: .sigs is revalidated, its revision immutable, and the
	// index names the revision.
	if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "application/json" || cc != "public, no-cache" {
		t.Errorf(".sigs served as %s, %s", ct, cc)
	}
	rev := "/noarch/" + fn + ".sigs." + sidecar.Digest(body)
	resp, again := e.get(t, "GET", rev, nil)
	if resp.StatusCode != 200 || !bytes.Equal(again, body) || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s: %d %s %s", rev, resp.StatusCode, resp.Header, again)
	}
	_, rd := e.get(t, "GET", "/noarch/repodata.json", nil)
	var idx struct {
		Conda map[string]map[string]any `json:"packages.conda"`
	}
	if err := json.Unmarshal(rd, &idx); err != nil || idx.Conda[fn]["attestations_sha256"] != sidecar.Digest(body) {
		t.Errorf("repodata.json: %v %s", err, rd)
	}

	viaQuetz := start(t)
	viaForm := start(t)
	if r := viaQuetz.do(t, viaQuetz.quetzRequest("main", fn, data, apiKey(token), "sha256="+hexSHA(data))); r.status != 201 {
		t.Fatal(r.raw)
	}
	if r := viaForm.upload(t, fn, data); r.status != 201 {
		t.Fatal(r.raw)
	}
	for _, f := range []string{fn, "repodata.json", "run_exports.json"} {
		a, _ := os.ReadFile(filepath.Join(viaQuetz.root, "noarch", f))
		b, _ := os.ReadFile(filepath.Join(viaForm.root, "noarch", f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s differs between quetz and POST /", f)
		}
	}
}

// TestChunkedRawUpload: over HTTP/1.1, a streamed body arrives chunked,
// with no Content-Length; it is stored, and one cut short is refused.
func TestChunkedRawUpload(t *testing.T) {
	data := pkgtest.Conda(t, pkgtest.Simple("chunky", "1.0", "0", "noarch"))
	head := "POST /api/channels/main/upload/chunky-1.0-0.conda?force=false HTTP/1.1\r\nHost: x\r\nX-API-Key: " + token + "\r\nTransfer-Encoding: chunked\r\n\r\n"
	var body bytes.Buffer
	for i := 0; i < len(data); i += 1000 {
		chunk := data[i:min(i+1000, len(data))]
		fmt.Fprintf(&body, "%x\r\n%s\r\n", len(chunk), chunk)
	}
	e := start(t)
	if st := e.rawPost(t, head, append(body.Bytes(), "0\r\n\r\n"...)); st != 201 {
		t.Fatalf("chunked upload: %d", st)
	}
	// The client half-closed its side, so the answer did not wait for
	// the index run: wait for it here.
	if err := e.ix.Index(context.Background(), "noarch"); err != nil {
		t.Fatal(err)
	}
	if got := e.files(t); len(got) != 1 {
		t.Errorf("files %v", got)
	}
	e2 := start(t)
	if st := e2.rawPost(t, head, body.Bytes()[:body.Len()/2]); st != 400 && st != 0 {
		t.Errorf("chunked upload cut short: %d", st)
	}
	if got := e2.files(t); len(got) != 0 {
		t.Errorf("stored after a cut: %v", got)
	}
}
