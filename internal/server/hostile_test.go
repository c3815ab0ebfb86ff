package server_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/corpus"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// rawPost sends bytes as they are over a fresh HTTP/1.1 TLS connection,
// for requests that no well-behaved client would build, and returns the
// status (0 if the server closed the connection without one).
func (e *env) rawPost(t *testing.T, head string, body []byte) int {
	t.Helper()
	c := e.dialRaw(t)
	defer c.Close()
	c.Write([]byte(head))
	c.Write(body)
	if cw, ok := interface{}(c).(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// dialRaw opens a fresh HTTP/1.1 TLS connection to the server.
func (e *env) dialRaw(t *testing.T) *tls.Conn {
	t.Helper()
	addr := strings.TrimSuffix(strings.TrimPrefix(e.url, "https://"), "/")
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestHostileCatalogue sends malformed requests and packages, each to a
// fresh server, and checks the status and that nothing was stored: no
// package, no temp file, no repodata.json change. The README's security
// section lists the same catalogue.
func TestHostileCatalogue(t *testing.T) {
	testneed.Tool(t, "bzip2", "bzip2")
	good := pkgtest.Simple("demo", "1.0", "0", "linux-64")
	conda := pkgtest.Conda(t, good)
	tarbz2 := pkgtest.TarBz2(t, good)
	withSubdir := func(sd string) []byte {
		s := good
		s.Subdir = sd
		return pkgtest.Conda(t, s)
	}
	withInfo := func(ms ...pkgtest.Member) []byte {
		s := good
		s.OmitIndex = true
		s.Info = ms
		return pkgtest.Conda(t, s)
	}
	entries := func() []pkgtest.ZipEntry { return pkgtest.CondaEntries(t, good) }
	readCorpus := func(rel string) []byte {
		b, err := os.ReadFile(corpus.Dir() + "/" + rel)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tok := part{name: "token", data: []byte(token)}
	upload := func(name string, data []byte) []part {
		return []part{tok, {name: "artifact", filename: name, data: data}}
	}
	ct, validBody := form(upload("demo-1.0-0.conda", conda)...)
	const boundary = "XyZzY"
	mpHead := func(extra string, n int) string {
		return fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=%s\r\n%sContent-Length: %d\r\n\r\n", boundary, extra, n)
	}
	rawForm := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n" + token + "\r\n--" + boundary +
		"\r\nContent-Disposition: form-data; name=\"artifact\"; filename=\"demo-1.0-0.conda\"\r\n\r\n"

	type tc struct {
		name   string
		parts  []part           // a multipart request, or
		raw    func(e *env) int // a raw one returning its status, or
		body   string           // a hand-made form with the boundary XyZzY
		status int
		reason string
	}
	cases := []tc{
		// Filename tricks.
		{name: "dot-dot slash", parts: upload("../demo-1.0-0.conda", conda), status: 400, reason: "path separator"},
		{name: "nested dot-dot", parts: upload("linux-64/../../demo-1.0-0.conda", conda), status: 400, reason: "path separator"},
		{name: "percent-encoded dot-dot", parts: upload("%2e%2e%2fdemo-1.0-0.conda", conda), status: 400, reason: "'%'"},
		{name: "backslashes", parts: upload(`..\..\demo-1.0-0.conda`, conda), status: 400, reason: "path separator"},
		{name: "absolute path", parts: upload("/etc/cron.d/demo-1.0-0.conda", conda), status: 400, reason: "path separator"},
		{name: "NUL byte", parts: upload("demo-1.0-0.conda\x00.txt", conda), status: 400},
		{name: "newline", parts: upload("demo\n-1.0-0.conda", conda), status: 400},
		{name: "overlong UTF-8 dot-dot", parts: upload("\xc0\xae\xc0\xae\xc0\xafdemo-1.0-0.conda", conda), status: 400, reason: "UTF-8"},
		{name: "Unicode hyphen look-alike", parts: upload("demo\u20101.0\u20100.conda", conda), status: 400, reason: "non-ASCII"},
		{name: "fullwidth solidus", parts: upload("..\uff0fdemo-1.0-0.conda", conda), status: 400, reason: "non-ASCII"},
		{name: "256-byte name", parts: upload(strings.Repeat("d", 244)+"-1.0-0.conda", conda), status: 400, reason: "longer than 255"},
		{name: "empty filename", parts: upload("", conda), status: 400},
		{name: "hidden name", parts: upload(".demo-1.0-0.conda", conda), status: 400},
		{name: "wrong extension", parts: upload("demo-1.0-0.tar.gz", tarbz2), status: 400, reason: "does not end in"},
		{name: "not name-version-build", parts: upload("demo.conda", conda), status: 400, reason: "name-version-build"},
		// Package contents.
		{name: "name differs from index.json", parts: upload("evil-1.0-0.conda", conda), status: 400, reason: "unexpected zip entry"},
		{name: "version differs from index.json", parts: upload("demo-2.0-0.tar.bz2", tarbz2), status: 400, reason: `filename says version "2.0"`},
		{name: "subdir ../../etc", parts: upload("demo-1.0-0.conda", withSubdir("../../etc")), status: 400, reason: "not an allowed platform subdir"},
		{name: "subdir linux-64/../..", parts: upload("demo-1.0-0.conda", withSubdir("linux-64/../..")), status: 400, reason: "not an allowed platform subdir"},
		{name: "subdir absolute", parts: upload("demo-1.0-0.conda", withSubdir("/etc")), status: 400, reason: "not an allowed platform subdir"},
		{name: "subdir empty", parts: upload("demo-1.0-0.conda", withSubdir("")), status: 400, reason: "not an allowed platform subdir"},
		{name: "index.json symlink", parts: upload("demo-1.0-0.conda", withInfo(pkgtest.Member{Name: "info/index.json", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"})), status: 400, reason: "not a regular file"},
		{name: "index.json hardlink", parts: upload("demo-1.0-0.conda", withInfo(pkgtest.Member{Name: "info/index.json", Typeflag: tar.TypeLink, Linkname: "info/x"})), status: 400, reason: "not a regular file"},
		{name: "paths.json symlink", parts: upload("demo-1.0-0.conda", func() []byte {
			s := good
			s.Info = []pkgtest.Member{{Name: "info/paths.json", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}}
			return pkgtest.Conda(t, s)
		}()), status: 400, reason: "not a regular file"},
		{name: "bzip2 bomb", parts: upload("demo-1.0-0.tar.bz2", pkgtest.Bzip2(t, pkgtest.Tar(t, pkgtest.Member{Name: "lib/zeros", Data: make([]byte, 300<<20)}))), status: 400, reason: "decompressed bytes"},
		{name: "zstd bomb", parts: upload("demo-1.0-0.conda", withInfo(pkgtest.Member{Name: "info/zeros", Data: make([]byte, 300<<20)})), status: 400, reason: "decompressed bytes"},
		{name: "zip bomb metadata.json", parts: upload("demo-1.0-0.conda", func() []byte {
			e := entries()
			e[0] = pkgtest.ZipEntry{Name: "metadata.json", Data: make([]byte, 64<<20), Deflate: true}
			return pkgtest.Zip(t, e...)
		}()), status: 400, reason: "metadata.json is 67108864 bytes"},
		{name: "duplicate zip entries", parts: upload("demo-1.0-0.conda", pkgtest.Zip(t, append(entries(), entries()[2])...)), status: 400, reason: "duplicate zip entry"},
		{name: "zip entry escaping", parts: upload("demo-1.0-0.conda", pkgtest.Zip(t, append(entries(), pkgtest.ZipEntry{Name: "../../x", Data: []byte("x")})...)), status: 400, reason: "unexpected zip entry"},
		{name: "zip64 local headers without subdir", parts: upload("zip64-test-1.0.0-0.conda", readCorpus("bad-pkgs/rattler/sparse/zip64-test-1.0.0-0.conda")), status: 400, reason: `no "subdir"`},
		{name: "zip central directory cut off", parts: upload("demo-1.0-0.conda", conda[:len(conda)-10]), status: 400, reason: "corrupt zip"},
		{name: "truncated tar.bz2", parts: upload("demo-1.0-0.tar.bz2", tarbz2[:len(tarbz2)/2]), status: 400},
		{name: "empty file", parts: upload("demo-1.0-0.conda", nil), status: 400, reason: "empty file"},
		{name: "Git LFS pointer", parts: upload("demo-1.0-0.tar.bz2", []byte("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")), status: 400, reason: "Git LFS pointer"},
		{name: "gzip as tar.bz2", parts: upload("demo-1.0-0.tar.bz2", []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3}), status: 400, reason: "gzip-compressed"},
		{name: "plain tar as tar.bz2", parts: upload("fly-2.5.2-0.tar.bz2", readCorpus("bad-pkgs/conda-build-75d5e9d/fly-2.5.2-0.tar.bz2")), status: 400, reason: "uncompressed tar"},
		{name: "tar.bz2 as conda", parts: upload("demo-1.0-0.conda", tarbz2), status: 400, reason: "not a zip archive"},
		{name: "channel tarball", parts: upload("channel-1.0-0.tar.bz2", pkgtest.Bzip2(t, pkgtest.Tar(t,
			pkgtest.Member{Name: "linux-64/repodata.json", Data: []byte("{}")}, pkgtest.Member{Name: "linux-64/demo-1.0-0.conda", Data: conda}))), status: 400, reason: "no info/index.json"},
		// Form abuse.
		{name: "thousands of parts", parts: func() []part {
			ps := []part{tok}
			for range 3000 {
				ps = append(ps, part{name: "x", data: []byte("y")})
			}
			return ps
		}(), status: 400, reason: "too many form fields"},
		{name: "huge token field", parts: []part{{name: "token", data: bytes.Repeat([]byte("t"), 8<<20)}}, status: 400, reason: "longer than"},
		{name: "huge other field", parts: []part{tok, {name: "arch", data: bytes.Repeat([]byte("a"), 1<<20)}}, status: 400, reason: "longer than"},
		{name: "artifact before token", parts: []part{{name: "artifact", filename: "demo-1.0-0.conda", data: conda}, tok}, status: 400, reason: "token field must come before"},
		{name: "wrong token", parts: []part{{name: "token", data: []byte("guess")}, {name: "artifact", filename: "demo-1.0-0.conda", data: conda}}, status: 401},
		{name: "no token at all", parts: []part{{name: "arch", data: []byte("x")}}, status: 401},
		// Raw HTTP abuse.
		{name: "boundary never ends", raw: func(e *env) int {
			body := rawForm + string(conda) + strings.Repeat("z", 1<<20)
			return e.rawPost(t, mpHead("", len(body)), []byte(body))
		}, status: 400},
		{name: "Content-Length larger than body", raw: func(e *env) int {
			return e.rawPost(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: "+ct+fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(validBody)+5000), validBody)
		}, status: 400},
		{name: "Content-Length smaller than body", raw: func(e *env) int {
			return e.rawPost(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: "+ct+fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(validBody)/2), validBody)
		}, status: 400},
		{name: "Content-Length over the limit", raw: func(e *env) int {
			return e.rawPost(t, mpHead("", 1<<40), nil)
		}, status: 413},
		{name: "Content-Length and chunked together", raw: func(e *env) int {
			return e.rawPost(t, mpHead("Transfer-Encoding: chunked\r\n", 10), []byte("5\r\nhello\r\n0\r\n\r\n"))
		}, status: 400},
		{name: "bad chunk size", raw: func(e *env) int {
			return e.rawPost(t, fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=%s\r\nTransfer-Encoding: chunked\r\n\r\n", boundary), []byte("zz\r\nhello\r\n0\r\n\r\n"))
		}, status: 400},
		{name: "chunk size overflow", raw: func(e *env) int {
			return e.rawPost(t, fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=%s\r\nTransfer-Encoding: chunked\r\n\r\n", boundary), []byte("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"))
		}, status: 400},
		{name: "chunked body cut short", raw: func(e *env) int {
			body := rawForm + string(conda[:200])
			return e.rawPost(t, fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=%s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", boundary, len(body)), []byte(body))
		}, status: 400},
		{name: "missing boundary", raw: func(e *env) int {
			return e.rawPost(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data\r\nContent-Length: 4\r\n\r\n", []byte("abcd"))
		}, status: 400},
		// Forms that mime/multipart would take, refused on purpose
		// (internal/form says why).
		{name: "form with a preamble", body: "preamble\r\n" + rawForm + string(conda) + "\r\n--" + boundary + "--\r\n", status: 400, reason: "must start with the boundary"},
		{name: "form with bare LF line ends", body: strings.ReplaceAll(rawForm, "\r\n", "\n") + string(conda) + "\n--" + boundary + "--\n", status: 400, reason: "must end in CRLF"},
		{name: "quoted-printable artifact", body: strings.Replace(rawForm, `filename="demo-1.0-0.conda"`+"\r\n", `filename="demo-1.0-0.conda"`+"\r\nContent-Transfer-Encoding: quoted-printable\r\n", 1) + "=50=4B\r\n--" + boundary + "--\r\n", status: 400, reason: "Content-Transfer-Encoding"},
		{name: "32 KiB part header", body: strings.Replace(rawForm, `filename="demo-1.0-0.conda"`+"\r\n", `filename="demo-1.0-0.conda"`+"\r\nX-Pad: "+strings.Repeat("p", 32<<10)+"\r\n", 1) + string(conda) + "\r\n--" + boundary + "--\r\n", status: 400, reason: "header is longer"},
		{name: "junk after the last boundary", body: rawForm + string(conda) + "\r\n--" + boundary + "--junk", status: 400, reason: "must end in CRLF"},
		{name: "8 KiB after the closing boundary", body: rawForm + string(conda) + "\r\n--" + boundary + "--\r\n" + strings.Repeat("e", 8<<10), status: 400, reason: "data after the end"},
		{name: "huge header", raw: func(e *env) int {
			return e.rawPost(t, "POST / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("h", 2<<20)+"\r\n\r\n", nil)
		}, status: 431},
	}
	if len(cases) < 40 {
		t.Fatalf("catalogue has %d entries, want at least 40", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := start(t)
			before := e.listed(t, "noarch")
			var status int
			var msg string
			switch {
			case c.raw != nil:
				status = c.raw(e)
			case c.body != "":
				r := e.post(t, nil, "multipart/form-data; boundary="+boundary, []byte(c.body))
				status = r.status
				msg, _ = r.body["error"].(string)
			default:
				ctype, body := form(c.parts...)
				r := e.post(t, nil, ctype, body)
				status = r.status
				msg, _ = r.body["error"].(string)
			}
			if status != c.status {
				t.Errorf("status %d (%s), want %d", status, msg, c.status)
			}
			if c.reason != "" && !strings.Contains(msg, c.reason) {
				t.Errorf("reason %q does not contain %q", msg, c.reason)
			}
			if files := e.files(t); len(files) != 0 {
				t.Errorf("stored: %v", files)
			}
			if after := e.listed(t, "noarch"); len(after) != len(before) {
				t.Errorf("noarch index changed")
			}
		})
	}
}

// TestPayloadLinks: symlinks and hard links in a package's payload are
// normal (conda packages ship them) and harmless here, since the payload
// is never extracted: such a package is stored.
func TestPayloadLinks(t *testing.T) {
	testneed.Tool(t, "bzip2", "bzip2")
	e := start(t)
	s := pkgtest.Simple("links", "1.0", "0", "linux-64")
	s.Payload = append(s.Payload,
		pkgtest.Member{Name: "lib/evil", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"},
		pkgtest.Member{Name: "lib/hard", Typeflag: tar.TypeLink, Linkname: "lib/x.txt"})
	for _, ext := range []string{".conda", ".tar.bz2"} {
		if r := e.upload(t, "links-1.0-0"+ext, pkgtest.Build(t, s, ext)); r.status != 201 {
			t.Errorf("%s: %d %s", ext, r.status, r.raw)
		}
	}
}
