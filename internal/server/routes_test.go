package server

import (
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
)

// TestRouteKinds: every route of the table, and every endpoint of it,
// has a kind, and so a role and a way of being recorded. A route added
// without one fails here.
func TestRouteKinds(t *testing.T) {
	s := New(Options{Lifecycle: lifecycle.New(nil)})
	for _, rt := range s.routes() {
		if rt.kind.role() == 0 {
			t.Errorf("route %s has no kind", rt.pattern)
		}
		if len(rt.methods) == 0 {
			t.Errorf("route %s serves no method", rt.pattern)
		}
		for m, ep := range rt.methods {
			if ep.kind.role() == 0 {
				t.Errorf("%s %s has no kind", m, rt.pattern)
			}
			if ep.h == nil {
				t.Errorf("%s %s has no handler", m, rt.pattern)
			}
		}
	}
}
