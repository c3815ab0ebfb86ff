package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/audit"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/corpus"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

const (
	token          = "s3cret-ci-token"
	readToken      = "r3ad-only-token"
	overwriteToken = "0verwrite-t0ken"
	// adminToken has every admin scope; devToken may upload and promote
	// within label dev only.
	adminToken = "adm1n-every-scope"
	devToken   = "dev-label-only"
)

type env struct {
	url     string
	client  *http.Client
	root    string
	ix      *index.Scheduler
	srv     *server.Server
	httpSrv *httptest.Server
	logs    *lockedBuffer
	audit   string
}

// lockedBuffer collects the server's log, written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type option func(*server.Options)

// slowRunner makes every index run take at least delay, as a real
// conda index does, so that uploads pile up behind a run.
type slowRunner struct {
	*repodata.Writer
	delay time.Duration
}

func (s slowRunner) Run(ctx context.Context, subdir string) error {
	time.Sleep(s.delay)
	return s.Writer.Run(ctx, subdir)
}

// start runs the real handler behind a real TLS listener on loopback.
func start(t testing.TB, opts ...option) *env {
	return startAt(t, t.TempDir(), 0, opts...)
}

func startSlow(t testing.TB, indexDelay time.Duration, opts ...option) *env {
	return startAt(t, t.TempDir(), indexDelay, opts...)
}

// startAt serves the channel at root.
func startAt(t testing.TB, root string, indexDelay time.Duration, opts ...option) *env {
	t.Helper()
	st, err := store.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := auth.ParseHash(auth.Hash(auth.DefaultSalt, token))
	h2, _ := auth.ParseHash(auth.Hash(auth.DefaultSalt, "other-token"))
	h3, _ := auth.ParseHash(auth.Hash(auth.DefaultSalt, readToken))
	h4, _ := auth.ParseHash(auth.Hash(auth.DefaultSalt, overwriteToken))
	a, err := auth.New(auth.DefaultSalt, []auth.Token{{Name: "ci-linux", Hash: h}, {Name: "ci-osx", Hash: h2},
		{Name: "reader", Hash: h3, Scopes: []string{auth.ScopeRead}},
		{Name: "admin", Hash: h4, Scopes: []string{auth.ScopeUpload, auth.ScopeOverwrite}},
		{Name: "operator", Hash: mustHash(adminToken), Scopes: []string{auth.ScopeUpload, auth.ScopeRead, auth.ScopePromote, auth.ScopeYank, auth.ScopeDelete, auth.ScopePatch}},
		{Name: "dev-ci", Hash: mustHash(devToken), Scopes: []string{auth.ScopeUpload, auth.ScopePromote}, Labels: []string{"dev"}}})
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	var logw io.Writer = logs
	if testing.Verbose() {
		logw = io.MultiWriter(logs, os.Stderr)
	}
	log := slog.New(slog.NewTextHandler(logw, nil))
	rd := repodata.New(root, condapkg.DefaultLimits(), log)
	arrivals := &index.Arrivals{}
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	al, err := audit.Open(auditFile, log)
	if err != nil {
		t.Fatal(err)
	}
	o := server.Options{
		Store: st, Auth: a, WaitIndex: true, Log: log, Lifecycle: lifecycle.New(st),
		Limits:  server.Limits{Arrivals: arrivals, Package: condapkg.DefaultLimits(), MaxUploadSize: 64 << 20, MaxConcurrent: 16},
		Observe: server.Observability{Audit: al},
	}
	var runner index.Runner = rd
	if indexDelay > 0 {
		runner = slowRunner{rd, indexDelay}
	}
	ix := index.New(runner, log, index.WithTimeout(time.Minute), index.WithArrivals(arrivals))
	t.Cleanup(ix.Close)
	if err := ix.Index(context.Background(), "noarch"); err != nil {
		t.Fatal(err)
	}
	o.Indexer = ix
	for _, opt := range opts {
		opt(&o)
	}
	srv := server.New(o)
	hs := httptest.NewUnstartedServer(srv)
	hs.EnableHTTP2 = true
	hs.Config.HTTP2 = server.HTTP2Config()
	hs.Config.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn) // as the daemon's
	hs.StartTLS()
	t.Cleanup(hs.Close)
	return &env{url: hs.URL + "/", client: hs.Client(), root: root, ix: ix, srv: srv, httpSrv: hs, logs: logs, audit: auditFile}
}

