package server

import (
	"fmt"
	"net/http"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/retention"
)

// retention: GET /api/v1/retention lists what a retention pass would
// remove now, and why (scope read); POST runs the pass (scope delete, with
// a token limited to no label or subdir, since a pass covers them all).
// Each file removed is audited on its own, as the call "retention".
func (s *Server) retention(w http.ResponseWriter, r *http.Request) (*Result, error) {
	dry := r.Method == http.MethodGet || r.Method == http.MethodHead
	scope := auth.ScopeRead
	if !dry {
		scope = auth.ScopeDelete
		fieldsOf(r).call = "retention"
		if s.draining.Load() {
			return nil, errShuttingDown
		}
	}
	t, err := s.authorize(r, scope)
	if err != nil {
		return nil, err
	}
	if !dry && (len(t.Labels) > 0 || len(t.Subdirs) > 0) {
		return nil, newError(http.StatusForbidden, fmt.Sprintf("token %q is limited to some labels or subdirs; a retention pass covers them all", t.Name))
	}
	removals := []retention.Removal{}
	if p := s.o.Retention; p != nil {
		var done []retention.Removal
		if dry {
			done, err = p.Plan()
		} else {
			done, err = p.Prune()
		}
		removals = append(removals, done...)
	}
	if err != nil {
		return nil, err
	}
	return &Result{Status: http.StatusOK, Body: map[string]any{"dry_run": dry, "removals": removals, "status": http.StatusOK}}, nil
}
