package server

import (
	"maps"
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

// routeKind is what an endpoint is. It decides the listener role that serves
// it and what handle records of its requests besides the log line, so
// that a route's nature is known in one place, its entry in the table.
type routeKind int

// The zero routeKind is none: a table entry that forgot its kind, which
// TestRouteKinds refuses.
const (
	// kindUpload: an upload protocol. Every attempt, refused or not, goes
	// to the upload counters and metrics and gets an audit record.
	kindUpload routeKind = iota + 1
	// kindAdmin: the admin API. A call that changes something gets an
	// audit record.
	kindAdmin
	// kindMint: trusted publishing's token endpoints. Logged only; the
	// uploads made with a minted token are audited with the job's
	// identity.
	kindMint
	// kindDownload: the channel, counted in the download metrics.
	kindDownload
	// kindOps: health, readiness and metrics. Logged only.
	kindOps
)

// role is the listener role that serves endpoints of kind k.
func (k routeKind) role() Role {
	switch k {
	case kindUpload, kindAdmin, kindMint:
		return Uploads
	case kindDownload:
		return Downloads
	case kindOps:
		return Ops
	}
	return 0
}

// endpoint is one method of a route.
type endpoint struct {
	h    handler
	kind routeKind
}

// route is one entry of the route table.
type route struct {
	// pattern is an http.ServeMux pattern without a method.
	pattern string
	// kind is what the route is for: the kind of a request with a
	// method the route does not serve (a 405, or a 404 when it serves
	// none).
	kind routeKind
	// methods maps each method the route serves to its endpoint.
	methods map[string]endpoint
}

// routes is the server's route table: every path the server answers, in
// one place, with the kind of each endpoint. Methods are dispatched here
// rather than by ServeMux, so that a wrong method gets the same one-line
// JSON error as everything else.
func (s *Server) routes() []route {
	get := func(h handler, kind routeKind) map[string]endpoint {
		return map[string]endpoint{http.MethodGet: {h, kind}, http.MethodHead: {h, kind}}
	}
	return []route{
		// The original's upload, multipart form with token and
		// artifact; GET is the channel's root listing.
		{pattern: "/{$}", kind: kindUpload, methods: map[string]endpoint{
			http.MethodPost: {s.uploadForm, kindUpload},
			http.MethodGet:  {s.download, kindDownload}, http.MethodHead: {s.download, kindDownload},
		}},
		// rattler-build and pixi: quetz, prefix.dev and Artifactory.
		{pattern: "/api/channels/{channel}/upload/{filename}", kind: kindUpload, methods: map[string]endpoint{
			http.MethodPost: {s.quetzUpload, kindUpload}}},
		{pattern: "/api/v1/upload/{channel}", kind: kindUpload, methods: map[string]endpoint{
			http.MethodPost: {s.prefixUpload, kindUpload}}},
		{pattern: "/{channel}/{subdir}/{filename}", kind: kindUpload, methods: map[string]endpoint{
			http.MethodPut: {s.artifactoryUpload, kindUpload},
			http.MethodGet: {s.download, kindDownload}, http.MethodHead: {s.download, kindDownload},
		}},
		{pattern: "/label/{label}/{subdir}/{filename}", kind: kindUpload, methods: map[string]endpoint{
			http.MethodPut: {s.artifactoryUpload, kindUpload},
			http.MethodGet: {s.download, kindDownload}, http.MethodHead: {s.download, kindDownload},
		}},
		// The admin API: labels, promotion, yanks, deletes, patches.
		{pattern: "/api/v1/packages/{label}/{subdir}", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodGet: s.listPackages, http.MethodHead: s.listPackages})},
		{pattern: "/api/v1/packages/{label}/{subdir}/{filename}", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodDelete: s.deletePackage})},
		{pattern: "/api/v1/packages/{label}/{subdir}/{filename}/{call}", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodPost: s.packageCall})},
		{pattern: "/api/v1/attestations/{label}/{subdir}/{filename}", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodPost: s.attestations})},
		{pattern: "/api/v1/patches/{label}/{subdir}", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodGet: s.patches, http.MethodHead: s.patches, http.MethodPut: s.patches, http.MethodDelete: s.patches})},
		{pattern: "/api/v1/proxy", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodGet: s.proxyStatus, http.MethodHead: s.proxyStatus})},
		{pattern: "/api/v1/proxy/{name}/purge", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodPost: s.proxyPurge})},
		{pattern: "/api/v1/retention", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodGet: s.retention, http.MethodHead: s.retention, http.MethodPost: s.retention})},
		{pattern: "/api/v1/quotas", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodGet: s.quotas, http.MethodHead: s.quotas})},
		// Package owners: list, add, remove, transfer.
		{pattern: "/api/v1/owners", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodGet: s.listOwners, http.MethodHead: s.listOwners})},
		{pattern: "/api/v1/owners/{package}", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodGet: s.listOwners, http.MethodHead: s.listOwners})},
		{pattern: "/api/v1/owners/{package}/{call}", kind: kindAdmin, methods: s.admin(map[string]handler{
			http.MethodPost: s.ownersCall})},
		// Trusted publishing: rattler's endpoint, and PEP 807's.
		{pattern: "/api/oidc/mint_token", kind: kindMint, methods: map[string]endpoint{http.MethodPost: {s.mintToken, kindMint}}},
		{pattern: "/_/oidc/mint-token", kind: kindMint, methods: map[string]endpoint{http.MethodPost: {s.pepMintToken, kindMint}}},
		{pattern: "/_/oidc/audience", kind: kindMint, methods: get(s.audience, kindMint)},
		// Upstream channels, read-only: /proxy/<name>/... (proxy.go).
		{pattern: "/proxy/{name}/{subdir}/{filename}", kind: kindDownload, methods: get(s.proxied, kindDownload)},
		{pattern: "/proxy/{name}/label/{label}/{subdir}/{filename}", kind: kindDownload, methods: get(s.proxied, kindDownload)},
		{pattern: "/proxy/{name}/channeldata.json", kind: kindDownload, methods: get(s.proxied, kindDownload)},
		{pattern: "/proxy/{name}/label/{label}/channeldata.json", kind: kindDownload, methods: get(s.proxied, kindDownload)},
		// An upstream's page, for a browser ([ui]); download hands it to
		// internal/web, and answers anything else 404.
		{pattern: "/proxy/{name}/{$}", kind: kindDownload, methods: get(s.download, kindDownload)},
		{pattern: "/healthz", kind: kindOps, methods: get(s.healthz, kindOps)},
		{pattern: "/readyz", kind: kindOps, methods: get(s.readyz, kindOps)},
		{pattern: "/metrics", kind: kindOps, methods: get(s.metrics, kindOps)},
		// The channel's pages and download counts ([ui]), which download
		// hands to internal/web; a browser's / and listings too.
		{pattern: "/packages/{name}", kind: kindDownload, methods: get(s.download, kindDownload)},
		{pattern: "/static/{file}", kind: kindDownload, methods: get(s.download, kindDownload)},
		{pattern: "/api/v1/stats", kind: kindDownload, methods: get(s.download, kindDownload)},
		{pattern: "/api/v1/stats/packages/{name}", kind: kindDownload, methods: get(s.download, kindDownload)},
		{pattern: "/api/v1/stats/files/{subdir}/{filename}", kind: kindDownload, methods: get(s.download, kindDownload)},
		// The channel: /<subdir>/, /<subdir>/<file>, /channeldata.json.
		{pattern: "/", kind: kindDownload, methods: get(s.download, kindDownload)},
	}
}

