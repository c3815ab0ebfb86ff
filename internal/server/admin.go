package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/patch"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// The admin API changes packages already stored: JSON in, one line of
// JSON out, each call with its own token scope, every change audited and
// indexed before the answer.
const (
	// maxAdminBody bounds the body of a package call.
	maxAdminBody = 64 << 10
	// maxPatchBody bounds patch instructions (see patch.MaxSize).
	maxPatchBody = patch.MaxSize
	// maxReason bounds a yank's reason.
	maxReason = 1024
)

// Changed is the response body of a package call.
type Changed struct {
	Filename string `json:"filename"`
	Label    string `json:"label"`
	Subdir   string `json:"subdir"`
	SHA256   string `json:"sha256,omitempty"`
	// To is the target label of a copy or move.
	To string `json:"to,omitempty"`
	// Created is false when a copy found the same bytes already there.
	Created bool   `json:"created,omitempty"`
	Moved   bool   `json:"moved,omitempty"`
	Yanked  *bool  `json:"yanked,omitempty"`
	Changed bool   `json:"changed"`
	Trash   string `json:"trash,omitempty"`
	Indexed bool   `json:"indexed"`
	Status  int    `json:"status"`
}

// adminPath reads and checks the {label} and {subdir} of an admin path,
// before anything else is looked at.
func adminPath(r *http.Request) (label, subdir string, err error) {
	label, subdir = r.PathValue("label"), r.PathValue("subdir")
	if !store.ValidLabel(label) {
		return "", "", newError(http.StatusBadRequest, fmt.Sprintf("label %q is not a label name ([a-z0-9][a-z0-9._-]{0,63})", oneLine(label)))
	}
	if !condapkg.IsKnownSubdir(subdir) {
		return "", "", newError(http.StatusBadRequest, fmt.Sprintf("subdir %q is not a conda platform subdir", oneLine(subdir)))
	}
	lf := fieldsOf(r)
	lf.label, lf.subdir = label, subdir
	if fn := r.PathValue("filename"); fn != "" {
		if _, err := condapkg.ParseFilename(fn); err != nil {
			return "", "", newError(http.StatusBadRequest, fmt.Sprintf("%q is not a package filename", oneLine(fn)))
		}
		lf.filename = fn
	}
	return label, subdir, nil
}

// adminToken authenticates an admin call and checks its scope, and that
// the token may touch every label named and the subdir.
func (s *Server) adminToken(r *http.Request, scope, subdir string, labels ...string) (auth.Token, error) {
	if s.draining.Load() {
		return auth.Token{}, errShuttingDown
	}
	t, err := s.authorize(r, scope)
	if err != nil {
		return t, err
	}
	verb := "change"
	if scope == auth.ScopeRead {
		verb = "read"
	}
	for _, l := range labels {
		if !t.AllowsLabel(l) {
			return auth.Token{}, newError(http.StatusForbidden, fmt.Sprintf("token %q may not %s label %s", t.Name, verb, l))
		}
	}
	if !t.Allows(subdir) {
		return auth.Token{}, newError(http.StatusForbidden, fmt.Sprintf("token %q may not %s subdir %s", t.Name, verb, subdir))
	}
	if err := mayChange(t, fieldsOf(r).filename); err != nil {
		return auth.Token{}, err
	}
	return t, nil
}

// readJSON decodes a JSON body of at most max bytes into v, with exact
// and unique keys (decodeJSON); an empty body leaves v as it is.
func readJSON(w http.ResponseWriter, r *http.Request, max int64, v any) ([]byte, error) {
	b, err := readBody(w, r, max)
	if err != nil || b == nil {
		return nil, err
	}
	if err := decodeJSON(b, v); err != nil {
		return nil, newError(http.StatusBadRequest, "body is not the JSON this call takes: "+oneLine(err.Error()))
	}
	return b, nil
}

