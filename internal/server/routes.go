package server

import (
	"net/http"
	"slices"
	"strings"
)

// A handler serves one route. It returns the response to send, or an
// error that errorOf turns into one; an upload whose package was stored
// but not indexed returns both.
type handler func(w http.ResponseWriter, r *http.Request) (*Result, error)

// Result is a successful response: a status and a body sent as one line
// of JSON.
type Result struct {
	Status int
	Body   any
}

// handled is the Result of a handler that wrote its own response.
var handled = &Result{}

// route is one entry of the route table.
type route struct {
	// pattern is an http.ServeMux pattern without a method.
	pattern string
	// methods maps each method the route serves to its handler.
	methods map[string]handler
	// upload routes count as uploads in metrics and the audit log.
	upload bool
}

// routes is the server's route table: every path the server answers, in
// one place. Methods are dispatched here rather than by ServeMux, so that
// a wrong method gets the same one-line JSON error as everything else.
func (s *Server) routes() []route {
	getHead := func(h handler) map[string]handler {
		return map[string]handler{http.MethodGet: h, http.MethodHead: h}
	}
	return []route{
		// The original's upload: multipart form with token and artifact.
		{pattern: "/{$}", methods: map[string]handler{http.MethodPost: s.uploadForm}, upload: true},
		{pattern: "/healthz", methods: getHead(s.healthz)},
		{pattern: "/readyz", methods: getHead(s.readyz)},
		{pattern: "/metrics", methods: getHead(s.metrics)},
		{pattern: "/", methods: nil},
	}
}

// mux builds the ServeMux of the route table.
func (s *Server) mux() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		allow := slices.Sorted(func(yield func(string) bool) {
			for m := range rt.methods {
				if !yield(m) {
					return
				}
			}
		})
		mux.Handle(rt.pattern, s.handle(rt, func(w http.ResponseWriter, r *http.Request) (*Result, error) {
			if rt.methods == nil {
				return nil, errNotFound
			}
			h, ok := rt.methods[r.Method]
			if !ok {
				w.Header().Set("Allow", strings.Join(allow, ", "))
				return nil, methodNotAllowed(strings.Join(allow, " or "))
			}
			return h(w, r)
		}))
	}
	return mux
}
