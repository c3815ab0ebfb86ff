package web

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/proxy"
)

// The upstream channels this server proxies ([[upstreams]]) have a page
// each, at a browser's /proxy/<name>/: a path the proxy itself never
// serves, since its files are at /proxy/<name>/<subdir>/<file>. What the
// page shows of an upstream is what `admin proxy status` shows (Status)
// and the cache's bookkeeping (Cached), both in memory. An upstream's
// failure text and the filenames it listed are hostile: the filenames
// passed the checks of an upload, and everything is clipped and escaped.

// maxError bounds an upstream's failure as a page shows it.
const maxError = 500

// upstreamHref is an upstream's page.
func upstreamHref(name string) string { return "/proxy/" + name + "/" }

// upstreamOf returns the name of the upstream whose page p is, if it is
// one: "/proxy/<name>/".
func upstreamOf(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, "/proxy/")
	name, ok2 := strings.CutSuffix(rest, "/")
	return name, ok && ok2 && name != "" && !strings.Contains(name, "/")
}

// upstream returns the upstream of that name and its status, if the
// request may see it: a token limited to subdirs sees an upstream's
// cached packages of those, and one limited to labels other than main
// sees no upstream, since the page is of its channel root.
func (rq *request) upstream(name string) (*proxy.Proxy, proxy.Status, bool) {
	for _, p := range rq.u.o.Upstreams {
		if p.Name() == name {
			st := p.Status()
			return p, st, rq.seesUpstream(st)
		}
	}
	return nil, proxy.Status{}, false
}

// seesUpstream reports whether the request may see the upstream of st:
// whether one of its subdirs is one the request's token reads.
func (rq *request) seesUpstream(st proxy.Status) bool {
	return slices.ContainsFunc(st.Subdirs, rq.allowsUpstream)
}

func (rq *request) allowsUpstream(subdir string) bool {
	return rq.acc.allows(dirInfo{label: mainLabel, subdir: subdir})
}

// cached lists the packages of p's cache the request sees: a limited
// token, those of its subdirs that the upstream's channel root was seen
// to list (the cache serves every label from one file).
func (rq *request) cached(p *proxy.Proxy) []proxy.Cached {
	all := p.Cached()
	if rq.acc.unrestricted() {
		return all
	}
	return slices.DeleteFunc(all, func(c proxy.Cached) bool {
		return !rq.allowsUpstream(c.Subdir) || !slices.Contains(c.Labels, "")
	})
}

// upstreamRow is an upstream in the home page's list.
type upstreamRow struct {
	Name, Href, URL, Mode string
	Reachable             bool
	Packages              int
	Bytes                 int64
}

// upstreamRows lists the upstreams the request sees, as configured.
func (rq *request) upstreamRows() []upstreamRow {
	var out []upstreamRow
	for _, p := range rq.u.o.Upstreams {
		st := p.Status()
		if !rq.seesUpstream(st) {
			continue
		}
		r := upstreamRow{Name: clip(st.Name, maxText), Href: upstreamHref(st.Name), URL: clip(st.URL, maxURL), Mode: st.Mode,
			Reachable: st.Reachable, Packages: st.CachedPackages, Bytes: st.CachedBytes}
		if !rq.acc.unrestricted() {
			r.Packages, r.Bytes = sizes(rq.cached(p))
		}
		out = append(out, r)
	}
	return out
}

func sizes(cs []proxy.Cached) (int, int64) {
	var b int64
	for _, c := range cs {
		b += c.Size
	}
	return len(cs), b
}

// cachedRow is a cached package in the upstream page's list.
type cachedRow struct {
	Name, Filename, Subdir, Href string
	Size                         int64
	Used                         time.Time
}

// upstreamData is an upstream's page.
type upstreamData struct {
	Name, URL, Link, Mode     string
	Mirror                    bool
	Subdirs, Include, Exclude []string
	// State is "ok" (the upstream answered the last fetch), "unknown"
	// (nothing fetched since the start) or "down".
	State, Failure   string
	Since            *time.Time
	Confirmed        *time.Time
	IndexAge, TTL    string
	LastSync         *time.Time
	SyncError        string
	Packages         int
	Bytes, CacheSize int64
	Cached           []cachedRow
	Pager            pager
	ChannelURL       string
	Install          []command
}

// upstreamPage serves an upstream's page.
func (rq *request) upstreamPage(w http.ResponseWriter, name string) error {
	p, st, ok := rq.upstream(name)
	if !ok {
		return ErrNotFound
	}
	d := upstreamData{Name: clip(st.Name, maxText), URL: clip(st.URL, maxURL), Link: link(st.URL), Mode: st.Mode, Mirror: st.Mode == "mirror",
		Include: clipAll(st.Include), Exclude: clipAll(st.Exclude), Failure: clip(st.Failure, maxError), Since: st.UnreachableSince,
		Confirmed: st.IndexConfirmed, TTL: ago(time.Duration(st.IndexTTL * float64(time.Second))), LastSync: st.LastSync,
		SyncError: clip(st.SyncError, maxError), CacheSize: st.CacheSize}
	d.Subdirs = slices.DeleteFunc(slices.Clone(st.Subdirs), func(s string) bool { return !rq.allowsUpstream(s) })
	d.State = upstreamState(st)
	if st.IndexConfirmed != nil {
		d.IndexAge = ago(time.Since(*st.IndexConfirmed))
	}
	cached := rq.cached(p)
	d.Packages, d.Bytes = sizes(cached)
	var lo, hi int
	d.Pager, lo, hi = rq.pager(len(cached), "")
	for _, c := range cached[lo:hi] {
		pkg, _ := condapkg.ParseFilename(c.Filename)
		d.Cached = append(d.Cached, cachedRow{Name: pkg.Name, Filename: c.Filename, Subdir: c.Subdir,
			Href: upstreamHref(st.Name) + c.Subdir + "/" + c.Filename, Size: c.Size, Used: c.Used.UTC()})
	}
	d.ChannelURL = rq.channelURL("") + upstreamHref(st.Name)
	d.Install = append([]command{{Tool: "~/.condarc", ID: "install-condarc", Lines: []string{"channels:", "  - " + d.ChannelURL}}},
		rq.installFrom(d.ChannelURL, "<package>")...)
	return rq.render(w, "upstream", "Upstream "+d.Name, d)
}

func upstreamState(st proxy.Status) string {
	switch {
	case !st.Reachable:
		return "down"
	case st.IndexConfirmed == nil && st.LastSync == nil:
		return "unknown"
	}
	return "ok"
}

func clipAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = clip(s, maxText)
	}
	return out
}

// ago says a duration the way a person reads it: "40 s", "5 min", "3 h",
// "2 days".
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h", int(d.Hours()))
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}
