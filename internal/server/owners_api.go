package server

import (
	"fmt"
	"net/http"
	"regexp"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/owners"
)

// The admin API of package owners, with its own scope: list, add, remove,
// transfer. Every change is written to owners.json before the answer and
// audited with the package name and the owner, from which owners.json
// can be rebuilt.

// packageName is a conda package name as the owners API takes it (see
// package owners): lowercase ASCII.
var packageName = regexp.MustCompile(`^[a-z0-9_][a-z0-9._-]{0,127}$`)

// ownerName is a token name, or oidc:<publisher>.
var ownerName = regexp.MustCompile(`^[A-Za-z0-9_.:@+-]{1,128}$`)

// ownersToken authenticates a call of the owners API, and checks that the
// token may touch the package named, if any.
func (s *Server) ownersToken(r *http.Request) (auth.Token, string, error) {
	if s.draining.Load() {
		return auth.Token{}, "", errShuttingDown
	}
	if s.o.Policy.Owners == nil {
		return auth.Token{}, "", errNotFound
	}
	name := r.PathValue("package")
	if name != "" && !packageName.MatchString(name) {
		return auth.Token{}, "", newError(http.StatusBadRequest, fmt.Sprintf("%q is not a conda package name (lowercase a-z, 0-9, '.', '_', '-')", oneLine(name)))
	}
	t, err := s.authorize(r, auth.ScopeOwners)
	if err != nil {
		return t, "", err
	}
	if name != "" {
		if err := mayName(t, name, "change the owners of"); err != nil {
			return auth.Token{}, "", err
		}
	}
	return t, name, nil
}

// listOwners: GET /api/v1/owners and GET /api/v1/owners/{package}.
func (s *Server) listOwners(w http.ResponseWriter, r *http.Request) (*Result, error) {
	t, name, err := s.ownersToken(r)
	if err != nil {
		return nil, err
	}
	if name != "" {
		return &Result{Status: http.StatusOK, Body: map[string]any{"name": owners.Fold(name), "owners": s.o.Policy.Owners.Of(name), "status": http.StatusOK}}, nil
	}
	var out []owners.Owned
	for _, o := range s.o.Policy.Owners.List() {
		if owners.Match(t.Packages, o.Name) {
			out = append(out, o)
		}
	}
	return &Result{Status: http.StatusOK, Body: map[string]any{"packages": out, "status": http.StatusOK}}, nil
}

// ownersCall: POST /api/v1/owners/{package}/{call} {"owner": "<name>"},
// call being add, remove or transfer.
func (s *Server) ownersCall(w http.ResponseWriter, r *http.Request) (*Result, error) {
	lf := fieldsOf(r)
	calls := map[string]string{"add": owners.CallAdd, "remove": owners.CallRemove, "transfer": owners.CallTransfer}
	call, ok := calls[r.PathValue("call")]
	if !ok {
		return nil, newError(http.StatusNotFound, fmt.Sprintf("no call %q; use add, remove or transfer", oneLine(r.PathValue("call"))))
	}
	lf.call = call
	_, name, err := s.ownersToken(r)
	if err != nil {
		return nil, err
	}
	lf.pkg = name
	var body struct {
		Owner string `json:"owner"`
	}
	if _, err := readJSON(w, r, maxAdminBody, &body); err != nil {
		return nil, err
	}
	if !ownerName.MatchString(body.Owner) {
		return nil, newError(http.StatusBadRequest, `the body must name the owner, a token name or oidc:<publisher>: {"owner": "<name>"}`)
	}
	lf.to = body.Owner
	got, changed, err := s.o.Policy.Owners.Change(owners.Event{Call: call, Name: name, Owner: body.Owner})
	if err != nil {
		return nil, err
	}
	if changed {
		s.o.Log.Warn("package owners changed", "package", name, "call", call, "owner", body.Owner, "token", lf.token)
	}
	return &Result{Status: http.StatusOK, Body: map[string]any{"name": owners.Fold(name), "owners": got, "changed": changed, "status": http.StatusOK}}, nil
}

// mayChange checks that an admin call on a package (copy, move, yank,
// unyank, delete) is on a name the token may touch.
func mayChange(t auth.Token, filename string) error {
	fn, err := condapkg.ParseFilename(filename)
	if err != nil || filename == "" {
		return nil // no package named: adminPath has checked the filename
	}
	return mayName(t, fn.Name, "change")
}