func mustHash(tok string) [32]byte {
	h, err := auth.ParseHash(auth.Hash(auth.DefaultSalt, tok))
	if err != nil {
		panic(err)
	}
	return h
}

// part is one multipart form part.
type part struct {
	name, filename string
	data           []byte
}

func form(parts ...part) (string, []byte) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		if p.filename != "" {
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="%s"; filename="%s"`, p.name, p.filename))
			h.Set("Content-Type", "application/octet-stream")
		} else {
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="%s"`, p.name))
		}
		w, _ := mw.CreatePart(h)
		w.Write(p.data)
	}
	mw.Close()
	return mw.FormDataContentType(), buf.Bytes()
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (e *env) post(t *testing.T, header http.Header, contentType string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return e.do(t, req)
}

func (e *env) do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if n := strings.Count(strings.TrimSuffix(string(b), "\n"), "\n"); n != 0 {
		t.Errorf("response is not one line: %q", b)
	}
	if err := json.Unmarshal(b, &r.body); err != nil {
		t.Fatalf("response is not JSON: %q", b)
	}
	return r
}

func (e *env) upload(t *testing.T, filename string, data []byte) response {
	t.Helper()
	ct, body := form(part{name: "token", data: []byte(token)}, part{name: "artifact", filename: filename, data: data})
	return e.post(t, nil, ct, body)
}

