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

// Role groups endpoints, so that a listener can serve some of them: an
// operator may put downloads on an address of their own (listen_download,
// or a socket named "download").
type Role int

const (
	Uploads Role = 1 << iota
	Downloads
	Ops
	All = Uploads | Downloads | Ops
)

// endpoint is one method of a route.
type endpoint struct {
	h    handler
	role Role
}

// route is one entry of the route table.
type route struct {
	// pattern is an http.ServeMux pattern without a method.
	pattern string
	// methods maps each method the route serves to its endpoint.
	methods map[string]endpoint
}

// routes is the server's route table: every path the server answers, in
// one place. Methods are dispatched here rather than by ServeMux, so that
// a wrong method gets the same one-line JSON error as everything else.
func (s *Server) routes() []route {
	get := func(h handler, role Role) map[string]endpoint {
		return map[string]endpoint{http.MethodGet: {h, role}, http.MethodHead: {h, role}}
	}
	return []route{
		// The original's upload, multipart form with token and
		// artifact; GET is the channel's root listing.
		{pattern: "/{$}", methods: map[string]endpoint{
			http.MethodPost: {s.uploadForm, Uploads},
			http.MethodGet:  {s.download, Downloads}, http.MethodHead: {s.download, Downloads},
		}},
		// rattler-build and pixi: quetz, prefix.dev and Artifactory.
		{pattern: "/api/channels/{channel}/upload/{filename}", methods: map[string]endpoint{http.MethodPost: {s.quetzUpload, Uploads}}},
		{pattern: "/api/v1/upload/{channel}", methods: map[string]endpoint{http.MethodPost: {s.prefixUpload, Uploads}}},
		{pattern: "/{channel}/{subdir}/{filename}", methods: map[string]endpoint{
			http.MethodPut: {s.artifactoryUpload, Uploads},
			http.MethodGet: {s.download, Downloads}, http.MethodHead: {s.download, Downloads},
		}},
		{pattern: "/label/{label}/{subdir}/{filename}", methods: map[string]endpoint{
			http.MethodPut: {s.artifactoryUpload, Uploads},
			http.MethodGet: {s.download, Downloads}, http.MethodHead: {s.download, Downloads},
		}},
		// The admin API: labels, promotion, yanks, deletes, patches.
		{pattern: "/api/v1/packages/{label}/{subdir}", methods: s.admin(map[string]handler{
			http.MethodGet: s.listPackages, http.MethodHead: s.listPackages})},
		{pattern: "/api/v1/packages/{label}/{subdir}/{filename}", methods: s.admin(map[string]handler{
			http.MethodDelete: s.deletePackage})},
		{pattern: "/api/v1/packages/{label}/{subdir}/{filename}/{call}", methods: s.admin(map[string]handler{
			http.MethodPost: s.packageCall})},
		{pattern: "/api/v1/patches/{label}/{subdir}", methods: s.admin(map[string]handler{
			http.MethodGet: s.patches, http.MethodHead: s.patches, http.MethodPut: s.patches, http.MethodDelete: s.patches})},
		// Trusted publishing: rattler's endpoint, and PEP 807's.
		{pattern: "/api/oidc/mint_token", methods: map[string]endpoint{http.MethodPost: {s.mintToken, Uploads}}},
		{pattern: "/_/oidc/mint-token", methods: map[string]endpoint{http.MethodPost: {s.pepMintToken, Uploads}}},
		{pattern: "/_/oidc/audience", methods: get(s.audience, Uploads)},
		{pattern: "/healthz", methods: get(s.healthz, Ops)},
		{pattern: "/readyz", methods: get(s.readyz, Ops)},
		{pattern: "/metrics", methods: get(s.metrics, Ops)},
		// The channel: /<subdir>/, /<subdir>/<file>, /channeldata.json.
		{pattern: "/", methods: get(s.download, Downloads)},
	}
}

// admin gives the admin API's handlers the Uploads role, or none when
// the server has no lifecycle manager (the route then answers 404).
func (s *Server) admin(hs map[string]handler) map[string]endpoint {
	eps := map[string]endpoint{}
	if s.o.Lifecycle == nil {
		return eps
	}
	for m, h := range hs {
		eps[m] = endpoint{h, Uploads}
	}
	return eps
}

// mux builds the ServeMux of the route table's endpoints of roles.
func (s *Server) mux(roles Role) *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		methods := map[string]endpoint{}
		for m, ep := range rt.methods {
			if ep.role&roles != 0 {
				methods[m] = ep
			}
		}
		allow := slices.Sorted(func(yield func(string) bool) {
			for m := range methods {
				if !yield(m) {
					return
				}
			}
		})
		mux.Handle(rt.pattern, s.handle(func(w http.ResponseWriter, r *http.Request) (*Result, error) {
			ep, ok := methods[r.Method]
			switch {
			case ok:
				return ep.h(w, r)
			case len(methods) == 0 || (rt.pattern == "/" && !s.downloads()):
				return nil, errNotFound
			}
			w.Header().Set("Allow", strings.Join(allow, ", "))
			return nil, methodNotAllowed(strings.Join(allow, " or "))
		}))
	}
	return mux
}
