package web

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condaversion"
)

// homeData is the channel home: what the channel holds, a search, the
// recent uploads and the activity.
type homeData struct {
	Facets           []facet
	Upstreams        []upstreamRow
	Packages, Files  int
	Query            string
	Results          []pkgRow
	ResultsBy        string
	Pager            pager
	Recent           []fileRow
	Activity         activityView
	Install          []command
	InstallName      string
	DownloadsCounted bool
}

func (rq *request) home(w http.ResponseWriter) error {
	d := homeData{Query: clip(rq.r.URL.Query().Get("q"), 200), DownloadsCounted: rq.u.o.Stats != nil}
	d.Facets = rq.facets()
	d.Upstreams = rq.upstreamRows()
	for i := range rq.m.names {
		if rq.has(&rq.m.names[i], "") {
			d.Packages++
		}
	}
	for i := range rq.m.files {
		if rq.visible(&rq.m.files[i]) {
			d.Files++
		}
	}
	var rows []*pkgName
	if d.Query != "" {
		rows = rq.search(strings.ToLower(d.Query))
		d.ResultsBy = "Results for"
	} else {
		for i := range rq.m.names {
			if rq.has(&rq.m.names[i], "") {
				rows = append(rows, &rq.m.names[i])
			}
		}
	}
	extra := ""
	if d.Query != "" {
		extra = "q=" + url.QueryEscape(d.Query) + "&"
	}
	var lo, hi int
	d.Pager, lo, hi = rq.pager(len(rows), extra)
	for _, p := range rows[lo:hi] {
		d.Results = append(d.Results, rq.row(p, ""))
	}
	for _, i := range rq.m.recent {
		if len(d.Recent) == recentCount {
			break
		}
		if f := &rq.m.files[i]; rq.visible(f) {
			d.Recent = append(d.Recent, rq.fileRow(f))
		}
	}
	d.Activity = rq.activity("", func(*file) bool { return true })
	d.InstallName = "<package>"
	d.Install = rq.install("", d.InstallName)
	return rq.render(w, "home", "Channel", d)
}

// search returns the packages the request sees that match q: exact
// name, then names that start with q, then names that contain it, then
// summaries that contain it.
func (rq *request) search(q string) []*pkgName {
	var tiers [4][]*pkgName
	for i := range rq.m.names {
		p := &rq.m.names[i]
		name := strings.ToLower(p.name)
		t := -1
		switch {
		case name == q:
			t = 0
		case strings.HasPrefix(name, q):
			t = 1
		case strings.Contains(name, q):
			t = 2
		case strings.Contains(strings.ToLower(rq.summary(p, "")), q):
			t = 3
		}
		if t >= 0 && rq.has(p, "") {
			tiers[t] = append(tiers[t], p)
		}
	}
	return append(append(append(tiers[0], tiers[1]...), tiers[2]...), tiers[3]...)
}

// command is one install command.
type command struct {
	Tool  string
	Lines []string
	ID    string
}

// install returns the commands that install name from label.
func (rq *request) install(label, name string) []command {
	return rq.installFrom(rq.channelURL(label), name)
}

// installFrom returns the commands that install name from the channel at
// u, which on a private channel has the /t/<TOKEN> placeholder.
func (rq *request) installFrom(u, name string) []command {
	cmds := []command{
		{Tool: "conda", Lines: []string{fmt.Sprintf("conda install -c %s %s", u, name)}},
		{Tool: "mamba", Lines: []string{fmt.Sprintf("mamba install -c %s %s", u, name)}},
	}
	if rq.u.o.Private {
		host := strings.TrimPrefix(strings.TrimPrefix(rq.base(), "https://"), "http://")
		u = strings.Replace(u, "/t/<TOKEN>", "", 1)
		cmds = append(cmds, command{Tool: "pixi", Lines: []string{"pixi auth login " + host + " --token <TOKEN>",
			"pixi workspace channel add " + u, "pixi add " + name}})
	} else {
		cmds = append(cmds, command{Tool: "pixi", Lines: []string{"pixi workspace channel add " + u, "pixi add " + name}})
	}
	for i := range cmds {
		cmds[i].ID = "install-" + cmds[i].Tool
	}
	return cmds
}

func compareVersions(a, b string) int { return condaversion.Compare(a, b) }

var funcs = template.FuncMap{
	"size": func(n int64) string {
		switch {
		case n >= 1<<30:
			return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
		case n >= 1<<20:
			return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
		case n >= 1<<10:
			return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
		}
		return fmt.Sprintf("%d B", n)
	},
	"when":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"join":  strings.Join,
	"count": func(n uint64) string { return fmt.Sprint(n) },
	// plural writes a count and its noun: "1 package", "2 packages".
	"plural": func(n any, noun string) string {
		if s := fmt.Sprint(n); s != "1" {
			return s + " " + noun + "s"
		}
		return "1 " + noun
	},
}
