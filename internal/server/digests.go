package server

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"maps"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// Every digest a client sends of what it uploads is checked: all the
// fields that carry one, every line of each, every member of each line,
// every algorithm the server can compute. A field that names only
// algorithms the server cannot compute is refused rather than ignored:
// RFC 9530 lets a recipient ignore digests, but a client that asked for
// an integrity check would then believe its bytes were checked when they
// were not. Members of unknown algorithms beside one that is checked are
// ignored, as the RFC allows. A duplicate member (sha-256 twice) is
// checked twice, although a structured-field parser keeps only the last:
// any digest the client sent that does not match is a mismatch.
//
// The fields of the request describe its body: for the raw protocols
// (quetz, Artifactory) that is the package, for the multipart ones
// (POST /, prefix.dev) the whole form. The same fields in a part's
// header describe the part. Each is checked when its body ends, before
// anything is published.

// digestAlgos are the algorithms the server computes, by their RFC 9530
// names (sha is SHA-1; md5 and sha are deprecated there, but still
// checked when sent).
var digestAlgos = map[string]func() hash.Hash{
	"sha-256": sha256.New, "sha-512": sha512.New, "md5": md5.New, "sha": sha1.New,
}

// digestField is a field that carries a digest of the body.
type digestField struct {
	name string
	// algo is the algorithm of a single-valued field, in the encoding
	// hexValue says; "" for a list of algorithm=value members.
	algo     string
	hexValue bool
	// legacy is RFC 3230's Digest: members of base64 without colons,
	// algorithm names case-insensitive.
	legacy bool
}

var digestFields = []digestField{
	{name: "Repr-Digest"},
	{name: "Content-Digest"},
	{name: "Digest", legacy: true},
	{name: "Content-MD5", algo: "md5"},
	// Artifactory's deploy headers, and prefix.dev's file part header.
	{name: "X-Checksum-Sha256", algo: "sha-256", hexValue: true},
	{name: "X-Checksum-Sha1", algo: "sha", hexValue: true},
	{name: "X-Checksum-Md5", algo: "md5", hexValue: true},
	{name: "X-File-SHA256", algo: "sha-256", hexValue: true},
}

// digestClaim is one digest the client sent.
type digestClaim struct {
	from, algo string
	want       []byte
}

// digestReader passes a body through, hashing it with every algorithm
// its claims name, and at its end fails instead of ending if a claim
// does not match.
type digestReader struct {
	r      io.Reader
	what   string // "request body", "file part"
	claims []digestClaim
	hashes map[string]hash.Hash
	err    error
}

// checkDigests wraps body, described by the fields of h, so that it
// fails at its end on a digest mismatch (and at once if a field is
// malformed or names no algorithm the server computes).
func checkDigests(body io.Reader, h textproto.MIMEHeader, what string) io.Reader {
	claims, err := digestClaims(h)
	if err != nil {
		return &digestReader{r: body, err: err}
	}
	if len(claims) == 0 {
		return body
	}
	d := &digestReader{r: body, what: what, claims: claims, hashes: map[string]hash.Hash{}}
	for _, c := range claims {
		if d.hashes[c.algo] == nil {
			d.hashes[c.algo] = digestAlgos[c.algo]()
		}
	}
	return d
}

func (d *digestReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	for _, h := range d.hashes {
		h.Write(p[:n])
	}
	if err == io.EOF {
		if d.err = d.mismatch(); d.err != nil {
			return n, d.err
		}
	}
	return n, err
}

// mismatch names the first claim the body does not match.
func (d *digestReader) mismatch() error {
	sums := map[string][]byte{}
	for a, h := range d.hashes {
		sums[a] = h.Sum(nil)
	}
	for _, c := range d.claims {
		if !bytes.Equal(sums[c.algo], c.want) {
			return &Error{Status: http.StatusBadRequest, Reason: "checksum_mismatch",
				Msg: fmt.Sprintf("%s mismatch: %s says %s, the %s's is %s; nothing stored", c.algo, c.from, hex.EncodeToString(c.want), d.what, hex.EncodeToString(sums[c.algo]))}
		}
	}
	return nil
}

