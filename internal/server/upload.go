package server

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// admit runs the checks every upload route makes before it reads a body
// byte: not draining, not blocked for failed logins, a free upload slot.
// It returns a function that releases the slot.
func (s *Server) admit(r *http.Request) (release func(), err error) {
	if s.draining.Load() {
		return nil, errShuttingDown
	}
	if wait, blocked := s.o.Limits.AuthLimiter.Blocked(remoteIP(r), time.Now()); blocked {
		return nil, &Error{Status: http.StatusTooManyRequests, Reason: "rate_limited",
			Msg: "too many failed authentications from this address; retry later", RetryAfter: wait}
	}
	select {
	case s.sem <- struct{}{}:
	default:
		return nil, errBusy
	}
	s.o.Observe.Metrics.InFlight(1)
	return func() {
		s.o.Observe.Metrics.InFlight(-1)
		<-s.sem
	}, nil
}

// uploadForm is the original's upload: POST / as multipart form data.
func (s *Server) uploadForm(w http.ResponseWriter, r *http.Request) (*Result, error) {
	return s.uploading(w, r, "form", s.receiveForm)
}

// uploading runs an upload protocol's handler with what every upload
// needs around it: admission (drain, failed-login limit, a free slot),
// the arrival count for the index scheduler, and counting a 401 against
// the address.
func (s *Server) uploading(w http.ResponseWriter, r *http.Request, protocol string,
	h func(w http.ResponseWriter, r *http.Request, arrived func()) (*Result, error)) (*Result, error) {
	fieldsOf(r).protocol = protocol
	release, err := s.admit(r)
	if err != nil {
		return nil, err
	}
	defer release()
	arrived := s.o.Limits.Arrivals.Begin()
	defer arrived()
	res, err := h(w, r, arrived)
	if err != nil && errorOf(err).Status == http.StatusUnauthorized {
		s.o.Limits.AuthLimiter.Fail(remoteIP(r), time.Now())
		s.authFailures.Add(1)
	}
	return res, err
}

