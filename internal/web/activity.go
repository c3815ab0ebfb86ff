package web

import (
	"fmt"
	"html/template"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/stats"
)

// activityView is the activity picture of the last 90 days: an SVG drawn
// here from numbers only (nothing from a package goes into it), with a
// text summary for its label and a table of the same numbers as its
// text alternative.
type activityView struct {
	SVG                template.HTML
	Summary            string
	Rows               []activityRow
	Uploads, Downloads uint64
	DownloadsTotal     uint64
	Counted            bool
}

type activityRow struct {
	Date               string
	Uploads, Downloads uint64
}

// activity builds the picture of the files match selects, and of the
// downloads of package name ("" for the channel).
func (rq *request) activity(name string, match func(*file) bool) activityView {
	from := today() - activity + 1
	up := rq.uploadsPerDay(from, match)
	total, down := rq.downloadsPerDay(from, name)
	v := activityView{DownloadsTotal: total, Counted: rq.u.o.Stats != nil}
	for i := range activity {
		v.Uploads += up[i]
		v.Downloads += down[i]
		if up[i] != 0 || down[i] != 0 {
			v.Rows = append(v.Rows, activityRow{(from + stats.Day(i)).Time().Format("2006-01-02"), up[i], down[i]})
		}
	}
	v.Summary = fmt.Sprintf("Over the last %d days: %d uploads and %d downloads.", activity, v.Uploads, v.Downloads)
	v.SVG = drawActivity(from, up, down, v.Summary)
	return v
}

// drawActivity draws two bar charts, one above the other, one bar a
// day. Its colours are presentation attributes, not style, so that the
// CSP's style-src 'self' allows them.
func drawActivity(from stats.Day, up, down []uint64, summary string) template.HTML {
	const w, h, barW = 720, 60, 8
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" role="img" aria-labelledby="activity-title" class="activity">`, w, 2*h+72)
	fmt.Fprintf(&b, `<title id="activity-title">%s</title>`, template.HTMLEscapeString(summary))
	series := []struct {
		name   string
		colour string
		data   []uint64
		y      int
	}{{"uploads", "#1a5fb4", up, 20}, {"downloads", "#26734d", down, h + 48}}
	for _, s := range series {
		var most uint64
		for _, n := range s.data {
			most = max(most, n)
		}
		top := max(most, 1)
		fmt.Fprintf(&b, `<text x="0" y="%d" font-size="16" fill="#222">%s per day (most: %d)</text>`, s.y-4, s.name, most)
		fmt.Fprintf(&b, `<line x1="0" y1="%d" x2="%d" y2="%d" stroke="#888" stroke-width="1"/>`, s.y+h, w, s.y+h)
		for i, n := range s.data {
			if n == 0 {
				continue
			}
			bh := max(1, int(n*uint64(h)/top))
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`, i*barW, s.y+h-bh, barW-1, bh, s.colour)
		}
	}
	fmt.Fprintf(&b, `<text x="0" y="%d" font-size="14" fill="#222">%s</text>`, 2*h+68, from.Time().Format("2006-01-02"))
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" fill="#222" text-anchor="end">%s</text>`, w, 2*h+68,
		(from + activity - 1).Time().Format("2006-01-02"))
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // numbers and fixed text only
}
