package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/stats"
)

// TestStatsDays: ?days= is a whole number from 1 to 400, 90 if absent;
// anything else is refused as a BadRequest, with nothing written.
func TestStatsDays(t *testing.T) {
	_, x, _ := testChannel(t)
	sc, err := stats.Open(stats.Options{Dir: t.TempDir(), FlushEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	ui, err := New(Options{Source: x, Stats: sc})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query string
		days  int // 0: refused
	}{
		{"", 90}, {"?days=1", 1}, {"?days=400", 400}, {"?days=30", 30},
		{"?days=abc", 0}, {"?days=0", 0}, {"?days=1000", 0}, {"?days=401", 0}, {"?days=-5", 0}, {"?days=1.5", 0}, {"?days=", 0},
	} {
		w := httptest.NewRecorder()
		err := ui.Serve(w, httptest.NewRequest(http.MethodGet, "/api/v1/stats"+tc.query, nil), Access{})
		if tc.days == 0 {
			if !errors.Is(err, BadRequest("days must be a whole number from 1 to 400")) || w.Body.Len() != 0 {
				t.Errorf("/api/v1/stats%s: %v, %d bytes written; want a BadRequest and nothing written", tc.query, err, w.Body.Len())
			}
			continue
		}
		var a statsAnswer
		if err != nil || json.Unmarshal(w.Body.Bytes(), &a) != nil || len(a.Days) != tc.days {
			t.Errorf("/api/v1/stats%s: %v, %d days; want %d", tc.query, err, len(a.Days), tc.days)
		}
	}
}
