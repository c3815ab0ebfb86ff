package server_test

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
)

// sfv is an RFC 9530 member algo=:base64 of the digest of b:.
func sfv(algo string, b []byte) string {
	var sum []byte
	switch algo {
	case "sha-256":
		s := sha256.Sum256(b)
		sum = s[:]
	case "sha-512":
		s := sha512.Sum512(b)
		sum = s[:]
	case "md5":
		s := md5.Sum(b)
		sum = s[:]
	case "sha":
		s := sha1.Sum(b)
		sum = s[:]
	}
	return algo + "=:" + base64.StdEncoding.EncodeToString(sum) + ":"
}

// multipartBody builds a form whose parts have the headers given, each
// header possibly repeated.
func multipartBody(parts ...struct {
	h    textproto.MIMEHeader
	data []byte
}) (string, []byte) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, p := range parts {
		w, _ := mw.CreatePart(p.h)
		w.Write(p.data)
	}
	mw.Close()
	return mw.FormDataContentType(), body.Bytes()
}

type mpart = struct {
	h    textproto.MIMEHeader
	data []byte
}

// TestEveryDigestChecked: whatever digest a client sends of its upload,
// on any protocol, in any field, line or algorithm the server computes,
// a wrong one is 400 naming the field, and nothing is stored; one that
// names only algorithms the server cannot compute is 400 too.
func TestEveryDigestChecked(t *testing.T) {
	fn := "dig-1.0-0.conda"
	data := pkgtest.Conda(t, pkgtest.Simple("dig", "1.0", "0", "linux-64"))
	other := []byte("not the package")
	wrong := sfv("sha-256", other)
	good := sfv("sha-256", data)
	hexOf := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	header := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	raw := func(e *env, proto, query string, h http.Header) *http.Request {
		var r *http.Request
		if proto == "quetz" {
			r = e.quetzRequest("main", fn, data, apiKey(token), query)
		} else {
			r = e.artifactoryRequest("main", "linux-64", fn, data, bearer(token))
			r.URL.RawQuery = query
		}
		for k, v := range h {
			r.Header[k] = v
		}
		return r
	}
	type tc struct {
		name   string
		req    func(e *env) *http.Request
		status int
		says   string
	}
	var cases []tc
	for _, proto := range []string{"quetz", "artifactory"} {
		for _, c := range []struct {
			name, query string
			h           http.Header
			status      int
			says        string
		}{
			{"right Repr-Digest, wrong Content-Digest", "", header("Repr-Digest", good, "Content-Digest", wrong), 400, "Content-Digest"},
			{"a second Content-Digest line", "", header("Content-Digest", good, "Content-Digest", wrong), 400, "Content-Digest"},
			{"right ?sha256=, wrong Repr-Digest", "sha256=" + hexOf(data), header("Repr-Digest", wrong), 400, "Repr-Digest"},
			{"right sha-256, wrong sha-512", "", header("Repr-Digest", good+", "+sfv("sha-512", other)), 400, "sha-512 mismatch"},
			{"sha-256 twice, the second wrong", "", header("Content-Digest", good+", "+wrong), 400, "Content-Digest"},
			{"wrong md5 member", "", header("Content-Digest", good+", "+sfv("md5", other)), 400, "md5 mismatch"},
			{"wrong Content-MD5", "", header("Content-MD5", strings.Trim(strings.TrimPrefix(sfv("md5", other), "md5="), ":")), 400, "Content-MD5"},
			{"wrong legacy Digest", "", header("Digest", "SHA-256="+strings.Trim(strings.TrimPrefix(wrong, "sha-256="), ":")), 400, "Digest"},
			{"wrong X-Checksum-Sha256", "", header("X-Checksum-Sha256", hexOf(other)), 400, "X-Checksum-Sha256"},
			{"wrong X-Checksum-Sha1", "", header("X-Checksum-Sha1", strings.Repeat("ab", 20)), 400, "X-Checksum-Sha1"},
			{"only an algorithm not computed", "", header("Repr-Digest", "crc32c=:AAAAAA==:"), 400, "names no digest algorithm"},
			{"?sha256= twice, the second wrong", "sha256=" + hexOf(data) + "&sha256=" + hexOf(other), nil, 400, "given twice"},
			{"every digest right", "sha256=" + hexOf(data) + "&sha256=" + strings.ToUpper(hexOf(data)),
				header("Repr-Digest", good+", "+sfv("sha-512", data), "Repr-Digest", sfv("md5", data)+", unixsum=12",
					"Content-Digest", sfv("sha", data), "Digest", "SHA-512="+strings.Trim(strings.TrimPrefix(sfv("sha-512", data), "sha-512="), ":"),
					"X-Checksum-Sha256", hexOf(data)), 201, ""},
		} {
			cases = append(cases, tc{proto + "/" + c.name, func(e *env) *http.Request { return raw(e, proto, c.query, c.h) }, c.status, c.says})
		}
	}
	// POST /: the request's fields describe the whole form; the
	// artifact part's, the package.
	tokenPart := mpart{textproto.MIMEHeader{"Content-Disposition": {`form-data; name="token"`}}, []byte(token)}
	sumPart := func(sum string) mpart {
		return mpart{textproto.MIMEHeader{"Content-Disposition": {`form-data; name="sha256"`}}, []byte(sum)}
	}
	artifact := func(kv ...string) mpart {
		h := textproto.MIMEHeader{"Content-Disposition": {`form-data; name="artifact"; filename="` + fn + `"`}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return mpart{h, data}
	}
	formReq := func(e *env, bodyDigest func(body []byte) string, parts ...mpart) *http.Request {
		ct, body := multipartBody(parts...)
		req, _ := http.NewRequest(http.MethodPost, e.url, bytes.NewReader(body))
		req.Header.Set("Content-Type", ct)
		if bodyDigest != nil {
			req.Header.Set("Content-Digest", bodyDigest(body))
		}
		return req
	}
	ofBody := func(b []byte) string { return sfv("sha-256", b) }
	cases = append(cases,
		tc{"form/wrong Content-Digest of the form", func(e *env) *http.Request {
			return formReq(e, func([]byte) string { return wrong }, tokenPart, artifact())
		}, 400, "Content-Digest"},
		tc{"form/two sha256 fields, the second wrong", func(e *env) *http.Request {
			return formReq(e, nil, tokenPart, sumPart(hexOf(data)), sumPart(hexOf(other)), artifact())
		}, 400, "given twice"},
		tc{"form/wrong Content-Digest of the artifact part", func(e *env) *http.Request {
			return formReq(e, nil, tokenPart, artifact("Content-Digest", good, "Content-Digest", wrong))
		}, 400, "Content-Digest"},
		tc{"form/every digest right", func(e *env) *http.Request {
			return formReq(e, ofBody, tokenPart, sumPart(hexOf(data)), sumPart(hexOf(data)), artifact("Content-Digest", good, "Content-MD5", strings.Trim(strings.TrimPrefix(sfv("md5", data), "md5="), ":")))
		}, 201, ""},
	)
	// prefix.dev: X-File-SHA256 and the part's fields describe the
	// package, the request's the form.
	prefix := func(e *env, bodyDigest func([]byte) string, kv ...string) *http.Request {
		h := textproto.MIMEHeader{"Content-Disposition": {`form-data; name="file"; filename="` + fn + `"`}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		ct, body := multipartBody(mpart{h, data})
		req, _ := http.NewRequest(http.MethodPost, e.url+"api/v1/upload/main", bytes.NewReader(body))
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+token)
		if bodyDigest != nil {
			req.Header.Set("Repr-Digest", bodyDigest(body))
		}
		return req
	}
	cases = append(cases,
		tc{"prefix/a second X-File-SHA256, wrong", func(e *env) *http.Request {
			return prefix(e, nil, "X-File-SHA256", hexOf(data), "X-File-SHA256", hexOf(other))
		}, 400, "X-File-SHA256"},
		tc{"prefix/wrong Repr-Digest of the form", func(e *env) *http.Request {
			return prefix(e, func([]byte) string { return wrong }, "X-File-SHA256", hexOf(data))
		}, 400, "Repr-Digest"},
		tc{"prefix/wrong Content-MD5 of the file part", func(e *env) *http.Request {
			return prefix(e, nil, "X-File-SHA256", hexOf(data), "Content-MD5", strings.Trim(strings.TrimPrefix(sfv("md5", other), "md5="), ":"))
		}, 400, "Content-MD5"},
		tc{"prefix/every digest right", func(e *env) *http.Request {
			return prefix(e, ofBody, "X-File-SHA256", hexOf(data), "Content-Digest", sfv("sha-512", data))
		}, 201, ""},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := start(t)
			r := e.do(t, c.req(e))
			if r.status != c.status {
				t.Fatalf("status %d %s, want %d", r.status, r.raw, c.status)
			}
			if msg, _ := r.body["error"].(string); !strings.Contains(msg, c.says) {
				t.Errorf("error %q does not say %q", msg, c.says)
			}
			if files := e.files(t); c.status != 201 && len(files) != 0 {
				t.Errorf("stored %v", files)
			}
			if c.status == 400 && !strings.Contains(c.says, "names no") && !strings.Contains(e.logs.String(), "reason=checksum_mismatch") {
				t.Error("not logged as checksum_mismatch")
			}
		})
	}
}
