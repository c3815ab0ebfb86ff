package web

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/stats"
)

const (
	pageSize    = 50
	recentCount = 15
	activity    = 90 // days
)

// request is one page being built.
type request struct {
	u   *UI
	m   *model
	r   *http.Request
	acc Access
}

// layout is what every page has.
type layout struct {
	Title   string
	Version string
	Base    string
	Private bool
}

// render executes page's template into a buffer first, so that an error
// sends a clean error response rather than half a page.
func (rq *request) render(w http.ResponseWriter, page, title string, data any) error {
	var buf bytes.Buffer
	err := rq.u.tmpl[page].Execute(&buf, struct {
		L layout
		D any
	}{layout{Title: title, Version: rq.u.o.Version, Base: rq.base(), Private: rq.u.o.Private}, data})
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	if rq.r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
	return nil
}

// base is the channel's public URL, without a trailing slash.
func (rq *request) base() string {
	if rq.u.o.BaseURL != "" {
		return strings.TrimSuffix(rq.u.o.BaseURL, "/")
	}
	scheme := "https"
	if rq.r.TLS == nil {
		scheme = "http"
	}
	return scheme + "://" + clip(rq.r.Host, 255)
}

// channelURL is what a client is given for label: the private form has
// a placeholder where the token goes.
func (rq *request) channelURL(label string) string {
	u := rq.base()
	if rq.u.o.Private {
		u += "/t/<TOKEN>"
	}
	if label != "" && label != mainLabel {
		u += "/label/" + label
	}
	return u
}

// visible reports whether the request may see f.
func (rq *request) visible(f *file) bool { return rq.acc.allows(rq.m.dirs[f.dir]) }

// page returns the ?page= number, from 1.
func (rq *request) page() int {
	n, err := strconv.Atoi(rq.r.URL.Query().Get("page"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// pager is a page of a list and the links around it.
type pager struct {
	Page, Pages, Total int
	Prev, Next         string
}

func (rq *request) pager(total int, extra string) (pager, int, int) {
	p := pager{Page: rq.page(), Total: total, Pages: max(1, (total+pageSize-1)/pageSize)}
	p.Page = min(p.Page, p.Pages)
	link := func(n int) string {
		return rq.r.URL.Path + "?" + extra + "page=" + strconv.Itoa(n)
	}
	if p.Page > 1 {
		p.Prev = link(p.Page - 1)
	}
	if p.Page < p.Pages {
		p.Next = link(p.Page + 1)
	}
	lo := (p.Page - 1) * pageSize
	return p, lo, min(lo+pageSize, total)
}

// pkgRow is a package in a list.
type pkgRow struct {
	Name, Summary, Latest string
	Href                  string
}

// fileRow is a file in the recent uploads or a subdir's list.
type fileRow struct {
	Filename, Name, Label, Subdir, Href, PkgHref string
	Size                                         int64
	Time                                         time.Time
	Yanked                                       bool
}

func (rq *request) fileRow(f *file) fileRow {
	d := rq.m.dirs[f.dir]
	return fileRow{Filename: f.fn, Name: f.name(), Label: d.label, Subdir: d.subdir, Href: "/" + d.path() + "/" + f.fn,
		PkgHref: pkgHref(f.name(), ""), Size: f.size, Time: time.Unix(f.mtime, 0).UTC(), Yanked: f.removed}
}

func pkgHref(name, label string) string {
	h := "/packages/" + name
	if label != "" && label != mainLabel {
		h += "?label=" + label
	}
	return h
}

// row describes a package name for the lists.
func (rq *request) row(p *pkgName, label string) pkgRow {
	latest := ""
	for i := p.lo; i < p.hi; i++ {
		f := &rq.m.files[i]
		if !f.removed && rq.visible(f) && (label == "" || rq.m.dirs[f.dir].label == label) && laterThan(f.version(), latest) {
			latest = f.version()
		}
	}
	return pkgRow{Name: p.name, Summary: rq.summary(p, label), Latest: latest, Href: pkgHref(p.name, label)}
}

// summary returns p's summary as the request sees it (in label, if
// set): that of the newest version it may read.
func (rq *request) summary(p *pkgName, label string) string {
	if rq.acc.unrestricted() && label == "" {
		return p.summary
	}
	s, latest := "", ""
	for _, n := range p.newest {
		f := &rq.m.files[n.file]
		if rq.visible(f) && (label == "" || rq.m.dirs[f.dir].label == label) && laterThan(f.version(), latest) {
			s, latest = n.summary, f.version()
		}
	}
	return s
}

// has reports whether the request sees a file of p (in label, if set).
func (rq *request) has(p *pkgName, label string) bool {
	for i := p.lo; i < p.hi; i++ {
		f := &rq.m.files[i]
		if rq.visible(f) && (label == "" || rq.m.dirs[f.dir].label == label) {
			return true
		}
	}
	return false
}

// anchor is a link.
type anchor struct{ Text, Href string }

// facet is a label the request sees, and its subdirs.
type facet struct {
	Label   anchor
	Subdirs []anchor
}

// facets lists the labels the request sees, main first, each with its
// subdirs.
func (rq *request) facets() []facet {
	var out []facet
	for _, d := range rq.m.dirs {
		if !rq.acc.allows(d) {
			continue
		}
		i := slices.IndexFunc(out, func(f facet) bool { return f.Label.Text == d.label })
		if i < 0 {
			i = len(out)
			out = append(out, facet{Label: anchor{d.label, labelHref(d.label)}})
		}
		out[i].Subdirs = append(out[i].Subdirs, anchor{d.subdir, "/" + d.path() + "/"})
	}
	slices.SortFunc(out, func(a, b facet) int { return labelOrder(a.Label.Text, b.Label.Text) })
	return out
}

func labelHref(label string) string {
	if label == mainLabel {
		return "/"
	}
	return "/label/" + label + "/"
}

// uploadsPerDay counts the visible files stored on each of the last
// days, for the activity picture.
func (rq *request) uploadsPerDay(from stats.Day, match func(*file) bool) []uint64 {
	out := make([]uint64, activity)
	for i := range rq.m.files {
		f := &rq.m.files[i]
		d := stats.DayOf(time.Unix(f.mtime, 0))
		if d >= from && d < from+activity && rq.visible(f) && match(f) {
			out[d-from]++
		}
	}
	return out
}

// downloadsPerDay is the other half of the picture: of the whole
// channel, or of the files match selects when the token is restricted
// or a package is asked for.
func (rq *request) downloadsPerDay(from stats.Day, name string) (uint64, []uint64) {
	st := rq.u.o.Stats
	if st == nil {
		return 0, make([]uint64, activity)
	}
	if rq.acc.unrestricted() && name == "" {
		return st.Total(), st.Daily("", from, from+activity-1)
	}
	if rq.acc.unrestricted() {
		return st.Package(name), st.Daily(name, from, from+activity-1)
	}
	fs := rq.m.files
	if name != "" {
		fs = rq.m.lookup(name)
	}
	files := rq.visibleFiles(fs)
	return st.Sum(files, from, from+activity-1)
}

func today() stats.Day { return stats.DayOf(time.Now()) }

func laterThan(v, than string) bool {
	if than == "" {
		return true
	}
	return compareVersions(v, than) > 0
}

// knownSubdir guards the subdir part of a page path.
func knownSubdir(s string) bool { return condapkg.IsKnownSubdir(s) }
