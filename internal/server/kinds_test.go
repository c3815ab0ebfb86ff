package server_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/metrics"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// TestKindsDecideRecords: what the server records of a request, besides
// its log line, follows the kind of its endpoint in the route table:
// every upload attempt (even a wrong method on an upload route) is
// counted and audited, a download is counted as one, and health, admin
// reads and trusted publishing's audience are neither.
func TestKindsDecideRecords(t *testing.T) {
	m := metrics.New("test", "", false)
	e := startServing(t, false, func(o *server.Options) { o.Observe.Metrics = m })
	downloads := func() int {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		n := 0
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			if strings.HasPrefix(line, "conda_download_requests_total{") {
				v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
				if err != nil {
					t.Fatal(err)
				}
				n += int(v)
			}
		}
		return n
	}
	pkg := pkgtest.Conda(t, pkgtest.Simple("demo", "1.0", "0", "noarch"))
	for _, tt := range []struct {
		name, method, path, tok string
		status                  int
		failures, audited, dl   int
	}{
		{"upload", "", "", "", 201, 0, 1, 0},
		{"wrong method on an upload route", "PUT", "/", "", 405, 1, 1, 0},
		{"download", "GET", "/noarch/repodata.json", "", 200, 0, 0, 1},
		{"health", "GET", "/healthz", "", 200, 0, 0, 0},
		{"wrong method on an ops route", "POST", "/healthz", "", 405, 0, 0, 0},
		{"admin read", "GET", "/api/v1/packages/main/noarch", adminToken, 200, 0, 0, 0},
		{"wrong method on an admin route", "POST", "/api/v1/packages/main/noarch", adminToken, 405, 0, 0, 0},
		{"trusted publishing's audience", "GET", "/_/oidc/audience", "", 404, 0, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			failures, audited, dl := e.srv.Stats().Failures, len(e.auditRecords(t)), downloads()
			var r response
			if tt.method == "" {
				r = e.upload(t, "demo-1.0-0.conda", pkg)
			} else {
				r = e.call(t, tt.method, strings.TrimPrefix(tt.path, "/"), tt.tok, "")
			}
			if r.status != tt.status {
				t.Fatalf("status %d %s, want %d", r.status, r.raw, tt.status)
			}
			if d := int(e.srv.Stats().Failures - failures); d != tt.failures {
				t.Errorf("failed uploads counted: %d, want %d", d, tt.failures)
			}
			if d := len(e.auditRecords(t)) - audited; d != tt.audited {
				t.Errorf("audit records: %d, want %d", d, tt.audited)
			}
			if d := downloads() - dl; d != tt.dl {
				t.Errorf("downloads counted: %d, want %d", d, tt.dl)
			}
		})
	}
}

// TestLogFields: a request's log line carries the fields that apply to
// it, not empty ones.
func TestLogFields(t *testing.T) {
	e := start(t)
	if r := e.upload(t, "demo-1.0-0.conda", pkgtest.Conda(t, pkgtest.Simple("demo", "1.0", "0", "noarch"))); r.status != 201 {
		t.Fatalf("upload: %d %s", r.status, r.raw)
	}
	if r := e.call(t, "GET", "healthz", "", ""); r.status != 200 {
		t.Fatalf("healthz: %d", r.status)
	}
	lines := map[string]string{}
	for _, line := range strings.Split(e.logs.String(), "\n") {
		for _, path := range []string{"/", "/healthz"} {
			if strings.Contains(line, "msg=request ") && strings.Contains(line, " path="+path+" ") {
				lines[path] = line
			}
		}
	}
	for _, want := range []string{"status=201", "reason=created", "protocol=form", "token=ci-linux", "label=main", "subdir=noarch", "filename=demo-1.0-0.conda", "size=", "sha256=", "duration="} {
		if !strings.Contains(lines["/"], " "+want) {
			t.Errorf("upload's log line %q lacks %s", lines["/"], want)
		}
	}
	if strings.Contains(lines["/"], `=""`) || strings.Contains(lines["/"], " err=") {
		t.Errorf("upload's log line has empty fields: %q", lines["/"])
	}
	for _, absent := range []string{"protocol=", "token=", "label=", "call=", "subdir=", "filename=", "size=", "sha256=", "err="} {
		if strings.Contains(lines["/healthz"], " "+absent) {
			t.Errorf("health check's log line %q has %s", lines["/healthz"], absent)
		}
	}
	if !strings.Contains(lines["/healthz"], " status=200 reason=ok ") {
		t.Errorf("health check's log line %q", lines["/healthz"])
	}
}
