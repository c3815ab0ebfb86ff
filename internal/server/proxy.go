package server

import (
	"net/http"
	"strings"
)

// proxied serves /proxy/<name>/<subdir>/<file> and
// /proxy/<name>/label/<label>/<subdir>/<file>: an upstream channel,
// read-only, under the local channel's access rules (a token with the
// read scope when downloads need one, the /t/<token>/ form) and download
// slots. Any other method is a 405 from the route table.
func (s *Server) proxied(w http.ResponseWriter, r *http.Request) (*Result, error) {
	p, ok := s.o.Channel.Proxies[r.PathValue("name")]
	if !s.downloads() || !ok {
		return nil, newError(http.StatusNotFound, "not found: no upstream channel of that name")
	}
	w, release, err := s.admitDownload(w, r)
	if err != nil {
		return nil, err
	}
	defer release()
	rel := strings.TrimPrefix(r.URL.Path, "/proxy/"+p.Name()+"/")
	if err := p.Serve(w, r, rel); err != nil {
		return nil, err
	}
	return handled, nil
}
