package server

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/proxy"
)

// proxied serves /proxy/<name>/<subdir>/<file> and
// /proxy/<name>/label/<label>/<subdir>/<file>, and the channeldata.json
// of each: an upstream channel,
// read-only, under the local channel's access rules (a token with the
// read scope when downloads need one, the /t/<token>/ form) and download
// slots. Any other method is a 405 from the route table. The token is
// checked before the name, so that a private channel does not tell who
// has no token which upstreams it has.
func (s *Server) proxied(w http.ResponseWriter, r *http.Request) (*Result, error) {
	if !s.downloads() {
		return nil, errNotFound
	}
	w, release, err := s.admitDownload(w, r)
	if err != nil {
		return nil, err
	}
	defer release()
	p, ok := s.o.Channel.Proxies[r.PathValue("name")]
	if !ok {
		return nil, newError(http.StatusNotFound, "not found: no upstream channel of that name")
	}
	rel := strings.TrimPrefix(r.URL.Path, "/proxy/"+p.Name()+"/")
	if err := p.Serve(w, r, rel); err != nil {
		return nil, err
	}
	return handled, nil
}

// proxyStatus lists the upstreams, whether each can be reached, and
// what their caches hold (scope read, from a token limited to no label
// or subdir: the list spans them all).
func (s *Server) proxyStatus(w http.ResponseWriter, r *http.Request) (*Result, error) {
	t, err := s.authorize(r, auth.ScopeRead)
	if err != nil {
		return nil, err
	}
	if len(t.Labels) > 0 || len(t.Subdirs) > 0 {
		return nil, newError(http.StatusForbidden, fmt.Sprintf("token %q may not read the upstreams' status, which spans labels and subdirs", t.Name))
	}
	list := []proxy.Status{}
	for _, name := range slices.Sorted(maps.Keys(s.o.Channel.Proxies)) {
		list = append(list, s.o.Channel.Proxies[name].Status())
	}
	return &Result{Status: http.StatusOK, Body: map[string]any{"upstreams": list}}, nil
}

// proxyPurge empties an upstream's cache (scope delete).
func (s *Server) proxyPurge(w http.ResponseWriter, r *http.Request) (*Result, error) {
	if _, err := s.authorize(r, auth.ScopeDelete); err != nil {
		return nil, err
	}
	p, ok := s.o.Channel.Proxies[r.PathValue("name")]
	if !ok {
		return nil, newError(http.StatusNotFound, "not found: no upstream channel of that name")
	}
	if err := p.Purge(); err != nil {
		return nil, err
	}
	return &Result{Status: http.StatusOK, Body: map[string]any{"purged": p.Name()}}, nil
}
