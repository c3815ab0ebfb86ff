package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/form"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// The upload protocols of rattler-build and pixi (conda/rattler,
// crates/rattler_upload/src/upload/mod.rs and prefix.rs), run through the
// same pipeline as POST /: the token is checked before a body byte is
// read, the package streams into a temp file, is validated, published
// atomically and indexed, and the answer is the same JSON.

// maxAttestation bounds a prefix.dev attestation part (a Sigstore bundle
// is a few KiB).
const maxAttestation = 1 << 20

// channelLabel reads the {channel} of a quetz or prefix.dev path: the
// server's channel_name means main, and any other label name a label
// (with the admin API on, which labels belong to).
func (s *Server) channelLabel(name string) (string, error) {
	if name == s.o.Channel.Name {
		return store.MainLabel, nil
	}
	if s.o.Lifecycle != nil && store.ValidLabel(name) {
		return name, nil
	}
	return "", newError(http.StatusNotFound, fmt.Sprintf("channel %q not found: this server holds channel %q", oneLine(name), s.o.Channel.Name))
}

// headerToken authenticates the token of a request's headers, in any of
// the forms the upload clients send: X-API-Key (quetz), Authorization:
// Bearer (prefix.dev, Artifactory) or HTTP Basic (Artifactory).
func (s *Server) headerToken(r *http.Request) (auth.Token, error) {
	tok, present, err := credentials(r)
	if err != nil {
		return auth.Token{}, err
	}
	if k := r.Header.Get("X-API-Key"); k != "" {
		tok, present = k, true
	}
	if !present {
		return auth.Token{}, errUnauthorized
	}
	return s.uploadToken(r, tok, fieldsOf(r))
}

// protocolAuth does what every protocol route does before reading the
// body: find the label from the path, authenticate the header token and
// check it may upload there, read force, and admit the upload.
func (s *Server) protocolAuth(r *http.Request) (auth.Token, bool, error) {
	lf := fieldsOf(r)
	switch {
	case r.PathValue("label") != "":
		if lf.label = r.PathValue("label"); !store.ValidLabel(lf.label) || s.o.Lifecycle == nil {
			return auth.Token{}, false, newError(http.StatusNotFound, fmt.Sprintf("label %q not found", oneLine(lf.label)))
		}
	case lf.protocol == "artifactory":
		// Artifactory's {channel} is the channel; labels come as
		// /label/<label>/.
		if r.PathValue("channel") != s.o.Channel.Name {
			return auth.Token{}, false, newError(http.StatusNotFound, fmt.Sprintf("channel %q not found: this server holds channel %q", oneLine(r.PathValue("channel")), s.o.Channel.Name))
		}
		lf.label = store.MainLabel
	default:
		label, err := s.channelLabel(r.PathValue("channel"))
		if err != nil {
			return auth.Token{}, false, err
		}
		lf.label = label
	}
	token, err := s.headerToken(r)
	if err != nil {
		return auth.Token{}, false, err
	}
	if !token.AllowsLabel(lf.label) {
		return auth.Token{}, false, newError(http.StatusForbidden, fmt.Sprintf("token %q may not upload to label %s", token.Name, lf.label))
	}
	if err := s.labelAllowed(lf.label); err != nil {
		return auth.Token{}, false, err
	}
	if err := s.quotaPrecheck(r, lf.label, token); err != nil {
		return auth.Token{}, false, err
	}
	f, err := force(r)
	if err != nil {
		return auth.Token{}, false, err
	}
	// Authenticated: now, and only now, the upload takes a slot.
	return token, f, s.admit(r)
}

// force reads the force query parameter as rattler sends it.
func force(r *http.Request) (bool, error) {
	v := r.URL.Query().Get("force")
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, newError(http.StatusBadRequest, fmt.Sprintf("force=%q: want true or false", oneLine(v)))
	}
	return b, nil
}

// rawUpload receives a package sent as the whole request body (quetz,
// Artifactory), with or without a Content-Length.
func (s *Server) rawUpload(w http.ResponseWriter, r *http.Request, arrived func(), filename string, p publishing) (*Result, error) {
	lf := fieldsOf(r)
	token, f, err := s.protocolAuth(r)
	if err != nil {
		return nil, err
	}
	p.force = f
	// The digest fields of the request are checked as the body arrives
	// (limitBody); the sha256 parameters, as many as were sent, here.
	p.sha256From = "the sha256 query parameter"
	for _, q := range r.URL.Query()["sha256"] {
		if p.sha256, err = sameSHA256(p.sha256, q, p.sha256From); err != nil {
			return nil, err
		}
	}
	if err := s.limitBody(w, r, 0); err != nil {
		return nil, err
	}
	in, err := s.receive(r.Body, filename, lf, token)
	if err != nil {
		return nil, err
	}
	defer in.abort()
	return s.publish(r, in, token, arrived, p)
}

