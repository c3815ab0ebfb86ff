// Package web renders the channel's pages for people: the channel home
// with search and recent uploads, package pages, label and subdir pages,
// and the download counts as JSON for scripts.
//
// Pages are rendered on the server with html/template from what the
// indexer already holds (Source), so that a page never reads a package;
// the model is rebuilt only after an index run. Assets are embedded; the
// pages need no script (one small file adds copy buttons), so a strict
// Content-Security-Policy holds: nothing but the server's own style
// sheet, images and that one script may load, and nothing inline runs.
//
// Every string that comes from a package is hostile: the templates
// escape it, clip bounds its length and drops the characters that
// reorder text, and link keeps only http and https URLs. Access is
// decided by the caller (the server's [download] access rules); Access
// then limits what a token's pages show to its labels and subdirs. No
// token is ever written into a page: a private channel's install
// command shows a <TOKEN> placeholder.
package web

import (
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/proxy"
	"github.com/conda-upload-server/conda-upload-server/internal/stats"
)

// ErrNotFound is returned for a path the pages do not have.
var ErrNotFound = errors.New("no such page")

// BadRequest is a request the pages refuse, having written nothing; its
// text is one line, safe to send to the client.
type BadRequest string

func (e BadRequest) Error() string { return string(e) }

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// CSP is the pages' Content-Security-Policy.
const CSP = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Options configures the pages.
type Options struct {
	Source Source
	// Stats, if not nil, gives download counts.
	Stats *stats.Counter
	// Yanks, if not nil, returns the yank reasons of a directory's
	// packages by filename.
	Yanks func(dir string) map[string]string
	// Owners, if not nil, returns the owners of a package name: token
	// names and "oidc:<publisher>", never a token.
	Owners func(name string) []string
	// AttestMode is what the server does with attestations ([attestations]
	// verify): "verify", each verified when accepted; "store", kept as
	// sent; "off", none accepted. The package page says which, since a
	// stored attestation proves nothing unless it was verified.
	AttestMode string
	// Signers, if not nil, returns who each attestation of filename in dir
	// (below the channel root) names, in order, from its <file>.sigs. It is
	// called only for the files a page shows whose record names a sidecar,
	// so a page reads at most one bounded file per row.
	Signers func(dir, filename string) []string
	// Upstreams are the channels the server proxies ([[upstreams]]), in
	// the order the home page lists them; each has a page.
	Upstreams []*proxy.Proxy
	// BaseURL is the channel's public URL (https://host[:port]), for
	// install commands; if empty, it is taken from the request.
	BaseURL string
	// Private says the channel needs a read token, which install
	// commands then show as a placeholder.
	Private bool
	Version string
	Logger  *slog.Logger
}

// Access limits what a request's pages show: the labels and subdirs of
// its token. Empty lists allow everything.
type Access struct {
	Labels, Subdirs []string
}

func (a Access) allows(d dirInfo) bool {
	return (len(a.Labels) == 0 || slices.Contains(a.Labels, d.label)) &&
		(len(a.Subdirs) == 0 || slices.Contains(a.Subdirs, d.subdir))
}

func (a Access) unrestricted() bool { return len(a.Labels) == 0 && len(a.Subdirs) == 0 }

// UI serves the pages.
type UI struct {
	o    Options
	cat  *catalog
	tmpl map[string]*template.Template
}

// New parses the templates and returns the pages of o.Source.
func New(o Options) (*UI, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	u := &UI{o: o, cat: &catalog{src: o.Source}, tmpl: map[string]*template.Template{}}
	for _, page := range []string{"home", "package", "dir", "upstream"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+page+".html")
		if err != nil {
			return nil, err
		}
		u.tmpl[page] = t
	}
	return u, nil
}

// Wants reports whether a request is a browser's for a page: a GET or
// HEAD that accepts text/html, of the channel's root, a label, a subdir
// listing, an upstream's root (/proxy/<name>/), or a path only the pages
// have. Clients that fetch index files
// and packages never send Accept: text/html for them, and curl's
// listings stay plain.
func Wants(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	if Owns(p) {
		return true
	}
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		return false
	}
	// A listing (and an upstream's root) ends in "/" and a file does not;
	// what comes before the last "/" may hold dots, as a label's name
	// (/label/rc.1/) and an upstream's do.
	return strings.HasSuffix(p, "/")
}

// Owns reports whether path is one only the pages serve, whatever the
// client accepts.
func Owns(path string) bool {
	return strings.HasPrefix(path, "/packages/") || strings.HasPrefix(path, "/static/") ||
		path == "/api/v1/stats" || strings.HasPrefix(path, "/api/v1/stats/")
}

// Serve answers a page request that Wants or Owns, for a caller whose
// access has been checked. It returns ErrNotFound, having written
// nothing, for a path that is not a page.
func (u *UI) Serve(w http.ResponseWriter, r *http.Request, acc Access) error {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/static/"):
		return u.static(w, r, strings.TrimPrefix(p, "/static/"))
	case p == "/api/v1/stats" || strings.HasPrefix(p, "/api/v1/stats/"):
		return u.statsJSON(w, r, acc, strings.TrimPrefix(strings.TrimPrefix(p, "/api/v1/stats"), "/"))
	}
	security(w.Header(), u.o.Private)
	m := u.cat.get()
	rq := &request{u: u, m: m, r: r, acc: acc}
	switch {
	case p == "/" || p == "/label/":
		return rq.home(w)
	case strings.HasPrefix(p, "/packages/"):
		return rq.pkg(w, strings.TrimPrefix(p, "/packages/"))
	}
	if name, ok := upstreamOf(p); ok {
		return rq.upstreamPage(w, name)
	}
	return rq.dir(w, strings.Trim(p, "/"))
}

// security sets the headers every page has.
func security(h http.Header, private bool) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Vary", "Accept, Authorization")
	if private {
		h.Set("Cache-Control", "private, no-cache")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
}

// static serves an embedded asset.
func (u *UI) static(w http.ResponseWriter, r *http.Request, name string) error {
	b, err := fs.ReadFile(staticFS, "static/"+name)
	if err != nil || strings.Contains(name, "/") {
		return ErrNotFound
	}
	h := w.Header()
	security(h, false)
	switch {
	case strings.HasSuffix(name, ".css"):
		h.Set("Content-Type", "text/css; charset=utf-8")
	case strings.HasSuffix(name, ".js"):
		h.Set("Content-Type", "text/javascript; charset=utf-8")
	case strings.HasSuffix(name, ".svg"):
		h.Set("Content-Type", "image/svg+xml")
	default:
		return ErrNotFound
	}
	h.Set("Cache-Control", "public, max-age=3600")
	if r.Method != http.MethodHead {
		w.Write(b)
	}
	return nil
}