// admin gives the admin API's handlers their kind, or none when the
// server has no lifecycle manager (the route then answers 404).
func (s *Server) admin(hs map[string]handler) map[string]endpoint {
	eps := map[string]endpoint{}
	if s.o.Lifecycle == nil {
		return eps
	}
	for m, h := range hs {
		eps[m] = endpoint{h, kindAdmin}
	}
	return eps
}

// mux builds the ServeMux of the route table's endpoints of roles. Each
// endpoint is wrapped by handle once, with its kind.
func (s *Server) mux(roles Role) *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		methods := map[string]http.Handler{}
		for m, ep := range rt.methods {
			if ep.kind.role()&roles != 0 {
				methods[m] = s.handle(ep.kind, ep.h)
			}
		}
		miss := s.handle(rt.kind, s.refuseMethod(rt.pattern, slices.Sorted(maps.Keys(methods))))
		tokenMiss := s.refuseTokenRoute(rt.kind)
		mux.Handle(rt.pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h, ok := methods[r.Method]
			switch {
			case tokenRouteRefused(r, rt.methods[r.Method].kind, ok):
				tokenMiss.ServeHTTP(w, r)
				return
			case ok:
				h.ServeHTTP(w, r)
				return
			}
			miss.ServeHTTP(w, r)
		}))
	}
	return mux
}

// refuseMethod answers a method a route does not serve: 405 with Allow,
// or 404 if it serves none here.
func (s *Server) refuseMethod(pattern string, allow []string) handler {
	return func(w http.ResponseWriter, r *http.Request) (*Result, error) {
		if len(allow) == 0 || (pattern == "/" && !s.downloads()) {
			return nil, errNotFound
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		return nil, methodNotAllowed(strings.Join(allow, " or "))
	}
}