// quetzUpload: POST /api/channels/{channel}/upload/{filename}
// ?force=false&sha256=<hex>, raw body, X-API-Key.
func (s *Server) quetzUpload(w http.ResponseWriter, r *http.Request) (*Result, error) {
	return s.uploading(w, r, "quetz", func(w http.ResponseWriter, r *http.Request, arrived func()) (*Result, error) {
		return s.rawUpload(w, r, arrived, r.PathValue("filename"), publishing{})
	})
}

// artifactoryUpload: PUT /{channel}/{subdir}/{filename} or
// /label/{label}/{subdir}/{filename}, raw body, Bearer or Basic. The
// subdir must be the package's own.
func (s *Server) artifactoryUpload(w http.ResponseWriter, r *http.Request) (*Result, error) {
	return s.uploading(w, r, "artifactory", func(w http.ResponseWriter, r *http.Request, arrived func()) (*Result, error) {
		return s.rawUpload(w, r, arrived, r.PathValue("filename"), publishing{subdir: r.PathValue("subdir")})
	})
}

// prefixUpload: POST /api/v1/upload/{channel}[?force=true], Bearer, and a
// multipart body of one part "file" (part headers X-File-Name and
// X-File-SHA256) and an optional text part "attestation".
func (s *Server) prefixUpload(w http.ResponseWriter, r *http.Request) (*Result, error) {
	return s.uploading(w, r, "prefix", s.receivePrefix)
}

// receivePrefix reads the prefix.dev form, stores the package and asks
// for its index run.
func (s *Server) receivePrefix(w http.ResponseWriter, r *http.Request, arrived func()) (*Result, error) {
	token, f, err := s.protocolAuth(r)
	if err != nil {
		return nil, err
	}
	fu := &formUpload{p: publishing{force: f}, token: &token}
	if err := s.limitBody(w, r, envelopeSlack+maxAttestation); err != nil {
		return nil, err
	}
	mr, err := formReader(r, "a part named file")
	if err != nil {
		return nil, err
	}
	defer fu.abort()
	if err := eachPart(mr, "parts", func(p *form.Part) error { return s.readPrefixPart(r, p, fu) }); err != nil {
		return nil, err
	}
	if fu.in == nil {
		return nil, newError(http.StatusBadRequest, "no part named file in the form")
	}
	if err := formEnd(mr); err != nil {
		return nil, err
	}
	return s.publish(r, fu.in, token, arrived, fu.p)
}

// readPrefixPart reads one part of the prefix.dev form: the package as
// file, a Sigstore attestation, or a small field read and ignored.
func (s *Server) readPrefixPart(r *http.Request, part *form.Part, fu *formUpload) error {
	name, filename, hasFilename := formNames(part.Header)
	switch {
	case name == "file":
		if fu.in != nil {
			return newError(http.StatusBadRequest, "one file part per request")
		}
		if !hasFilename {
			return newError(http.StatusBadRequest, "the file part must have a filename")
		}
		if x := part.Header.Get("X-File-Name"); x != "" && x != filename {
			return newError(http.StatusBadRequest, fmt.Sprintf("X-File-Name %q disagrees with the part's filename %q", oneLine(x), oneLine(filename)))
		}
		// X-File-SHA256, and any other digest field of the part, is
		// checked as the part ends.
		var err error
		fu.in, err = s.receive(checkDigests(part, part.Header, "file part"), filename, fieldsOf(r), *fu.token)
		return err
	case name == "attestation":
		a, err := readField(part, name, maxAttestation)
		if err != nil {
			return err
		}
		if a = strings.TrimSpace(a); !json.Valid([]byte(a)) || a[0] != '{' {
			return newError(http.StatusBadRequest, "the attestation part is not JSON: want one object, a Sigstore bundle")
		}
		// CEP 50: <filename>.sigs holds a JSON array of them, to which
		// this one is added. It is kept as sent, not verified.
		fu.p.sigs = []byte("[" + a + "]")
		return nil
	case hasFilename:
		return newError(http.StatusBadRequest, fmt.Sprintf("unexpected file part %q; send the package as file", oneLine(name)))
	}
	_, err := readField(part, name, maxFieldLen)
	return err
}
