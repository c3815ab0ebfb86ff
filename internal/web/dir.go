package web

import (
	"net/http"
	"slices"
	"strings"
)

// dirData is a label's page (its packages and subdirs) or a subdir's
// page (its files), which a browser gets instead of the plain listing.
type dirData struct {
	Label, Subdir string
	Subdirs       []anchor
	LabelHref     string
	Packages      []pkgRow
	Files         []fileRow
	Pager         pager
	Install       []command
	IndexFiles    []string
}

// dir serves "label/<L>", "<subdir>" or "label/<L>/<subdir>".
func (rq *request) dir(w http.ResponseWriter, p string) error {
	label, subdir := mainLabel, p
	if rest, ok := strings.CutPrefix(p, "label/"); ok {
		label, subdir, _ = strings.Cut(rest, "/")
	}
	if strings.Contains(subdir, "/") || (subdir != "" && !knownSubdir(subdir)) {
		return ErrNotFound
	}
	d := dirData{Label: label, Subdir: subdir, Install: rq.install(label, "<package>")}
	found := false
	for _, di := range rq.m.dirs {
		if di.label == label && rq.acc.allows(di) {
			found = found || subdir == "" || di.subdir == subdir
			d.Subdirs = append(d.Subdirs, anchor{di.subdir, "/" + di.path() + "/"})
		}
	}
	if !found {
		return ErrNotFound
	}
	slices.SortFunc(d.Subdirs, func(a, b anchor) int { return strings.Compare(a.Text, b.Text) })
	d.LabelHref = labelHref(label)
	title := "Label " + label
	if subdir == "" {
		var rows []*pkgName
		for i := range rq.m.names {
			if rq.has(&rq.m.names[i], label) {
				rows = append(rows, &rq.m.names[i])
			}
		}
		var lo, hi int
		d.Pager, lo, hi = rq.pager(len(rows), "")
		for _, p := range rows[lo:hi] {
			d.Packages = append(d.Packages, rq.row(p, label))
		}
		return rq.render(w, "dir", title, d)
	}
	var files []*file
	for i := range rq.m.files {
		f := &rq.m.files[i]
		if di := rq.m.dirs[f.dir]; di.label == label && di.subdir == subdir {
			files = append(files, f)
		}
	}
	var lo, hi int
	d.Pager, lo, hi = rq.pager(len(files), "")
	for _, f := range files[lo:hi] {
		d.Files = append(d.Files, rq.fileRow(f))
	}
	d.IndexFiles = []string{"repodata.json"}
	if label == mainLabel {
		title = subdir
	} else {
		title += ", " + subdir
	}
	return rq.render(w, "dir", title, d)
}
