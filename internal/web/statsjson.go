package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/stats"
)

// The JSON endpoint gives scripts the counts the pages show:
//
//	/api/v1/stats                               the channel
//	/api/v1/stats/packages/<name>               a package, and each of its files
//	/api/v1/stats/files/<subdir>/<filename>     one file
//
// each with a total and the counts per day of the last 90 days (?days=
// from 1 to 400; anything else is a 400, not quietly 90). A token restricted to labels or subdirs sees the counts of
// the files it may download only.

type dayCount struct {
	Date      string `json:"date"`
	Downloads uint64 `json:"downloads"`
}

type fileCount struct {
	Subdir    string `json:"subdir"`
	Filename  string `json:"filename"`
	Downloads uint64 `json:"downloads"`
}

type statsAnswer struct {
	Package  string      `json:"package,omitempty"`
	Subdir   string      `json:"subdir,omitempty"`
	Filename string      `json:"filename,omitempty"`
	Total    uint64      `json:"total"`
	Files    []fileCount `json:"files,omitempty"`
	Days     []dayCount  `json:"days"`
}

func (u *UI) statsJSON(w http.ResponseWriter, r *http.Request, acc Access, rest string) error {
	if u.o.Stats == nil {
		return ErrNotFound
	}
	ndays, err := days(r.URL.Query())
	if err != nil {
		return err
	}
	to := today()
	from := to - stats.Day(ndays) + 1
	rq := &request{u: u, m: u.cat.get(), r: r, acc: acc}
	var a statsAnswer
	var days []uint64
	parts := strings.Split(rest, "/")
	switch {
	case rest == "" && acc.unrestricted():
		a.Total, days = u.o.Stats.Total(), u.o.Stats.Daily("", from, to)
	case rest == "":
		a.Total, days = u.o.Stats.Sum(rq.visibleFiles(rq.m.files), from, to)
	case len(parts) == 2 && parts[0] == "packages":
		files := rq.visibleFiles(rq.m.lookup(parts[1]))
		if len(files) == 0 {
			return ErrNotFound
		}
		a.Package = parts[1]
		a.Total, days = u.o.Stats.Sum(files, from, to)
		for _, f := range files {
			subdir, fn, _ := strings.Cut(f, "/")
			a.Files = append(a.Files, fileCount{subdir, fn, u.o.Stats.File(f)})
		}
	case len(parts) == 3 && parts[0] == "files":
		f := parts[1] + "/" + parts[2]
		if !rq.sees(parts[1], parts[2]) {
			return ErrNotFound
		}
		a.Subdir, a.Filename = parts[1], parts[2]
		a.Total, days = u.o.Stats.Sum([]string{f}, from, to)
	default:
		return ErrNotFound
	}
	a.Days = make([]dayCount, len(days))
	for i, n := range days {
		a.Days[i] = dayCount{(from + stats.Day(i)).Time().Format("2006-01-02"), n}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	if r.Method == http.MethodHead {
		return nil
	}
	return json.NewEncoder(w).Encode(a)
}

// errDays is the answer to a ?days= out of its range.
const errDays = BadRequest("days must be a whole number from 1 to 400")

// days returns the ?days= of q, 90 if it has none.
func days(q url.Values) (int, error) {
	if !q.Has("days") {
		return 90, nil
	}
	n, err := strconv.Atoi(q.Get("days"))
	if err != nil || n < 1 || n > 400 {
		return 0, errDays
	}
	return n, nil
}

// visibleFiles returns the "<subdir>/<filename>" of the files the
// request may see, each once.
func (rq *request) visibleFiles(files []file) []string {
	seen := map[string]bool{}
	var out []string
	for i := range files {
		f := &files[i]
		if !rq.visible(f) {
			continue
		}
		k := rq.m.dirs[f.dir].subdir + "/" + f.fn
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// sees reports whether the request may see subdir/filename in a label.
func (rq *request) sees(subdir, fn string) bool {
	for _, f := range rq.m.lookup(nameOf(fn)) {
		if f.fn == fn && rq.m.dirs[f.dir].subdir == subdir && rq.visible(&f) {
			return true
		}
	}
	return false
}

func nameOf(fn string) string {
	f, _ := condapkg.ParseFilename(fn)
	return f.Name
}
