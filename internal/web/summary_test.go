package web

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
)

// TestSummaryOfVisibleBuild: a package whose newest build is in label
// dev, with another summary than its build in main, shows a main-only
// token the summary of the build it may read, and a search for dev's
// summary finds nothing for that token; a token without limits and one
// of dev see dev's.
func TestSummaryOfVisibleBuild(t *testing.T) {
	root := t.TempDir()
	x := repodata.New(root, condapkg.DefaultLimits(), slog.New(slog.DiscardHandler))
	for _, b := range []struct{ dir, version, summary string }{
		{"linux-64", "1.0", "the released summary"},
		{"label/dev/linux-64", "2.0", "an unreleased codename"},
	} {
		s := pkgtest.Simple("twofaced", b.version, "h0_0", "linux-64")
		about, _ := json.Marshal(map[string]string{"summary": b.summary})
		s.Info = append(s.Info, pkgtest.Member{Name: "info/about.json", Data: about})
		os.MkdirAll(filepath.Join(root, b.dir), 0o755)
		os.WriteFile(filepath.Join(root, b.dir, s.Stem()+".conda"), pkgtest.Conda(t, s), 0o644)
		if err := x.Run(context.Background(), b.dir); err != nil {
			t.Fatal(err)
		}
	}
	ui, err := New(Options{Source: x, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	const released, unreleased = "the released summary", "an unreleased codename"
	for _, tc := range []struct {
		labels        []string
		path          string
		want, wantNot string
	}{
		{[]string{"main"}, "/", released, unreleased},
		{[]string{"main"}, "/?q=codename", "No packages match", unreleased},
		{[]string{"main"}, "/?q=released", released, unreleased},
		{nil, "/", unreleased, released},
		{nil, "/?q=codename", unreleased, released},
		{[]string{"dev"}, "/label/dev/", unreleased, released},
		{nil, "/label/main/", released, unreleased},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.path, nil)
		r.Header.Set("Accept", "text/html")
		w := httptest.NewRecorder()
		if err := ui.Serve(w, r, Access{Labels: tc.labels}); err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		if body := w.Body.String(); !strings.Contains(body, tc.want) || strings.Contains(body, tc.wantNot) {
			t.Errorf("GET %s for labels %v: want %q and not %q:\n%.2000s", tc.path, tc.labels, tc.want, tc.wantNot, body)
		}
	}
}
