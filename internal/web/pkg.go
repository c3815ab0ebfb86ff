package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
)

// pkgData is a package's page.
type pkgData struct {
	Name, Label                 string
	Labels                      []string
	Owners                      []string
	About                       about
	Latest                      []latestCell
	Versions                    []string
	Platforms                   []string
	Grid                        [][]gridCell
	Files                       []fileDetail
	Pager                       pager
	Build                       *build
	Install                     []command
	Activity                    activityView
	Downloads                   uint64
	DownloadsCounted, HasYanked bool
	ChannelURL                  string
	AttestMode                  string
}

// about is what the package says about itself, clipped, with links that
// are http or https or left out.
type about struct {
	Summary, Description, License string
	Home, Dev, Doc                string
}

type latestCell struct{ Subdir, Version, Href string }

type gridCell struct {
	Builds int
	Yanked bool
}

// fileDetail is a row of the files table.
type fileDetail struct {
	fileRow
	SHA256, MD5 string
	Labels      []string
	YankedIn    []string
	YankReason  string
	Downloads   uint64
	BuildHref   string
	Chosen      bool
	// Attested says the record names a sidecar; Signers are the distinct
	// identities its attestations' certificates name, clipped, at most
	// maxSigners ("" for a certificate that names none), and MoreSigners
	// how many others there are.
	Attested    bool
	Signers     []string
	MoreSigners int
}

// build is the chosen build's dependencies.
type build struct {
	Filename, Subdir, Version, Build, License string
	Number                                    string
	Depends, Constrains                       []string
}

// record is what a page reads from a repodata record.
type record struct {
	SHA256      string      `json:"sha256"`
	MD5         string      `json:"md5"`
	License     string      `json:"license"`
	BuildNumber json.Number `json:"build_number"`
	Depends     []string    `json:"depends"`
	Constrains  []string    `json:"constrains"`
}

func (rq *request) pkg(w http.ResponseWriter, name string) error {
	q := rq.r.URL.Query()
	label := q.Get("label")
	var files []*file
	var labels []string
	for _, f := range rq.m.lookup(name) {
		d := rq.m.dirs[f.dir]
		if !rq.acc.allows(d) {
			continue
		}
		if !slices.Contains(labels, d.label) {
			labels = append(labels, d.label)
		}
		if label == "" || d.label == label {
			files = append(files, &f)
		}
	}
	if len(files) == 0 {
		return ErrNotFound
	}
	slices.SortFunc(labels, labelOrder)
	d := pkgData{Name: name, Label: label, Labels: labels, DownloadsCounted: rq.u.o.Stats != nil,
		ChannelURL: rq.channelURL(label), AttestMode: rq.u.o.AttestMode}
	rows := rq.fileDetails(files)
	d.Latest, d.Versions, d.Platforms, d.Grid = grid(rows)
	d.About = rq.about(rows)
	if rq.u.o.Owners != nil {
		for _, o := range rq.u.o.Owners(name) {
			d.Owners = append(d.Owners, clip(o, maxText))
		}
	}
	d.Build = rq.chooseBuild(rows, q.Get("file"))
	var lo, hi int
	extra := ""
	if label != "" {
		extra = "label=" + url.QueryEscape(label) + "&"
	}
	d.Pager, lo, hi = rq.pager(len(rows), extra)
	d.Files = rows[lo:hi]
	rq.hashes(d.Files)
	for _, r := range rows {
		d.HasYanked = d.HasYanked || r.Yanked
	}
	d.Install = rq.install(label, name)
	d.Activity = rq.activity(name, func(f *file) bool { return f.name() == name })
	d.Downloads = d.Activity.DownloadsTotal
	return rq.render(w, "package", name, d)
}

// fileDetails makes one row per subdir and filename (a file in several
// labels is one file), newest version first.
func (rq *request) fileDetails(files []*file) []fileDetail {
	var rows []fileDetail
	at := map[string]int{}
	yanks := map[string]map[string]string{}
	for _, f := range files {
		di := rq.m.dirs[f.dir]
		key := di.subdir + "/" + f.fn
		i, ok := at[key]
		if !ok {
			i = len(rows)
			at[key] = i
			rows = append(rows, rq.newDetail(f, key))
		}
		r := &rows[i]
		r.Labels = append(r.Labels, di.label)
		if !f.removed {
			continue
		}
		// Yanks are per label: say where.
		r.Yanked = true
		r.YankedIn = append(r.YankedIn, di.label)
		if rq.u.o.Yanks != nil && r.YankReason == "" {
			if yanks[di.path()] == nil {
				yanks[di.path()] = rq.u.o.Yanks(di.path())
			}
			r.YankReason = clip(yanks[di.path()][f.fn], maxText)
		}
	}
	for i := range rows {
		slices.SortFunc(rows[i].Labels, labelOrder)
		slices.SortFunc(rows[i].YankedIn, labelOrder)
	}
	slices.SortStableFunc(rows, func(a, b fileDetail) int {
		if c := compareVersions(version(b.Filename), version(a.Filename)); c != 0 {
			return c
		}
		return strings.Compare(a.Subdir+a.Filename, b.Subdir+b.Filename)
	})
	return rows
}