// files lists every file below the channel root except the index files,
// which must be valid JSON wherever they are.
func (e *env) files(t testing.TB) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(e.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(e.root, path)
		switch {
		case strings.Contains(rel, "/"+repodata.CacheDir+"/"):
		case d.Name() == "repodata.json" || d.Name() == "run_exports.json":
			b, err := os.ReadFile(path)
			if err != nil || !json.Valid(b) {
				t.Errorf("%s is not valid JSON: %v", rel, err)
			}
		case strings.HasSuffix(d.Name(), ".msgpack.zst") || strings.HasSuffix(d.Name(), ".json.zst"):
			// the other index files (their content is tested in repodata)
		default:
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// listed returns the filenames in subdir's repodata.json.
func (e *env) listed(t *testing.T, subdir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, subdir, "repodata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sec := range []string{"packages", "packages.conda"} {
		var m map[string]any
		json.Unmarshal(doc[sec], &m)
		for k := range m {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return names
}

// TestCorpusUploads uploads every valid package of the corpus and checks
// that it lands in the subdir its index.json names and is indexed.
func TestCorpusUploads(t *testing.T) {
	e := start(t)
	want := map[string][]string{}
	for _, p := range corpus.Load(t, "pkgs") {
		data, err := os.ReadFile(p.Path())
		if err != nil {
			t.Fatal(err)
		}
		r := e.upload(t, p.Name(), data)
		// Two corpus files share a filename but not their bytes
		// (zlib win-32/win-64 differ in subdir; test-package differs in
		// content): the second of a same-subdir pair is a conflict.
		if r.status == http.StatusConflict {
			continue
		}
		if r.status != http.StatusCreated {
			t.Fatalf("%s: status %d: %s", p.File, r.status, r.raw)
		}
		if r.body["subdir"] != p.Subdir || r.body["sha256"] != p.SHA256 || r.body["md5"] != p.MD5 || r.body["size"] != float64(p.Size) || r.body["indexed"] != true {
			t.Errorf("%s: response %s does not match the manifest", p.File, r.raw)
		}
		got, err := os.ReadFile(filepath.Join(e.root, p.Subdir, p.Name()))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: stored file differs: %v", p.File, err)
		}
		want[p.Subdir] = append(want[p.Subdir], p.Name())
	}
	for sd, names := range want {
		slices.Sort(names)
		names = slices.Compact(names)
		if got := e.listed(t, sd); !slices.Equal(got, names) {
			t.Errorf("%s/repodata.json lists %v, want %v", sd, got, names)
		}
	}
	if got := e.listed(t, "noarch"); len(got) == 0 {
		t.Error("noarch is empty")
	}
}

// TestCorpusBadUploads uploads every bad corpus file as it is and checks
// the status, the reason, and that nothing was stored.
func TestCorpusBadUploads(t *testing.T) {
	want := map[string]string{
		"bad_package.tar.bz2":                       `filename "bad_package.tar.bz2" is not name-version-build.tar.bz2`,
		"another_bad_package.conda":                 `filename "another_bad_package.conda" is not name-version-build.conda`,
		"nano-2.4.1-0.tar.bz2":                      `has no "subdir" (a legacy package)`,
		"a.tar.bz2":                                 `filename "a.tar.bz2" is not name-version-build`,
		"subfolder.tar.bz2":                         `filename "subfolder.tar.bz2" is not name-version-build`,
		"fly-2.5.2-0.tar.bz2":                       "not bzip2-compressed: an uncompressed tar",
		"pkg_with_unicode.conda":                    "is not name-version-build",
		"pkg_with_unicode.tar.bz2":                  "is not name-version-build",
		"arch-package-1.0-0.conda":                  `subdir "linux-fake" in info/index.json is not an allowed platform subdir`,
		"repodata.tar.bz2":                          "is not name-version-build",
		"info-only-1.0.0-0.conda":                   `no zip entry "pkg-info-only-1.0.0-0.tar.zst"`,
		"zip64-test-1.0.0-0.conda":                  `has no "subdir"`,
		"dotslash-test-1.0.0-0.conda":               `has ./info/index.json but no info/index.json`,
		"symlink-test-1.0.0-0.conda":                `has no "subdir"`,
		"sparse-test-1.0.0-0.conda":                 `has no "subdir"`,
		"foo-0.1-0.tar.bz2":                         `has no "subdir"`,
		"ca-certificates-2024.7.4-hbcca054_0.conda": `unexpected zip entry "Users/`,
	}
	e := start(t)
	for _, p := range corpus.Load(t, "bad") {
		t.Run(p.File, func(t *testing.T) {
			data, err := os.ReadFile(p.Path())
			if err != nil {
				t.Fatal(err)
			}
			r := e.upload(t, p.Name(), data)
			reason, ok := want[p.Name()]
			if !ok {
				t.Fatalf("no expectation for %s", p.Name())
			}
			if r.status != http.StatusBadRequest || !strings.Contains(r.body["error"].(string), reason) {
				t.Errorf("status %d %s, want 400 with %q", r.status, r.raw, reason)
			}
			if files := e.files(t); len(files) != 0 {
				t.Errorf("left behind: %v", files)
			}
		})
	}
}

func TestStatusCodes(t *testing.T) {
	testneed.Tool(t, "bzip2", "bzip2")
	good := pkgtest.Simple("demo", "1.0", "0", "linux-64")
	conda := pkgtest.Conda(t, good)
	tarbz2 := pkgtest.TarBz2(t, good)
	other := pkgtest.Simple("demo", "1.0", "0", "linux-64")
	other.Payload[0].Data = []byte("different bytes")
	conflicting := pkgtest.Conda(t, other)

	tok := part{name: "token", data: []byte(token)}
	art := func(name string, data []byte) part { return part{name: "artifact", filename: name, data: data} }
	bearer := http.Header{"Authorization": {"Bearer " + token}}

	tests := []struct {
		name   string
		setup  func(t *testing.T, e *env)
		header http.Header
		parts  []part
		ct     string // overrides the multipart content type
		body   []byte // overrides the form
		status int
		reason string
		stored []string
	}{
		{name: "created", parts: []part{tok, art("demo-1.0-0.conda", conda)}, status: 201, stored: []string{"linux-64/demo-1.0-0.conda"}},
		{name: "tar.bz2 created", parts: []part{tok, art("demo-1.0-0.tar.bz2", tarbz2)}, status: 201, stored: []string{"linux-64/demo-1.0-0.tar.bz2"}},
		{name: "bearer header", header: bearer, parts: []part{art("demo-1.0-0.conda", conda)}, status: 201, stored: []string{"linux-64/demo-1.0-0.conda"}},
		{name: "original arch field ignored", parts: []part{tok, {name: "arch", data: []byte("osx-64")}, art("demo-1.0-0.conda", conda)}, status: 201, stored: []string{"linux-64/demo-1.0-0.conda"}},
		{name: "identical re-upload", setup: func(t *testing.T, e *env) { e.upload(t, "demo-1.0-0.conda", conda) },
			parts: []part{tok, art("demo-1.0-0.conda", conda)}, status: 200, stored: []string{"linux-64/demo-1.0-0.conda"}},
		{name: "conflict", setup: func(t *testing.T, e *env) { e.upload(t, "demo-1.0-0.conda", conda) },
			parts: []part{tok, art("demo-1.0-0.conda", conflicting)}, status: 409, reason: "already exists", stored: []string{"linux-64/demo-1.0-0.conda"}},
		{name: "no token", parts: []part{art("demo-1.0-0.conda", conda)}, status: 400, reason: "token field must come before"},
		{name: "no token no artifact", parts: []part{{name: "arch", data: []byte("x")}}, status: 401, reason: "missing or invalid token"},
		{name: "wrong token", parts: []part{{name: "token", data: []byte("nope")}, art("demo-1.0-0.conda", conda)}, status: 401, reason: "missing or invalid token"},
		{name: "wrong bearer", header: http.Header{"Authorization": {"Bearer nope"}}, parts: []part{art("demo-1.0-0.conda", conda)}, status: 401},
		{name: "wrong basic auth", header: http.Header{"Authorization": {"Basic Zm9vOmJhcg=="}}, parts: []part{art("demo-1.0-0.conda", conda)}, status: 401, reason: "missing or invalid token"},
		{name: "basic auth", header: http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("ci:"+token))}}, parts: []part{art("demo-1.0-0.conda", conda)}, status: 201, stored: []string{"linux-64/demo-1.0-0.conda"}},
		{name: "bearer lower case", header: http.Header{"Authorization": {"bearer " + token}}, parts: []part{art("demo-1.0-0.conda", conda)}, status: 201, stored: []string{"linux-64/demo-1.0-0.conda"}},
		{name: "BEARER", header: http.Header{"Authorization": {"BEARER " + token}}, parts: []part{art("demo-1.0-0.conda", conda)}, status: 201, stored: []string{"linux-64/demo-1.0-0.conda"}},
		{name: "unknown scheme", header: http.Header{"Authorization": {"Token " + token}}, parts: []part{art("demo-1.0-0.conda", conda)}, status: 401, reason: "Bearer"},
		{name: "token after artifact", parts: []part{art("demo-1.0-0.conda", conda), tok}, status: 400, reason: "token field must come before the artifact"},
		{name: "huge token", parts: []part{{name: "token", data: bytes.Repeat([]byte("x"), 1<<20)}, art("demo-1.0-0.conda", conda)}, status: 400, reason: "longer than 1024 bytes"},
		{name: "no artifact", parts: []part{tok}, status: 400, reason: "no artifact field"},
		{name: "two artifacts", parts: []part{tok, art("demo-1.0-0.conda", conda), art("demo-1.0-0.tar.bz2", tarbz2)}, status: 400, reason: "one artifact per request"},
		{name: "artifact without filename", parts: []part{tok, {name: "artifact", data: conda}}, status: 400, reason: "file field with a filename"},
		{name: "other file field", parts: []part{tok, art("demo-1.0-0.conda", conda), {name: "extra", filename: "x", data: []byte("x")}}, status: 400, reason: `unexpected file field "extra"`},
		{name: "too many fields", parts: slices.Repeat([]part{{name: "x", data: []byte("x")}}, 20), status: 400, reason: "too many form fields"},
		{name: "traversal", parts: []part{tok, art("../linux-64/demo-1.0-0.conda", conda)}, status: 400, reason: "path separator"},
		{name: "absolute", parts: []part{tok, art("/tmp/demo-1.0-0.conda", conda)}, status: 400, reason: "path separator"},
		{name: "backslash", parts: []part{tok, art(`..\demo-1.0-0.conda`, conda)}, status: 400, reason: "path separator"},
		{name: "percent encoded", parts: []part{tok, art("%2e%2e%2fdemo-1.0-0.conda", conda)}, status: 400, reason: "contains '%'"},
		{name: "name mismatch", parts: []part{tok, art("demo-2.0-0.conda", conda)}, status: 400, reason: `unexpected zip entry "pkg-demo-1.0-0.tar.zst"`},
		{name: "not multipart", ct: "application/octet-stream", body: conda, status: 400, reason: "multipart/form-data"},
		{name: "truncated multipart", ct: "multipart/form-data; boundary=xyz", body: []byte("--xyz\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n" + token + "\r\n--xyz\r\nContent-Disposition: form-data; name=\"artifact\"; filename=\"demo-1.0-0.conda\"\r\n\r\n" + string(conda[:100])), status: 400, reason: "ended before the multipart form was complete"},
		{name: "too large", parts: []part{tok, art("demo-1.0-0.conda", append(slices.Clone(conda), make([]byte, 65<<20)...))}, status: 413, reason: "max_upload_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t)
			if tt.setup != nil {
				tt.setup(t, e)
			}
			ct, body := form(tt.parts...)
			if tt.ct != "" {
				ct, body = tt.ct, tt.body
			}
			r := e.post(t, tt.header, ct, body)
			if r.status != tt.status {
				t.Fatalf("status %d %s, want %d", r.status, r.raw, tt.status)
			}
			if tt.reason != "" {
				msg, _ := r.body["error"].(string)
				if !strings.Contains(msg, tt.reason) {
					t.Errorf("error %q does not contain %q", msg, tt.reason)
				}
			}
			got := e.files(t)
			if !slices.Equal(got, tt.stored) {
				t.Errorf("files %v, want %v", got, tt.stored)
			}
		})
	}
}

