package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/form"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/metrics"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

const (
	// envelopeSlack is what the multipart envelope (boundaries, headers,
	// the token field) may add to max_upload_size.
	envelopeSlack = 64 << 10
	// maxParts bounds the form parts of one request.
	maxParts = 8
	// maxFieldLen bounds a non-file form field.
	maxFieldLen = 4 << 10
)

// Uploaded is the response body of an upload.
type Uploaded struct {
	Filename string `json:"filename"`
	Label    string `json:"label"`
	Subdir   string `json:"subdir"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	MD5      string `json:"md5"`
	// Created is false when a byte-identical package was already stored.
	Created bool `json:"created"`
	// Replaced says a forced upload replaced a different package (whose
	// bytes were kept in .trash/).
	Replaced bool `json:"replaced,omitempty"`
	// Indexed says whether repodata.json lists the package.
	Indexed bool `json:"indexed"`
	// Mirrored, with an object-storage mirror, says whether the bucket
	// holds the package yet (false is normal at first).
	Mirrored *bool  `json:"mirrored,omitempty"`
	Indexer  string `json:"indexer"`
	Error    string `json:"error,omitempty"`
	Status   int    `json:"status"`
}

// uploadForm is the original's upload: POST / as multipart form data.
func (s *Server) uploadForm(w http.ResponseWriter, r *http.Request) (*Result, error) {
	return s.uploading(w, r, "form", s.receiveForm)
}

// limitBody bounds an upload's body to max_upload_size plus slack, and
// cuts one that trickles in slower than min_upload_rate or, before the
// upload is admitted, past the auth deadline (paced).
func (s *Server) limitBody(w http.ResponseWriter, r *http.Request, slack int64) error {
	limit := s.o.Limits.MaxUploadSize + slack
	if r.ContentLength > limit {
		return store.ErrTooLarge
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	r.Body = struct {
		io.Reader
		io.Closer
	}{s.paced(w, r, checkDigests(body, textproto.MIMEHeader(r.Header), "request body")), body}
	return nil
}

// receiveForm reads the form, stores the package and asks for its index
// run. It calls arrived once the package is stored or refused.
func (s *Server) receiveForm(w http.ResponseWriter, r *http.Request, arrived func()) (*Result, error) {
	if err := s.limitBody(w, r, envelopeSlack); err != nil {
		return nil, err
	}
	fu := &formUpload{p: publishing{sha256From: "the sha256 form field"}}
	if tok, present, err := credentials(r); err != nil {
		return nil, err
	} else if present {
		t, err := s.uploadToken(r, tok, fieldsOf(r))
		if err != nil {
			return nil, err
		}
		fu.token = &t
		if err := s.admit(r); err != nil {
			return nil, err
		}
	}
	mr, err := formReader(r, "fields token and artifact")
	if err != nil {
		return nil, err
	}
	defer fu.abort()
	if err := eachPart(mr, "fields", func(p *form.Part) error { return s.readPart(r, p, fu) }); err != nil {
		return nil, err
	}
	if fu.token == nil {
		return nil, errUnauthorized
	}
	if fu.in == nil {
		return nil, newError(http.StatusBadRequest, "no artifact field in the form")
	}
	if err := formEnd(mr); err != nil {
		return nil, err
	}
	return s.publish(r, fu.in, *fu.token, arrived, fu.p)
}

// formUpload is what the parts of an upload form have given so far.
type formUpload struct {
	in    *incoming   // the package, once received
	token *auth.Token // the original's form: the token, from a header or field
	p     publishing
}

// abort removes the received package, unless it was published.
func (f *formUpload) abort() {
	if f.in != nil {
		f.in.abort()
	}
}

// formReader reads r's body as multipart/form-data; want is what the form
// must hold, for the error.
func formReader(r *http.Request, want string) (*form.Reader, error) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, newError(http.StatusBadRequest, "request must be multipart/form-data with "+want)
	}
	mr, err := form.NewReader(r.Body, params["boundary"])
	if err != nil {
		return nil, readError(err)
	}
	return mr, nil
}

// eachPart calls read for each part of a form, of which there may be at
// most maxParts; what names them in the error.
func eachPart(mr *form.Reader, what string, read func(*form.Part) error) error {
	for parts := 0; ; parts++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return readError(err)
		}
		if parts >= maxParts {
			return newError(http.StatusBadRequest, fmt.Sprintf("too many form %s (more than %d)", what, maxParts))
		}
		if err := read(p); err != nil {
			return err
		}
	}
}

// readPart reads one part of the original's form: the token (unless the
// header gave one), then the artifact, which streams into a temp file.
// Any other small field is read and ignored.
func (s *Server) readPart(req *http.Request, p *form.Part, fu *formUpload) error {
	lf := fieldsOf(req)
	name, filename, hasFilename := formNames(p.Header)
	switch {
	case name == "token":
		v, err := readField(p, name, auth.MaxTokenLen)
		if err != nil {
			return err
		}
		t, err := s.uploadToken(req, v, lf)
		if err != nil {
			return err
		}
		fu.token = &t
		if err := s.admit(req); err != nil {
			return err
		}
	case name == "artifact":
		switch {
		case fu.in != nil:
			return newError(http.StatusBadRequest, "one artifact per request")
		case fu.token == nil:
			return newError(http.StatusBadRequest, "the token field must come before the artifact field (or send Authorization: Bearer <token>)")
		case !hasFilename:
			return newError(http.StatusBadRequest, "artifact must be a file field with a filename")
		}
		var err error
		fu.in, err = s.receive(checkDigests(p, p.Header, "artifact part"), filename, lf, *fu.token)
		return err
	case hasFilename:
		return newError(http.StatusBadRequest, fmt.Sprintf("unexpected file field %q; send the package as artifact", name))
	case name == "sha256":
		// Optional: the client's sha256 of the artifact, checked
		// against what arrived.
		v, err := readField(p, name, maxFieldLen)
		if err == nil {
			fu.p.sha256, err = sameSHA256(fu.p.sha256, v, fu.p.sha256From)
		}
		return err
	case name == "label":
		// Optional: the label to upload to; main if absent.
		return readLabel(p, lf)
	default:
		// Other small fields, such as the original client's optional
		// arch, are read and ignored: the subdir comes from the
		// package itself.
		_, err := readField(p, name, maxFieldLen)
		return err
	}
	return nil
}

// readLabel reads the form's label field.
func readLabel(p *form.Part, lf *logFields) error {
	v, err := readField(p, "label", maxFieldLen)
	if err != nil {
		return err
	}
	if lf.label = strings.TrimSpace(v); !store.ValidLabel(lf.label) {
		return newError(http.StatusBadRequest, fmt.Sprintf("label %q is not a label name ([a-z0-9][a-z0-9._-]{0,63})", oneLine(v)))
	}
	return nil
}

// incoming is a package received into a temp file, not yet published.
type incoming struct {
	fn      condapkg.Filename
	up      *store.Upload
	scanner *condapkg.Scanner
	sums    store.Sums
}

func (in *incoming) abort() {
	in.up.Abort()
	in.scanner.Close()
}

// receive streams one package into a temp file, hashing and (for
// .tar.bz2) inspecting it on the way. The name in the filename must be
// one t may publish, before a body byte is read.
func (s *Server) receive(r io.Reader, filename string, lf *logFields, t auth.Token) (*incoming, error) {
	lf.filename = filename
	fn, err := condapkg.ParseFilename(filename)
	if err != nil {
		return nil, err
	}
	if err := s.mayUpload(t, fn.Name); err != nil {
		return nil, err
	}
	up, err := s.o.Store.Create()
	if err != nil {
		return nil, err
	}
	in := &incoming{fn: fn, up: up, scanner: condapkg.NewScanner(fn, s.o.Limits.Package)}
	in.sums, err = up.Receive(countingReader{r, s.o.Observe.Metrics}, s.o.Limits.MaxUploadSize, in.scanner)
	if err != nil {
		in.abort()
		return nil, readError(err)
	}
	lf.size, lf.sha256 = in.sums.Size, in.sums.SHA256
	return in, nil
}

// publishing is what a protocol adds to an upload: the client's own
// checksum, the subdir its path names, force, an attestation.
type publishing struct {
	sha256     string // hex sha256 the client sent, or ""
	sha256From string // where it came from, for the error message
	subdir     string // the subdir the request path names, or ""
	label      string // the label to store in; main if empty
	force      bool
	sigs       []byte // a CEP 50 attestation array to keep as <filename>.sigs
}

// publication is one received package on its way through publish: what
// each step found, for the next.
type publication struct {
	in    *incoming
	token auth.Token
	lf    *logFields
	p     publishing

	info      *condapkg.Info
	label     string
	dir, name string // store.Dir of the label and subdir; the filename
	outcome   store.Outcome
	fi        fs.FileInfo
}

// publish validates a received package, stores it in its subdir, and asks
// for (and, with WaitIndex, waits for) the index run that lists it. It
// calls arrived once the package is stored.
func (s *Server) publish(r *http.Request, in *incoming, token auth.Token, arrived func(), p publishing) (*Result, error) {
	pub := &publication{in: in, token: token, lf: fieldsOf(r), p: p}
	if err := pub.checksum(); err != nil {
		return nil, err
	}
	if err := pub.validate(); err != nil {
		return nil, err
	}
	if err := pub.authorize(); err != nil {
		return nil, err
	}
	// Retention leaves the package alone until the answer says it is
	// indexed; the quotas are taken before an owner is claimed.
	defer s.o.Retention.Hold(pub.dir, pub.name)()
	settle, err := s.reserveQuota(pub)
	if err != nil {
		return nil, err
	}
	if err = s.own(r, pub); err == nil {
		err = s.move(pub)
	}
	settle(err)
	if err != nil {
		return nil, err
	}
	if err := s.sidecar(pub); err != nil {
		return nil, err
	}
	s.uploads.Add(1)
	// Stored first, so that the run this upload asks for does not wait
	// for the upload itself to settle.
	arrived()
	wait := s.requestIndex(pub)
	return s.answer(r.Context(), pub, wait)
}

// checksum compares the client's sha256, if it sent one, with the
// upload's.
func (pub *publication) checksum() error {
	sum, sha := pub.p.sha256, pub.in.sums.SHA256
	if sum == "" || strings.EqualFold(strings.TrimSpace(sum), sha) {
		return nil
	}
	return &Error{Status: http.StatusBadRequest, Reason: "checksum_mismatch",
		Msg: fmt.Sprintf("sha256 mismatch: %s says %s, the upload's is %s; nothing stored", pub.p.sha256From, oneLine(sum), sha)}
}

// validate finishes the package's inspection, and checks that the subdir
// the request path names, if any, is the package's own.
func (pub *publication) validate() error {
	info, err := pub.in.scanner.Finish(pub.in.up.File(), pub.in.sums.Size)
	if err != nil {
		return err
	}
	pub.info, pub.lf.subdir = info, info.Subdir
	if pub.p.subdir != "" && pub.p.subdir != info.Subdir {
		return newError(http.StatusBadRequest, fmt.Sprintf("the path names subdir %s, but the package's info/index.json says %s", pub.p.subdir, info.Subdir))
	}
	return nil
}

// authorize checks that the token may upload to the package's subdir and
// to its label: the protocol's, else the form's, else main.
func (pub *publication) authorize() error {
	t, subdir := pub.token, pub.info.Subdir
	if !t.Allows(subdir) {
		return newError(http.StatusForbidden, fmt.Sprintf("token %q may not upload to subdir %s", t.Name, subdir))
	}
	pub.label = cmp.Or(pub.p.label, pub.lf.label, store.MainLabel)
	pub.lf.label = pub.label
	if !t.AllowsLabel(pub.label) {
		return newError(http.StatusForbidden, fmt.Sprintf("token %q may not upload to label %s", t.Name, pub.label))
	}
	pub.dir, pub.name = store.Dir(pub.label, subdir), pub.in.fn.String()
	return nil
}

// move publishes the package into its subdir, atomically. A forced
// upload, with a token of the overwrite scope, replaces a different
// package of that name, whose bytes are kept in .trash/.
func (s *Server) move(pub *publication) error {
	in, lf := pub.in, pub.lf
	var err error
	pub.outcome, pub.fi, err = in.up.Publish(pub.dir, pub.name, in.sums.SHA256)
	if !errors.Is(err, store.ErrExists) || !pub.p.force {
		return err
	}
	if !pub.token.Can(auth.ScopeOverwrite) {
		return &Error{Status: http.StatusConflict, Reason: "conflict", Err: err,
			Msg: fmt.Sprintf("a different package with this filename already exists; force=true needs a token with the overwrite scope, and token %q has none", pub.token.Name)}
	}
	pub.outcome, pub.fi, lf.replaced, err = in.up.Replace(pub.dir, pub.name, in.sums.SHA256, time.Now())
	if lf.replaced != "" {
		s.o.Log.Warn("package replaced by a forced upload", "label", pub.label, "subdir", pub.info.Subdir, "filename", pub.name, "token", pub.token.Name, "old_bytes", lf.replaced)
	}
	return err
}

// sidecar adds the attestation the client sent, if any, to
// <filename>.sigs (store.AddSidecar).
func (s *Server) sidecar(pub *publication) error {
	if pub.p.sigs == nil {
		return nil
	}
	if err := s.o.Store.AddSidecar(pub.dir, pub.name, pub.fi, pub.p.sigs); err != nil {
		return fmt.Errorf("keep attestation: %w", err)
	}
	return nil
}

// requestIndex asks for the index run that lists the package, and for
// its label's noarch run, and returns a function that waits for both.
func (s *Server) requestIndex(pub *publication) func(context.Context) error {
	info, sums := pub.info, pub.in.sums
	return all(s.o.Indexer.Published(index.Package{
		Subdir: pub.dir, Filename: pub.name, Info: pub.fi, IndexJSON: info.IndexJSON, RunExports: info.RunExports, Channel: info.Channel,
		Size: sums.Size, MD5: sums.MD5, SHA256: sums.SHA256,
	}), s.noarchRun(pub.dir))
}

// answer is the upload's response: at once, or with WaitIndex once the
// index lists the package, saying then whether the mirror holds it.
func (s *Server) answer(ctx context.Context, pub *publication, wait func(context.Context) error) (*Result, error) {
	sums := pub.in.sums
	res := &Uploaded{
		Filename: pub.name, Label: pub.label, Subdir: pub.info.Subdir, Size: sums.Size, SHA256: sums.SHA256, MD5: sums.MD5,
		Created: pub.outcome == store.Created, Replaced: pub.lf.replaced != "", Indexer: s.o.Indexer.Name(), Status: http.StatusCreated,
	}
	if pub.outcome == store.Identical {
		res.Status = http.StatusOK
	}
	if !s.o.WaitIndex {
		return &Result{Status: res.Status, Body: res}, nil
	}
	if err := s.waitIndexed(ctx, wait, pub.dir, pub.name); err != nil {
		if ctx.Err() != nil {
			// The client is gone (or has half-closed its connection):
			// the package is stored and its run goes on. That is the
			// answer, not an index failure.
			return &Result{Status: res.Status, Body: res}, nil
		}
		e := notIndexed(err)
		res.Error, res.Status = e.Msg, e.Status
		return &Result{Status: res.Status, Body: res}, e
	}
	res.Indexed = true
	res.Mirrored = s.mirrored(ctx, pub.dir, pub.name)
	return &Result{Status: res.Status, Body: res}, nil
}

// mirrored says whether the object-storage mirror holds the package,
// waiting for it as long as the server is told to; nil without a mirror.
func (s *Server) mirrored(ctx context.Context, dir, name string) *bool {
	if s.o.Mirror.Bucket == nil {
		return nil
	}
	var m bool
	if s.o.Mirror.Wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, s.o.Mirror.Wait)
		m = s.o.Mirror.Bucket.WaitFor(wctx, dir, name)
		cancel()
	} else {
		m = s.o.Mirror.Bucket.Has(dir, name)
	}
	return &m
}

func (s *Server) waitIndexed(ctx context.Context, wait func(context.Context) error, subdir, filename string) error {
	if err := wait(ctx); err != nil {
		return err
	}
	ok, err := s.o.Indexer.Has(subdir, filename)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("the indexer did not list the package")
	}
	return nil
}

// uploadToken authenticates a presented token and checks that it may
// upload, before any package byte is read.
func (s *Server) uploadToken(r *http.Request, presented string, lf *logFields) (auth.Token, error) {
	t, err := s.checkToken(r, strings.TrimSpace(presented), lf)
	if err != nil {
		return t, err
	}
	if !t.Can(auth.ScopeUpload) {
		return auth.Token{}, newError(http.StatusForbidden, fmt.Sprintf("token %q does not have the upload scope", t.Name))
	}
	return t, nil
}

// checkToken authenticates a presented token: a configured one, a token
// minted for a trusted publisher, or an OIDC ID token.
func (s *Server) checkToken(r *http.Request, presented string, lf *logFields) (auth.Token, error) {
	t, ok := s.auth.Load().Check(presented)
	if !ok {
		ot, isOIDC, err := s.oidcToken(r, presented, lf)
		if err != nil {
			return auth.Token{}, err
		}
		if !isOIDC {
			return auth.Token{}, errUnauthorized
		}
		t = ot
	}
	lf.token = t.Name
	if t.Expired(time.Now()) {
		return auth.Token{}, newError(http.StatusForbidden, fmt.Sprintf("token %q expired on %s", t.Name, t.Expires.UTC().Format(time.RFC3339)))
	}
	return t, nil
}

// formNames returns a part's form name and its raw filename. (The
// stdlib's Part.FileName strips directories, which would hide a traversal
// attempt instead of refusing it.)
func formNames(h textproto.MIMEHeader) (name, filename string, hasFilename bool) {
	_, params, err := mime.ParseMediaType(h.Get("Content-Disposition"))
	if err != nil {
		return "", "", false
	}
	filename, hasFilename = params["filename"]
	return params["name"], filename, hasFilename
}

func readField(p *form.Part, name string, max int) (string, error) {
	b, err := io.ReadAll(io.LimitReader(p, int64(max)+1))
	if err != nil {
		return "", readError(err)
	}
	if len(b) > max {
		return "", newError(http.StatusBadRequest, fmt.Sprintf("form field %q is longer than %d bytes", name, max))
	}
	return string(b), nil
}

// countingReader counts package bytes into the metrics as they arrive.
type countingReader struct {
	r io.Reader
	m *metrics.Metrics
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.m.Received(int64(n))
	return n, err
}

// formEnd reads what follows the form's closing boundary. The form ended;
// so must the body, as its length said: a body cut short of its
// Content-Length (or its chunked encoding) is refused even if the form
// inside it looked complete, and so is more than maxFieldLen of trailing
// data.
func formEnd(mr *form.Reader) error {
	n, err := io.Copy(io.Discard, io.LimitReader(mr.Epilogue(), maxFieldLen+1))
	if err != nil {
		return readError(err)
	}
	if n > maxFieldLen {
		return newError(http.StatusBadRequest, "data after the end of the multipart form")
	}
	return nil
}
