package server

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// docsDir holds the manual; docs/architecture.md has the route table.
const docsDir = "../../docs"

// TestRoutesDocumented fails when a route of the route table is not
// documented, or when docs/architecture.md's route table names a route
// that does not exist.
//
// The rule: for every route and every method it serves (HEAD goes with
// GET), some page of docs/ holds a code span, on one line and outside a
// fenced block, that starts with the method and the route's pattern as
// routes.go writes it, {placeholders} included and a closing {$}
// dropped: `POST /api/v1/upload/{channel}`, optionally followed by a
// query or a note (`POST /api/v1/upload/{channel}[?force=true]`).
func TestRoutesDocumented(t *testing.T) {
	served := routeMethods(t)
	spans, err := docSpans(docsDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range served {
		if !slices.ContainsFunc(spans, func(s string) bool { return documents(s, r) }) {
			t.Errorf("route `%s` (routes.go) is not documented: add a row to the route table in docs/architecture.md, "+
				"and describe it on the reader's page (docs/uploading.md, serving.md, admin.md or operations.md)", r)
		}
	}
	rows, err := tableRoutes(filepath.Join(docsDir, "architecture.md"), "## Routes")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal(`docs/architecture.md has no route table under "## Routes"`)
	}
	for _, row := range rows {
		if !slices.Contains(served, row) {
			t.Errorf("docs/architecture.md's route table names `%s`, which routes.go does not serve: fix or remove the row", row)
		}
	}
}

// routeMethods lists "METHOD PATH" for every route and method of the
// route table, with PATH the pattern without a closing {$}.
func routeMethods(t *testing.T) []string {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	// The admin routes have methods only when the server has a
	// lifecycle manager: set the Options field that holds it, wherever
	// Options keeps it.
	if !setField(reflect.ValueOf(&s.o).Elem(), reflect.ValueOf(lifecycle.New(st))) {
		t.Fatal("server.Options has no field for a *lifecycle.Manager")
	}
	var out []string
	for _, rt := range s.routes() {
		if len(rt.methods) == 0 {
			t.Errorf("route %s has no methods in this test's Server: give it what the route needs", rt.pattern)
		}
		path := strings.TrimSuffix(rt.pattern, "{$}")
		for m := range rt.methods {
			if _, get := rt.methods[http.MethodGet]; m == http.MethodHead && get {
				continue
			}
			if r := m + " " + path; !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	slices.Sort(out)
	return out
}

// setField sets the first field of v, or of a struct within it, that v
// can hold, and says whether there was one.
func setField(v, x reflect.Value) bool {
	for i := range v.NumField() {
		f := v.Field(i)
		switch {
		case !f.CanSet():
		case x.Type().AssignableTo(f.Type()):
			f.Set(x)
			return true
		case f.Kind() == reflect.Struct && setField(f, x):
			return true
		}
	}
	return false
}

// documents says whether the code span s documents route r, "METHOD PATH":
// s is r, or r followed by a space, a query or a bracket.
func documents(s, r string) bool {
	rest, ok := strings.CutPrefix(s, r)
	return ok && (rest == "" || strings.ContainsAny(rest[:1], " ?["))
}

var docCodeSpan = regexp.MustCompile("`([^`]+)`")

// docSpans returns the code spans of every page in dir: each on one
// line, outside fenced code blocks.
func docSpans(dir string) ([]string, error) {
	pages, err := filepath.Glob(filepath.Join(dir, "*.md"))
	if err != nil || len(pages) == 0 {
		return nil, fmt.Errorf("no pages in %s: %v", dir, err)
	}
	var spans []string
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		fenced := false
		for line := range strings.Lines(string(b)) {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				fenced = !fenced
				continue
			}
			if fenced {
				continue
			}
			for _, m := range docCodeSpan.FindAllStringSubmatch(line, -1) {
				spans = append(spans, m[1])
			}
		}
	}
	return spans, nil
}

// tableRoutes returns the first code span of each table row under the
// heading in page, up to the next heading of that level.
func tableRoutes(page, heading string) ([]string, error) {
	b, err := os.ReadFile(page)
	if err != nil {
		return nil, err
	}
	var rows []string
	in := false
	level := heading[:strings.Index(heading, " ")+1]
	for line := range strings.Lines(string(b)) {
		switch {
		case strings.HasPrefix(line, level):
			in = strings.TrimSpace(line) == heading
		case in && strings.HasPrefix(line, "| `"):
			if m := docCodeSpan.FindStringSubmatch(line); m != nil {
				rows = append(rows, m[1])
			}
		}
	}
	return rows, nil
}