func TestMethodsAndPaths(t *testing.T) {
	e := start(t)
	for _, tt := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/", 405}, {"PUT", "/", 405}, {"DELETE", "/", 405},
		{"GET", "/healthz", 200}, {"POST", "/healthz", 405},
		{"GET", "/linux-64/repodata.json", 404}, {"POST", "/upload", 404},
	} {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, strings.TrimSuffix(e.url, "/")+tt.path, nil)
			r := e.do(t, req)
			if r.status != tt.status {
				t.Errorf("status %d %s, want %d", r.status, r.raw, tt.status)
			}
			if tt.status == 405 && r.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

// TestSameNameRace uploads the same filename with different bytes from
// several clients at once: exactly one wins, the rest get 409, and the
// stored bytes are the winner's.
func TestSameNameRace(t *testing.T) {
	e := start(t)
	const n = 8
	var pkgs [n][]byte
	for i := range pkgs {
		s := pkgtest.Simple("race", "1.0", "0", "noarch")
		s.Payload[0].Data = []byte(fmt.Sprintf("variant %d", i))
		pkgs[i] = pkgtest.Conda(t, s)
	}
	for round := range 100 {
		name := fmt.Sprintf("race-1.0-%d.conda", round)
		var wg sync.WaitGroup
		results := make([]response, n)
		for i := range n {
			s := pkgtest.Simple("race", "1.0", fmt.Sprint(round), "noarch")
			s.Payload[0].Data = []byte(fmt.Sprintf("variant %d", i))
			data := pkgtest.Conda(t, s)
			pkgs[i] = data
			wg.Go(func() { results[i] = e.upload(t, name, data) })
		}
		wg.Wait()
		winner := -1
		for i, r := range results {
			switch r.status {
			case 201:
				if winner >= 0 {
					t.Fatalf("round %d: two winners", round)
				}
				winner = i
			case 409:
			default:
				t.Fatalf("round %d: status %d %s", round, r.status, r.raw)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no winner", round)
		}
		got, _ := os.ReadFile(filepath.Join(e.root, "noarch", name))
		if !bytes.Equal(got, pkgs[winner]) {
			t.Fatalf("round %d: stored bytes are not the winner's", round)
		}
	}
	if got := e.files(t); len(got) != 100 {
		t.Errorf("files %v", got)
	}
}

// TestBusyAndDrain checks 503 with Retry-After when the concurrency limit
// is reached and while draining.
func TestBusyAndDrain(t *testing.T) {
	e := start(t, func(o *server.Options) { o.Limits.MaxConcurrent = 1 })
	// Hold one upload open by sending its body slowly.
	pr, pw := io.Pipe()
	ct, body := form(part{name: "token", data: []byte(token)}, part{name: "artifact", filename: "slow-1.0-0.conda", data: pkgtest.Conda(t, pkgtest.Simple("slow", "1.0", "0", "noarch"))})
	req, _ := http.NewRequest(http.MethodPost, e.url, pr)
	req.Header.Set("Content-Type", ct)
	done := make(chan response)
	go func() { done <- e.do(t, req) }()
	pw.Write(body[:200])
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.Stats().InFlight == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	r := e.upload(t, "demo-1.0-0.conda", pkgtest.Conda(t, pkgtest.Simple("demo", "1.0", "0", "noarch")))
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Errorf("busy: status %d %s, Retry-After %q", r.status, r.raw, r.header.Get("Retry-After"))
	}
	pw.Write(body[200:])
	pw.Close()
	if r := <-done; r.status != 201 {
		t.Errorf("slow upload: %d %s", r.status, r.raw)
	}
	e.srv.Drain()
	r = e.upload(t, "demo-1.0-0.conda", pkgtest.Conda(t, pkgtest.Simple("demo", "1.0", "0", "noarch")))
	if r.status != 503 || !strings.Contains(r.raw, "shutting down") {
		t.Errorf("draining: status %d %s", r.status, r.raw)
	}
}