// digestClaims reads every digest in h's digest fields.
func digestClaims(h textproto.MIMEHeader) ([]digestClaim, error) {
	var claims []digestClaim
	for _, f := range digestFields {
		lines := h.Values(f.name)
		if len(lines) == 0 {
			continue
		}
		var fc []digestClaim
		var unknown []string
		for _, line := range lines {
			if f.algo != "" {
				c, err := f.decode(f.algo, line)
				if err != nil {
					return nil, err
				}
				fc = append(fc, c)
				continue
			}
			c, u, err := f.members(line)
			if err != nil {
				return nil, err
			}
			fc, unknown = append(fc, c...), append(unknown, u...)
		}
		if len(fc) == 0 {
			return nil, newError(http.StatusBadRequest, fmt.Sprintf("%s names no digest algorithm this server checks (%s), only %s; nothing stored",
				f.name, strings.Join(slices.Sorted(maps.Keys(digestAlgos)), ", "), oneLine(strings.Join(unknown, ", "))))
		}
		claims = append(claims, fc...)
	}
	return claims, nil
}

// members reads one line of a list of algorithm=value members: the
// claims of the algorithms the server computes, and the names of the
// others.
func (f digestField) members(line string) (claims []digestClaim, unknown []string, _ error) {
	for _, m := range strings.Split(line, ",") {
		m, _, _ = strings.Cut(m, ";") // parameters, which no digest has
		if strings.TrimSpace(m) == "" {
			continue
		}
		algo, val, ok := strings.Cut(strings.TrimSpace(m), "=")
		algo = strings.ToLower(strings.TrimSpace(algo))
		if !ok {
			return nil, nil, newError(http.StatusBadRequest, fmt.Sprintf("%s: %q is not algorithm=value", f.name, oneLine(m)))
		}
		if _, known := digestAlgos[algo]; !known {
			unknown = append(unknown, algo)
			continue
		}
		if !f.legacy {
			val = strings.TrimSpace(val)
			if len(val) < 2 || val[0] != ':' || val[len(val)-1] != ':' {
				return nil, nil, newError(http.StatusBadRequest, fmt.Sprintf("%s: the %s value must be :base64:", f.name, algo))
			}
			val = val[1 : len(val)-1]
		}
		c, err := f.decode(algo, val)
		if err != nil {
			return nil, nil, err
		}
		claims = append(claims, c)
	}
	return claims, unknown, nil
}

// decode reads one digest value, base64 or hex as the field has it.
func (f digestField) decode(algo, val string) (digestClaim, error) {
	val = strings.TrimSpace(val)
	enc, b, err := "base64", []byte(nil), error(nil)
	if f.hexValue {
		enc = "hex"
		b, err = hex.DecodeString(val)
	} else {
		b, err = base64.StdEncoding.DecodeString(val)
	}
	if size := digestAlgos[algo]().Size(); err != nil || len(b) != size {
		return digestClaim{}, newError(http.StatusBadRequest, fmt.Sprintf("%s: the %s value is not %d bytes of %s", f.name, algo, size, enc))
	}
	return digestClaim{from: f.name, algo: algo, want: b}, nil
}

// sameSHA256 adds one more hex sha256 the client sent, from a source
// that may be repeated (a query parameter, a form field): all must
// agree, and the one they agree on is checked against the upload.
func sameSHA256(prev, next, from string) (string, error) {
	next = strings.TrimSpace(next)
	if prev == "" || strings.EqualFold(prev, next) {
		return next, nil
	}
	return "", &Error{Status: http.StatusBadRequest, Reason: "checksum_mismatch",
		Msg: fmt.Sprintf("sha256 mismatch: %s is given twice, as %s and as %s; nothing stored", from, oneLine(prev), oneLine(next))}
}