// readBody reads a JSON body of at most max bytes; nil if it is empty.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, &Error{Status: http.StatusUnsupportedMediaType, Reason: "bad_request", Msg: "the body must be application/json"}
		}
	}
	if r.ContentLength > max {
		return nil, newError(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", max))
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, newError(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", max))
	}
	if err != nil {
		return nil, readError(err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	return b, nil
}

// reindex asks for index runs of dirs, and waits for them.
func (s *Server) reindex(ctx context.Context, dirs ...string) error {
	var waits []func(context.Context) error
	for _, d := range dirs {
		waits = append(waits, s.o.Indexer.Request(d), s.noarchRun(d))
	}
	return all(waits...)(ctx)
}

// noarchRun asks for an index run of the noarch of dir's label if it has
// no index yet: every conda channel needs noarch/repodata.json. It
// returns a function that waits for it, or nil.
func (s *Server) noarchRun(dir string) func(context.Context) error {
	label, _ := store.SplitDir(dir)
	nd := store.Dir(label, "noarch")
	if label == store.MainLabel || nd == dir {
		return nil
	}
	if _, err := os.Stat(filepath.Join(s.o.Store.Root(), nd, "repodata.json")); err == nil {
		return nil
	}
	return s.o.Indexer.Request(nd)
}

// all returns a function that waits for each of waits (nil ones are
// skipped) and returns the first error.
func all(waits ...func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		for _, w := range waits {
			if w == nil {
				continue
			}
			if err := w(ctx); err != nil {
				return err
			}
		}
		return nil
	}
}

// indexed finishes a change: its index runs, then the response.
func (s *Server) indexed(ctx context.Context, c *Changed, dirs ...string) (*Result, error) {
	if err := s.reindex(ctx, dirs...); err != nil {
		if ctx.Err() != nil {
			return &Result{Status: c.Status, Body: c}, nil
		}
		e := &Error{Status: http.StatusInternalServerError, Reason: "index_failed",
			Msg: "change made, but indexing failed: " + oneLine(err.Error()), Err: err}
		return &Result{Status: e.Status, Body: map[string]any{"error": e.Msg, "status": e.Status, "change": c}}, e
	}
	c.Indexed = true
	return &Result{Status: c.Status, Body: c}, nil
}

// listPackages: GET /api/v1/packages/{label}/{subdir}.
func (s *Server) listPackages(w http.ResponseWriter, r *http.Request) (*Result, error) {
	label, subdir, err := adminPath(r)
	if err != nil {
		return nil, err
	}
	if _, err := s.adminToken(r, auth.ScopeRead, subdir, label); err != nil {
		return nil, err
	}
	files, err := s.o.Lifecycle.List(label, subdir)
	if err != nil {
		return nil, err
	}
	return &Result{Status: http.StatusOK, Body: map[string]any{"label": label, "subdir": subdir, "files": files, "status": http.StatusOK}}, nil
}

// packageCall: POST /api/v1/packages/{label}/{subdir}/{filename}/{call}.
func (s *Server) packageCall(w http.ResponseWriter, r *http.Request) (*Result, error) {
	label, subdir, err := adminPath(r)
	if err != nil {
		return nil, err
	}
	call := r.PathValue("call")
	lf := fieldsOf(r)
	lf.call = call
	switch call {
	case "copy", "move":
		return s.promote(w, r, label, subdir, call == "move")
	case "yank", "unyank":
		return s.yank(w, r, label, subdir, call == "yank")
	}
	lf.call = ""
	return nil, newError(http.StatusNotFound, fmt.Sprintf("no call %q; use copy, move, yank or unyank", oneLine(call)))
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request, label, subdir string, move bool) (*Result, error) {
	var body struct {
		To string `json:"to"`
	}
	lf := fieldsOf(r)
	t, err := s.adminToken(r, auth.ScopePromote, subdir, label)
	if err != nil {
		return nil, err
	}
	if _, err := readJSON(w, r, maxAdminBody, &body); err != nil {
		return nil, err
	}
	switch {
	case body.To == "":
		return nil, newError(http.StatusBadRequest, `the body must name the target label: {"to": "<label>"}`)
	case !store.ValidLabel(body.To):
		return nil, newError(http.StatusBadRequest, fmt.Sprintf("to: %q is not a label name ([a-z0-9][a-z0-9._-]{0,63})", oneLine(body.To)))
	case body.To == label:
		return nil, newError(http.StatusBadRequest, fmt.Sprintf("to: the package is already in label %s", label))
	}
	lf.to = body.To
	if !t.AllowsLabel(body.To) {
		return nil, newError(http.StatusForbidden, fmt.Sprintf("token %q may not change label %s", t.Name, body.To))
	}
	fn := lf.filename
	var c lifecycle.Copied
	if move {
		c, err = s.o.Lifecycle.Move(label, subdir, fn, body.To)
	} else {
		c, err = s.o.Lifecycle.Copy(label, subdir, fn, body.To)
	}
	lf.sha256 = c.SHA256
	if err != nil {
		return nil, err
	}
	res := &Changed{Filename: fn, Label: label, Subdir: subdir, SHA256: c.SHA256, To: body.To, Created: c.Created,
		Moved: move, Changed: c.Created || move, Status: http.StatusOK}
	if c.Created {
		res.Status = http.StatusCreated
	}
	dirs := []string{store.Dir(body.To, subdir)}
	if move {
		dirs = append(dirs, store.Dir(label, subdir))
	}
	return s.indexed(r.Context(), res, dirs...)
}

func (s *Server) yank(w http.ResponseWriter, r *http.Request, label, subdir string, yanked bool) (*Result, error) {
	var body struct {
		Reason string `json:"reason"`
	}
	lf := fieldsOf(r)
	t, err := s.adminToken(r, auth.ScopeYank, subdir, label)
	if err != nil {
		return nil, err
	}
	if _, err := readJSON(w, r, maxAdminBody, &body); err != nil {
		return nil, err
	}
	if len(body.Reason) > maxReason {
		return nil, newError(http.StatusBadRequest, fmt.Sprintf("reason is longer than %d bytes", maxReason))
	}
	if !yanked && body.Reason != "" {
		return nil, newError(http.StatusBadRequest, "unyank takes no reason")
	}
	lf.reason = body.Reason
	sum, changed, err := s.o.Lifecycle.SetYank(label, subdir, lf.filename, yanked, lifecycle.Yank{Reason: body.Reason, Token: t.Name})
	lf.sha256 = sum
	if err != nil {
		return nil, err
	}
	res := &Changed{Filename: lf.filename, Label: label, Subdir: subdir, SHA256: sum, Yanked: &yanked, Changed: changed, Status: http.StatusOK}
	return s.indexed(r.Context(), res, store.Dir(label, subdir))
}

// deletePackage: DELETE /api/v1/packages/{label}/{subdir}/{filename}.
func (s *Server) deletePackage(w http.ResponseWriter, r *http.Request) (*Result, error) {
	label, subdir, err := adminPath(r)
	if err != nil {
		return nil, err
	}
	lf := fieldsOf(r)
	lf.call = "delete"
	if _, err := s.adminToken(r, auth.ScopeDelete, subdir, label); err != nil {
		return nil, err
	}
	d, err := s.o.Lifecycle.Delete(label, subdir, lf.filename)
	lf.sha256, lf.replaced = d.SHA256, d.Trash
	if err != nil {
		return nil, err
	}
	s.o.Log.Warn("package deleted", "label", label, "subdir", subdir, "filename", lf.filename, "token", lf.token, "trash", d.Trash)
	res := &Changed{Filename: lf.filename, Label: label, Subdir: subdir, SHA256: d.SHA256, Trash: d.Trash, Changed: true, Status: http.StatusOK}
	return s.indexed(r.Context(), res, store.Dir(label, subdir))
}

// patches: GET, PUT and DELETE /api/v1/patches/{label}/{subdir}.
func (s *Server) patches(w http.ResponseWriter, r *http.Request) (*Result, error) {
	label, subdir, err := adminPath(r)
	if err != nil {
		return nil, err
	}
	lf := fieldsOf(r)
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if _, err := s.adminToken(r, auth.ScopePatch, subdir, label); err != nil {
			return nil, err
		}
		b, err := s.o.Lifecycle.Patch(label, subdir)
		if err != nil {
			return nil, err
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, b); err != nil {
			return nil, fmt.Errorf("stored patch: %w", err)
		}
		return &Result{Status: http.StatusOK, Body: json.RawMessage(compact.Bytes())}, nil
	}
	lf.call = "patch-" + strings.ToLower(r.Method)
	if _, err := s.adminToken(r, auth.ScopePatch, subdir, label); err != nil {
		return nil, err
	}
	var in *patch.Instructions
	if r.Method == http.MethodPut {
		b, err := readBody(w, r, maxPatchBody)
		if err != nil {
			return nil, err
		}
		if b == nil {
			return nil, newError(http.StatusBadRequest, "the body must be patch instructions (conda-index's patch_instructions.json)")
		}
		if err := checkJSON(b, reflect.TypeFor[patch.Instructions]()); err != nil {
			return nil, newError(http.StatusBadRequest, "body is not the JSON this call takes: "+oneLine(err.Error()))
		}
		if in, err = patch.Parse(b, true); err != nil {
			return nil, newError(http.StatusBadRequest, oneLine(err.Error()))
		}
		sum := sha256.Sum256(b)
		lf.sha256 = hex.EncodeToString(sum[:])
	}
	changed, err := s.o.Lifecycle.SetPatch(label, subdir, in)
	if err != nil {
		return nil, err
	}
	if !changed {
		return nil, lifecycle.ErrNoPatch
	}
	res := &Changed{Label: label, Subdir: subdir, Changed: true, Status: http.StatusOK}
	return s.indexed(r.Context(), res, store.Dir(label, subdir))
}

// auditAdmin records an admin change in the audit log, and counts a
// refused token (authorize has counted a wrong one already).
func (s *Server) auditAdmin(r *http.Request, lf *logFields, start time.Time, status int, reason, errText string) {
	if status == http.StatusTooManyRequests || status == http.StatusForbidden {
		s.o.Observe.Metrics.AuthFailure()
	}
	s.record(r, lf, start, status, reason, errText)
}