// TestTLSVersions checks that TLS 1.1 is refused and HTTP/2 is offered.
func TestTLSVersions(t *testing.T) {
	e := start(t)
	tr := e.client.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.MaxVersion = tls.VersionTLS11
	tr.TLSClientConfig.MinVersion = tls.VersionTLS10
	if _, err := (&http.Client{Transport: tr}).Get(strings.TrimSuffix(e.url, "/") + "/healthz"); err == nil {
		t.Error("TLS 1.1 handshake succeeded")
	}
	resp, err := e.client.Get(strings.TrimSuffix(e.url, "/") + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2", resp.Proto)
	}
}

// TestBurstCoalesces checks that a burst of uploads into one subdir needs
// far fewer index runs than uploads, and that every package is listed
// when its response returns. Index runs take 200 ms here, like a small
// conda index run, so that the burst arrives during the first run.
func TestBurstCoalesces(t *testing.T) {
	e := startSlow(t, 200*time.Millisecond, func(o *server.Options) { o.Limits.MaxConcurrent = 64 })
	before := e.ix.Runs()
	const n = 40
	var wg sync.WaitGroup
	for i := range n {
		data := pkgtest.Conda(t, pkgtest.Simple("burst", "1.0", fmt.Sprint(i), "linux-64"))
		wg.Go(func() {
			name := fmt.Sprintf("burst-1.0-%d.conda", i)
			r := e.upload(t, name, data)
			if r.status != 201 || r.body["indexed"] != true {
				t.Errorf("%s: %d %s", name, r.status, r.raw)
				return
			}
			if !slices.Contains(e.listed(t, "linux-64"), name) {
				t.Errorf("%s not listed when its response returned", name)
			}
		})
	}
	wg.Wait()
	runs := e.ix.Runs() - before
	t.Logf("%d uploads, %d index runs", n, runs)
	// One run for the first upload, one for the uploads that arrived
	// during it, and a few for stragglers on a loaded machine.
	if runs > 6 {
		t.Errorf("%d index runs for %d uploads: not coalesced", runs, n)
	}
}
