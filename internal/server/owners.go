package server

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/audit"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/owners"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// PolicyOptions say who may publish which package name, and to which
// labels (see package owners).
type PolicyOptions struct {
	// Owners, if set, holds the owners of package names: an upload of a
	// name with owners must come from one of them.
	Owners *owners.Store
	// FirstUpload makes the first token or publisher to publish a name
	// with no owner its owner.
	FirstUpload bool
	// Labels, if set, are the labels (names or globs) an upload may
	// create; main is always allowed.
	Labels []string
	// Exempt are token names that no owner binds: the --dev token.
	Exempt []string
}

// whom names a token in a refusal: a trusted publisher by its name.
func whom(t auth.Token) string {
	if p, ok := strings.CutPrefix(t.Name, "oidc:"); ok {
		return fmt.Sprintf("trusted publisher %q", p)
	}
	return fmt.Sprintf("token %q", t.Name)
}

// errPackage is the refusal of a package name.
func errPackage(t auth.Token, name, why string) *Error {
	return &Error{Status: http.StatusForbidden, Reason: "package_forbidden",
		Msg: fmt.Sprintf("%s may not %s package %q", whom(t), why, name)}
}

// mayName checks that t may touch the package name: its packages
// patterns, for uploads and the admin calls alike.
func mayName(t auth.Token, name, verb string) error {
	if !owners.Match(t.Packages, name) {
		return errPackage(t, name, verb+" (not in its packages)")
	}
	return nil
}

// mayUpload is the check an upload makes once it knows the package name,
// from the filename before the body and again from info/index.json: the
// token's patterns, and the name's owners if it has any.
func (s *Server) mayUpload(t auth.Token, name string) error {
	if err := mayName(t, name, "publish"); err != nil {
		return err
	}
	o := s.o.Policy.Owners
	if o == nil || slices.Contains(s.o.Policy.Exempt, t.Name) || o.Owns(name, t.Name) {
		return nil
	}
	return errPackage(t, name, fmt.Sprintf("publish (owned by %s)", strings.Join(o.Of(name), ", ")))
}

// own is the publish step that binds the package name to its publisher:
// the label must be one an upload may create, the name one the token may
// publish, and with first-upload a name nobody owns is claimed, durably,
// before the package is stored. Of concurrent first uploads of a new
// name by different tokens, exactly one claims it; the others get 403.
func (s *Server) own(r *http.Request, pub *publication) error {
	if err := s.labelAllowed(pub.label); err != nil {
		return err
	}
	name, t := pub.in.fn.Name, pub.token
	if err := s.mayUpload(t, name); err != nil {
		return err
	}
	o := s.o.Policy.Owners
	if o == nil || !s.o.Policy.FirstUpload || slices.Contains(s.o.Policy.Exempt, t.Name) {
		return nil
	}
	got, claimed, err := o.Claim(name, t.Name)
	if err != nil {
		return fmt.Errorf("claim %s: %w", name, err)
	}
	if !slices.Contains(got, t.Name) {
		return errPackage(t, name, fmt.Sprintf("publish (owned by %s)", strings.Join(got, ", ")))
	}
	if claimed {
		s.auditClaim(r, pub, name)
	}
	return nil
}

// auditClaim records a claim before its package is stored, so that the
// owners rebuilt from the audit log own every package stored.
func (s *Server) auditClaim(r *http.Request, pub *publication, name string) {
	lf := pub.lf
	err := s.o.Observe.Audit.Record(audit.Record{Time: time.Now().UTC(), Remote: r.RemoteAddr, Token: lf.token, OIDC: lf.oidc,
		Call: owners.CallClaim, Package: name, To: pub.token.Name, Label: pub.label, Filename: lf.filename,
		Status: http.StatusOK, Result: "claimed"})
	if err != nil {
		s.o.Log.Error("audit record of a claim not written", "package", name, "err", err)
	}
	s.o.Log.Info("package name claimed", "package", name, "owner", pub.token.Name)
}

// labelAllowed checks [policy] labels: an upload may go to main, to a
// label that matches, or to one that exists already (made by an admin
// copy); any other label is not found, as an unknown channel is.
func (s *Server) labelAllowed(label string) error {
	pats := s.o.Policy.Labels
	if pats == nil || label == store.MainLabel || owners.Match(pats, label) {
		return nil
	}
	if fi, err := os.Stat(filepath.Join(s.o.Store.Root(), store.LabelDir, label)); err == nil && fi.IsDir() {
		return nil
	}
	return newError(http.StatusNotFound, fmt.Sprintf("label %q not found: the policy lets uploads create only %s", label, strings.Join(pats, ", ")))
}