// limitBody bounds an upload's body to max_upload_size plus slack, and
// cuts one that trickles in slower than min_upload_rate.
func (s *Server) limitBody(w http.ResponseWriter, r *http.Request, slack int64) error {
	limit := s.o.Limits.MaxUploadSize + slack
	if r.ContentLength > limit {
		return store.ErrTooLarge
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	r.Body = struct {
		io.Reader
		io.Closer
	}{newRateReader(body, w, s.o.Limits.MinUploadRate, s.o.Limits.RateWindow), body}
	return nil
}

// receiveForm reads the form, stores the package and asks for its index
// run. It calls arrived once the package is stored or refused.
func (s *Server) receiveForm(w http.ResponseWriter, r *http.Request, arrived func()) (*Result, error) {
	lf := fieldsOf(r)
	if err := s.limitBody(w, r, envelopeSlack); err != nil {
		return nil, err
	}
	var token *auth.Token
	if tok, present, err := credentials(r); err != nil {
		return nil, err
	} else if present {
		t, err := s.uploadToken(r, tok, lf)
		if err != nil {
			return nil, err
		}
		token = &t
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, newError(http.StatusBadRequest, "request must be multipart/form-data with fields token and artifact")
	}
	mr, err := form.NewReader(r.Body, params["boundary"])
	if err != nil {
		return nil, readError(err)
	}
	in, token, sum, err := s.readParts(r, mr, token, lf)
	defer func() {
		if in != nil {
			in.abort()
		}
	}()
	if err != nil {
		return nil, err
	}
	if token == nil {
		return nil, errUnauthorized
	}
	if in == nil {
		return nil, newError(http.StatusBadRequest, "no artifact field in the form")
	}
	if err := formEnd(mr); err != nil {
		return nil, err
	}
	return s.publish(r.Context(), in, *token, lf, arrived, publishing{sha256: sum, sha256From: "the sha256 form field"})
}

// readParts reads the form's parts: the token (unless the header gave
// one), then the artifact, which streams into a temp file. Any other small
// field is read and ignored. The returned incoming, if not nil, is the
// caller's to abort, even with an error.
func (s *Server) readParts(req *http.Request, mr *form.Reader, token *auth.Token, lf *logFields) (in *incoming, _ *auth.Token, sum string, _ error) {
	for parts := 0; ; parts++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			return in, token, sum, nil
		}
		if err != nil {
			return in, token, sum, readError(err)
		}
		if parts >= maxParts {
			return in, token, sum, newError(http.StatusBadRequest, fmt.Sprintf("too many form fields (more than %d)", maxParts))
		}
		name, filename, hasFilename := formNames(p.Header)
		switch {
		case name == "token":
			v, err := readField(p, name, auth.MaxTokenLen)
			if err != nil {
				return in, token, sum, err
			}
			t, err := s.uploadToken(req, v, lf)
			if err != nil {
				return in, token, sum, err
			}
			token = &t
		case name == "artifact":
			switch {
			case in != nil:
				return in, token, sum, newError(http.StatusBadRequest, "one artifact per request")
			case token == nil:
				return in, token, sum, newError(http.StatusBadRequest, "the token field must come before the artifact field (or send Authorization: Bearer <token>)")
			case !hasFilename:
				return in, token, sum, newError(http.StatusBadRequest, "artifact must be a file field with a filename")
			}
			if in, err = s.receive(p, filename, lf); err != nil {
				return in, token, sum, err
			}
		case hasFilename:
			return in, token, sum, newError(http.StatusBadRequest, fmt.Sprintf("unexpected file field %q; send the package as artifact", name))
		case name == "sha256":
			// Optional: the client's sha256 of the artifact, checked
			// against what arrived.
			if sum, err = readField(p, name, maxFieldLen); err != nil {
				return in, token, sum, err
			}
		case name == "label":
			// Optional: the label to upload to; main if absent.
			v, err := readField(p, name, maxFieldLen)
			if err != nil {
				return in, token, sum, err
			}
			if lf.label = strings.TrimSpace(v); !store.ValidLabel(lf.label) {
				return in, token, sum, newError(http.StatusBadRequest, fmt.Sprintf("label %q is not a label name ([a-z0-9][a-z0-9._-]{0,63})", oneLine(v)))
			}
		default:
			// Other small fields, such as the original client's optional
			// arch, are read and ignored: the subdir comes from the
			// package itself.
			if _, err := readField(p, name, maxFieldLen); err != nil {
				return in, token, sum, err
			}
		}
	}
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
// .tar.bz2) inspecting it on the way.
func (s *Server) receive(r io.Reader, filename string, lf *logFields) (*incoming, error) {
	lf.filename = filename
	fn, err := condapkg.ParseFilename(filename)
	if err != nil {
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

// publish validates a received package, stores it in its subdir, and asks
// for (and, with WaitIndex, waits for) the index run that lists it.
func (s *Server) publish(ctx context.Context, in *incoming, token auth.Token, lf *logFields, arrived func(), p publishing) (*Result, error) {
	if p.sha256 != "" && !strings.EqualFold(strings.TrimSpace(p.sha256), in.sums.SHA256) {
		return nil, &Error{Status: http.StatusBadRequest, Reason: "checksum_mismatch",
			Msg: fmt.Sprintf("sha256 mismatch: %s says %s, the upload's is %s; nothing stored", p.sha256From, oneLine(p.sha256), in.sums.SHA256)}
	}
	info, err := in.scanner.Finish(in.up.File(), in.sums.Size)
	if err != nil {
		return nil, err
	}
	lf.subdir = info.Subdir
	if p.subdir != "" && p.subdir != info.Subdir {
		return nil, newError(http.StatusBadRequest, fmt.Sprintf("the path names subdir %s, but the package's info/index.json says %s", p.subdir, info.Subdir))
	}
	if !token.Allows(info.Subdir) {
		return nil, newError(http.StatusForbidden, fmt.Sprintf("token %q may not upload to subdir %s", token.Name, info.Subdir))
	}
	label := p.label
	if label == "" {
		label = lf.label
	}
	if label == "" {
		label = store.MainLabel
	}
	lf.label = label
	if !token.AllowsLabel(label) {
		return nil, newError(http.StatusForbidden, fmt.Sprintf("token %q may not upload to label %s", token.Name, label))
	}
	dir := store.Dir(label, info.Subdir)
	name := in.fn.String()
	outcome, fi, err := in.up.Publish(dir, name, in.sums.SHA256)
	if errors.Is(err, store.ErrExists) && p.force {
		if !token.Can(auth.ScopeOverwrite) {
			return nil, &Error{Status: http.StatusConflict, Reason: "conflict", Err: err,
				Msg: fmt.Sprintf("a different package with this filename already exists; force=true needs a token with the overwrite scope, and token %q has none", token.Name)}
		}
		outcome, fi, lf.replaced, err = in.up.Replace(dir, name, in.sums.SHA256, time.Now())
		if lf.replaced != "" {
			s.o.Log.Warn("package replaced by a forced upload", "label", label, "subdir", info.Subdir, "filename", name, "token", token.Name, "old_bytes", lf.replaced)
		}
	}
	if err != nil {
		return nil, err
	}
	if p.sigs != nil {
		if err := s.o.Store.WriteSidecar(dir, name+".sigs", p.sigs); err != nil {
			return nil, fmt.Errorf("keep attestation: %w", err)
		}
	}
	s.uploads.Add(1)
	res := &Uploaded{
		Filename: name, Label: label, Subdir: info.Subdir, Size: in.sums.Size, SHA256: in.sums.SHA256, MD5: in.sums.MD5,
		Created: outcome == store.Created, Replaced: lf.replaced != "", Indexer: s.o.Indexer.Name(), Status: http.StatusCreated,
	}
	if outcome == store.Identical {
		res.Status = http.StatusOK
	}
	// Stored first, so that the run this upload asks for does not wait
	// for the upload itself to settle.
	arrived()
	wait := all(s.o.Indexer.Published(index.Package{
		Subdir: dir, Filename: name, Info: fi, IndexJSON: info.IndexJSON, RunExports: info.RunExports, Channel: info.Channel,
		Size: in.sums.Size, MD5: in.sums.MD5, SHA256: in.sums.SHA256,
	}), s.noarchRun(dir))
	if !s.o.WaitIndex {
		return &Result{Status: res.Status, Body: res}, nil
	}
	if err := s.waitIndexed(ctx, wait, dir, name); err != nil {
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
	if s.o.Mirror.Bucket != nil {
		var m bool
		if s.o.Mirror.Wait > 0 {
			wctx, cancel := context.WithTimeout(ctx, s.o.Mirror.Wait)
			m = s.o.Mirror.Bucket.WaitFor(wctx, dir, name)
			cancel()
		} else {
			m = s.o.Mirror.Bucket.Has(dir, name)
		}
		res.Mirrored = &m
	}
	return &Result{Status: res.Status, Body: res}, nil
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