// labelOrder puts main first, then the others by name.
func labelOrder(a, b string) int {
	if (a == mainLabel) != (b == mainLabel) {
		if a == mainLabel {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

func (rq *request) newDetail(f *file, key string) fileDetail {
	di := rq.m.dirs[f.dir]
	fd := fileDetail{fileRow: rq.fileRow(f)}
	if rq.u.o.Stats != nil {
		fd.Downloads = rq.u.o.Stats.File(key)
	}
	fd.BuildHref = pkgHref(f.name(), "") + "?file=" + url.QueryEscape(key) + "#build"
	if di.label != mainLabel {
		fd.BuildHref = pkgHref(f.name(), di.label) + "&file=" + url.QueryEscape(key) + "#build"
	}
	return fd
}

func version(fn string) string {
	f, _ := condapkg.ParseFilename(fn)
	return f.Version
}

// grid returns the latest version on each platform and the versions ×
// platforms grid; yanked files count only as yanked.
func grid(rows []fileDetail) ([]latestCell, []string, []string, [][]gridCell) {
	var versions, platforms []string
	for _, r := range rows {
		if v := version(r.Filename); !slices.Contains(versions, v) {
			versions = append(versions, v)
		}
		if !slices.Contains(platforms, r.Subdir) {
			platforms = append(platforms, r.Subdir)
		}
	}
	slices.Sort(platforms)
	cells := make([][]gridCell, len(versions))
	latest := make([]latestCell, len(platforms))
	for i := range cells {
		cells[i] = make([]gridCell, len(platforms))
	}
	for _, r := range rows {
		vi, pi := slices.Index(versions, version(r.Filename)), slices.Index(platforms, r.Subdir)
		if r.Yanked {
			cells[vi][pi].Yanked = true
			continue
		}
		cells[vi][pi].Builds++
		if latest[pi].Version == "" {
			latest[pi] = latestCell{Subdir: r.Subdir, Version: version(r.Filename), Href: r.BuildHref}
		}
	}
	for i := range latest {
		latest[i].Subdir = platforms[i]
	}
	return latest, versions, platforms, cells
}

// about reads the newest file's about fields.
func (rq *request) about(rows []fileDetail) about {
	for _, r := range rows {
		p, ok := rq.u.o.Source.Lookup(dirPath(r.Label, r.Subdir), r.Filename)
		if !ok {
			continue
		}
		var a struct {
			Summary     string `json:"summary"`
			Description string `json:"description"`
			License     string `json:"license"`
			Home        string `json:"home"`
			DevURL      string `json:"dev_url"`
			DocURL      string `json:"doc_url"`
		}
		json.Unmarshal(p.Channel, &a)
		if a.License == "" {
			var rec record
			json.Unmarshal(p.Record, &rec)
			a.License = rec.License
		}
		return about{Summary: clip(a.Summary, maxSummary), Description: clip(a.Description, maxDescription),
			License: clip(a.License, maxText), Home: link(a.Home), Dev: link(a.DevURL), Doc: link(a.DocURL)}
	}
	return about{}
}

func dirPath(label, subdir string) string { return dirInfo{label, subdir}.path() }

// chooseBuild returns the build ?file= names, or the newest.
func (rq *request) chooseBuild(rows []fileDetail, want string) *build {
	for i, r := range rows {
		if want != "" && r.Subdir+"/"+r.Filename != want {
			continue
		}
		if want == "" && r.Yanked {
			continue
		}
		p, ok := rq.u.o.Source.Lookup(dirPath(r.Label, r.Subdir), r.Filename)
		if !ok {
			return nil
		}
		var rec record
		json.Unmarshal(p.Record, &rec)
		f, _ := condapkg.ParseFilename(r.Filename)
		rows[i].Chosen = true
		return &build{Filename: r.Filename, Subdir: r.Subdir, Version: f.Version, Build: f.Build,
			License: clip(rec.License, maxText), Number: clip(rec.BuildNumber.String(), 20),
			Depends: specs(rec.Depends), Constrains: specs(rec.Constrains)}
	}
	return nil
}

func specs(in []string) []string {
	out := make([]string, 0, min(len(in), maxSpecs))
	for _, s := range in[:min(len(in), maxSpecs)] {
		out = append(out, clip(s, maxText))
	}
	return out
}

// hashes fills in the shown rows' digests and attestations from their
// records.
func (rq *request) hashes(rows []fileDetail) {
	for i, r := range rows {
		p, ok := rq.u.o.Source.Lookup(dirPath(r.Label, r.Subdir), r.Filename)
		if !ok {
			continue
		}
		var rec record
		json.Unmarshal(p.Record, &rec)
		rows[i].SHA256, rows[i].MD5 = clip(rec.SHA256, 64), clip(rec.MD5, 32)
		if label, ok := rq.attestedIn(r); ok {
			rows[i].Attested = true
			rq.signers(&rows[i], label)
		}
	}
}

// attestedIn returns a label whose record of the row's file names a
// sidecar (attestations_sha256), from memory. A file in several labels
// is one row, and may have been attested in one of them only.
func (rq *request) attestedIn(r fileDetail) (string, bool) {
	for _, l := range r.Labels {
		var rec struct {
			Attest string `json:"attestations_sha256"`
		}
		p, ok := rq.u.o.Source.Lookup(dirPath(l, r.Subdir), r.Filename)
		if ok && json.Unmarshal(p.Record, &rec) == nil && rec.Attest != "" {
			return l, true
		}
	}
	return "", false
}

// maxSigners bounds the identities shown for one file: a sidecar of
// sidecar.MaxSize holds a hundred or more attestations.
const maxSigners = 10

// signers reads who signed a shown file's attestations. Their identities
// are certificate SANs the uploader chose, so hostile like the rest of
// the metadata: clipped, and shown as text, never as links.
func (rq *request) signers(r *fileDetail, label string) {
	if rq.u.o.Signers == nil {
		return
	}
	var seen []string
	for _, s := range rq.u.o.Signers(dirPath(label, r.Subdir), r.Filename) {
		if s = clip(s, maxText); slices.Contains(seen, s) {
			continue
		}
		seen = append(seen, s)
	}
	r.Signers = seen[:min(len(seen), maxSigners)]
	r.MoreSigners = len(seen) - len(r.Signers)
}
