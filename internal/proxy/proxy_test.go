package proxy

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
)

// upstream is a real channel, indexed by the built-in indexer, served
// over TLS on loopback; hook, if set, may answer a request instead.
type upstream struct {
	root string
	srv  *httptest.Server
	hits sync.Map // path -> *atomic.Int64
	// protos holds the protocol of the last request of each path.
	protos sync.Map // path -> string
	hook   atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
}

var names = []string{"numpy", "numba", "scipy", "zlib"}

func newUpstream(t testing.TB) *upstream { return newUpstreamWith(t, nil) }

// newUpstreamWith lets add put more packages in linux-64 before it is
// indexed.
func newUpstreamWith(t testing.TB, add func(dir string)) *upstream {
	t.Helper()
	u := &upstream{root: t.TempDir()}
	dir := filepath.Join(u.root, "linux-64")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if add != nil {
		add(dir)
	}
	for i, n := range names {
		s := pkgtest.Simple(n, "1.0", "h0_"+string(rune('0'+i)), "linux-64")
		for _, ext := range []string{".conda", ".tar.bz2"} {
			if err := os.WriteFile(filepath.Join(dir, s.Stem()+ext), pkgtest.Build(t, s, ext), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	w := repodata.New(u.root, condapkg.DefaultLimits(), slog.New(slog.DiscardHandler), repodata.WithFiles(repodata.DefaultFiles()))
	if err := w.Run(context.Background(), "linux-64"); err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(http.Dir(u.root))
	// HTTP/2 as well as HTTP/1.1, as conda.anaconda.org speaks both.
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := u.hits.LoadOrStore(r.URL.Path, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
		u.protos.Store(r.URL.Path, r.Proto)
		if h := u.hook.Load(); h != nil && (*h)(w, r) {
			return
		}
		files.ServeHTTP(w, r)
	}))
	u.srv.EnableHTTP2 = true
	u.srv.StartTLS()
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) count(path string) int64 {
	c, ok := u.hits.Load(path)
	if !ok {
		return 0
	}
	return c.(*atomic.Int64).Load()
}

// file is the bytes the upstream serves at rel.
// proto is the protocol of the last request of path, or "".
func (u *upstream) proto(path string) string {
	p, _ := u.protos.Load(path)
	s, _ := p.(string)
	return s
}

func (u *upstream) file(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(u.root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (u *upstream) setHook(h func(w http.ResponseWriter, r *http.Request) bool) { u.hook.Store(&h) }

// recorder counts what the proxy tells its observer.
type recorder struct {
	mu     sync.Mutex
	errors map[string]int
	hits   map[string]int
	stale  int
}

func (r *recorder) Cache(_, kind string, hit bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if hit {
		r.hits[kind]++
	}
}
func (r *recorder) Fetched(string, int64) {}
func (r *recorder) UpstreamError(_, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors[reason]++
}
func (r *recorder) Stale(string) { r.mu.Lock(); r.stale++; r.mu.Unlock() }

func (r *recorder) errorsOf(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errors[reason]
}

// front is the proxy behind a test server at /, the way the server's
// /proxy/<name>/ routes call it.
type front struct {
	p   *Proxy
	srv *httptest.Server
	obs *recorder
	dir string
	log *logBuffer
}

// logBuffer holds what a proxy logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newFront(t *testing.T, u *upstream, edit func(*Upstream)) *front {
	t.Helper()
	up := Upstream{Name: "cf", URL: u.srv.URL, Subdirs: []string{"linux-64", "noarch"}, RootCAs: certPool(u.srv),
		IndexTTL: time.Hour, FetchTimeout: 20 * time.Second, StallTimeout: 5 * time.Second, MaxIndexSize: 64 << 20}
	if edit != nil {
		edit(&up)
	}
	return startFront(t, up, t.TempDir())
}

func startFront(t *testing.T, up Upstream, dir string) *front { return startFrontB(t, up, dir) }

func startFrontB(t testing.TB, up Upstream, dir string) *front {
	t.Helper()
	obs := &recorder{errors: map[string]int{}, hits: map[string]int{}}
	logs := &logBuffer{}
	p, err := New(up, dir, slog.New(slog.NewTextHandler(logs, nil)), obs)
	if err != nil {
		t.Fatal(err)
	}
	f := &front{p: p, obs: obs, dir: dir, log: logs}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := p.Serve(w, r, strings.TrimPrefix(r.URL.Path, "/"))
		if e, ok := err.(*Error); ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(e.Status)
			json.NewEncoder(w).Encode(map[string]string{"error": e.Msg})
		} else if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func certPool(s *httptest.Server) *x509.CertPool {
	return s.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return resp, b
}

// packagesOf lists the filenames of a repodata.json.
func packagesOf(t *testing.T, b []byte) []string {
	t.Helper()
	var rd struct {
		Packages      map[string]json.RawMessage `json:"packages"`
		PackagesConda map[string]json.RawMessage `json:"packages.conda"`
	}
	if err := json.Unmarshal(b, &rd); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	var fns []string
	for fn := range rd.Packages {
		fns = append(fns, fn)
	}
	for fn := range rd.PackagesConda {
		fns = append(fns, fn)
	}
	slices.Sort(fns)
	return fns
}

func unzstd(t *testing.T, b []byte) []byte {
	t.Helper()
	d, _ := zstd.NewReader(nil)
	defer d.Close()
	out, err := d.DecodeAll(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// shardNames decodes a shard index's names and shard file names.
func shardNames(t *testing.T, b []byte) map[string]string {
	t.Helper()
	var ix struct {
		Shards map[string][]byte `msgpack:"shards"`
	}
	if err := msgpack.Unmarshal(unzstd(t, b), &ix); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for n, sum := range ix.Shards {
		out[n] = hex.EncodeToString(sum) + ".msgpack.zst"
	}
	return out
}

func cachedFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(dir, "pkgs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, filepath.Base(p))
		}
		return nil
	})
	slices.Sort(out)
	return out
}

func TestFilteredProxy(t *testing.T) {
	u := newUpstream(t)
	f := newFront(t, u, func(up *Upstream) { up.Include = []string{"num*", "scipy"}; up.Exclude = []string{"numba"} })
	want := []string{"numpy-1.0-h0_0.conda", "numpy-1.0-h0_0.tar.bz2", "scipy-1.0-h0_2.conda", "scipy-1.0-h0_2.tar.bz2"}
	_, js := get(t, f.srv.URL+"/linux-64/repodata.json")
	if got := packagesOf(t, js); !slices.Equal(got, want) {
		t.Errorf("repodata.json lists %v, want %v", got, want)
	}
	_, zs := get(t, f.srv.URL+"/linux-64/repodata.json.zst")
	if !bytes.Equal(unzstd(t, zs), js) {
		t.Error("repodata.json.zst is not repodata.json compressed")
	}
	_, rx := get(t, f.srv.URL+"/linux-64/run_exports.json")
	if got := packagesOf(t, rx); !slices.Equal(got, want) {
		t.Errorf("run_exports.json lists %v, want %v", got, want)
	}
	resp, six := get(t, f.srv.URL+"/linux-64/repodata_shards.msgpack.zst")
	shards := shardNames(t, six)
	if resp.StatusCode != 200 || len(shards) != 2 || shards["numpy"] == "" || shards["scipy"] == "" {
		t.Fatalf("shard index: %d %v", resp.StatusCode, shards)
	}
	if resp, b := get(t, f.srv.URL+"/linux-64/"+shards["numpy"]); resp.StatusCode != 200 || !bytes.Contains(unzstd(t, b), []byte("numpy-1.0-h0_0.conda")) {
		t.Errorf("shard: %d", resp.StatusCode)
	}
	// An excluded package's shard and file: 404 even by exact name.
	upresp, err := u.srv.Client().Get(u.srv.URL + "/linux-64/repodata_shards.msgpack.zst")
	if err != nil {
		t.Fatal(err)
	}
	upix, _ := io.ReadAll(upresp.Body)
	upresp.Body.Close()
	for _, path := range []string{"/linux-64/" + shardNames(t, upix)["numba"], "/linux-64/numba-1.0-h0_1.conda", "/linux-64/zlib-1.0-h0_3.tar.bz2"} {
		if resp, _ := get(t, f.srv.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
	if n := u.count("/linux-64/numba-1.0-h0_1.conda"); n != 0 {
		t.Errorf("an excluded package was fetched from the upstream %d times", n)
	}
}

func TestPackageFetchedOnceVerifiedAndCached(t *testing.T) {
	u := newUpstream(t)
	f := newFront(t, u, nil)
	const fn = "numpy-1.0-h0_0.conda"
	direct := u.file(t, "linux-64/"+fn)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			resp, b := get(t, f.srv.URL+"/linux-64/"+fn)
			if resp.StatusCode != 200 || !bytes.Equal(b, direct) {
				t.Errorf("status %d, %d bytes, want the upstream's %d", resp.StatusCode, len(b), len(direct))
			}
		})
	}
	wg.Wait()
	if n := u.count("/linux-64/" + fn); n != 1 {
		t.Errorf("the upstream was asked %d times, want once", n)
	}
	// Packages come over HTTP/1.1, index files over HTTP/2 (newClient).
	if pk, ix := u.proto("/linux-64/"+fn), u.proto("/linux-64/repodata_shards.msgpack.zst"); pk != "HTTP/1.1" || ix != "HTTP/2.0" {
		t.Errorf("the package was fetched over %q, its index over %q; want HTTP/1.1 and HTTP/2.0", pk, ix)
	}
	f.settle(t)
	if got := cachedFiles(t, f.dir); !slices.Equal(got, []string{fn}) {
		t.Errorf("cache holds %v, want exactly what was fetched", got)
	}
	// A restart keeps the cache; the upstream is not asked again.
	f2 := startFront(t, f.p.up, f.dir)
	if resp, b := get(t, f2.srv.URL+"/linux-64/"+fn); resp.StatusCode != 200 || !bytes.Equal(b, direct) || u.count("/linux-64/"+fn) != 1 {
		t.Errorf("after a restart: %d, asked %d times", resp.StatusCode, u.count("/linux-64/"+fn))
	}
}

// A cached package removed from the disk behind the proxy's back is
// fetched again, not answered with an error.
func TestCachedPackageRemovedIsFetchedAgain(t *testing.T) {
	u := newUpstream(t)
	f := newFront(t, u, nil)
	const fn = "numpy-1.0-h0_0.conda"
	direct := u.file(t, "linux-64/"+fn)
	for range 2 {
		if resp, b := get(t, f.srv.URL+"/linux-64/"+fn); resp.StatusCode != 200 || !bytes.Equal(b, direct) {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(b))
		}
		f.settle(t)
	}
	if err := os.Remove(filepath.Join(f.dir, "pkgs", "linux-64", fn)); err != nil {
		t.Fatal(err)
	}
	if resp, b := get(t, f.srv.URL+"/linux-64/"+fn); resp.StatusCode != 200 || !bytes.Equal(b, direct) {
		t.Errorf("after the file was removed: status %d, %d bytes", resp.StatusCode, len(b))
	}
	f.settle(t)
	if n := u.count("/linux-64/" + fn); n != 2 {
		t.Errorf("the upstream was asked %d times, want twice", n)
	}
	if got := cachedFiles(t, f.dir); !slices.Equal(got, []string{fn}) {
		t.Errorf("cache holds %v, want the package fetched again", got)
	}
}

// Hits on a cached package keep its validators, so that a client's
// conditional request gets a 304: the last use is written to the file's
// mtime at most once a minute, not on every request.
func TestCachedPackageValidatorsStable(t *testing.T) {
	u := newUpstream(t)
	f := newFront(t, u, nil)
	url := f.srv.URL + "/linux-64/numpy-1.0-h0_0.conda"
	get(t, url)
	f.settle(t)
	first, _ := get(t, url)
	etag := first.Header.Get("ETag")
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("If-None-Match", etag)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified || etag == "" {
		t.Errorf("If-None-Match %s on a hit: %d (ETag now %s), want 304", etag, resp.StatusCode, resp.Header.Get("ETag"))
	}
	// A use written to the file (once a minute, forced here) and a
	// mirror's check leave the validators as they were.
	const key = "linux-64/numpy-1.0-h0_0.conda"
	f.p.lru.mu.Lock()
	f.p.lru.items[key].stamped = time.Time{}
	f.p.lru.mu.Unlock()
	time.Sleep(10 * time.Millisecond) // a later time to write
	get(t, url)
	f.p.lru.check(key)
	again, _ := get(t, url)
	if again.Header.Get("ETag") != etag || again.Header.Get("Last-Modified") != first.Header.Get("Last-Modified") {
		t.Errorf("after a use was written: ETag %s, Last-Modified %s; want %s and %s", again.Header.Get("ETag"),
			again.Header.Get("Last-Modified"), etag, first.Header.Get("Last-Modified"))
	}
	// The use is what orders eviction across a restart.
	f2 := startFront(t, f.p.up, f.dir)
	if used := f2.p.lru.items[key].used; time.Since(used) > time.Minute {
		t.Errorf("after a restart the package's last use is %v", used)
	}
}

func TestUpstreamDown(t *testing.T) {
	u := newUpstream(t)
	f := newFront(t, u, func(up *Upstream) { up.IndexTTL = time.Nanosecond })
	const fn = "scipy-1.0-h0_2.tar.bz2"
	get(t, f.srv.URL+"/linux-64/repodata.json")
	get(t, f.srv.URL+"/linux-64/"+fn)
	// The client has every byte before the fetch is renamed into the
	// cache; stopping the upstream before then would cut the fetch.
	f.settle(t)
	u.srv.Close()
	resp, b := get(t, f.srv.URL+"/linux-64/repodata.json")
	if resp.StatusCode != 200 || resp.Header.Get("X-Proxy-Stale") != "true" || !strings.HasPrefix(resp.Header.Get("Warning"), "110") || len(packagesOf(t, b)) != 8 {
		t.Errorf("stale index: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := get(t, f.srv.URL+"/linux-64/"+fn); resp.StatusCode != 200 {
		t.Errorf("cached package: %d", resp.StatusCode)
	}
	resp, b = get(t, f.srv.URL+"/linux-64/numpy-1.0-h0_0.conda")
	if resp.StatusCode != http.StatusBadGateway || !bytes.Contains(b, []byte("cannot be reached")) {
		t.Errorf("never-fetched package: %d %s", resp.StatusCode, b)
	}
	if f.p.Degraded() == "" || f.obs.stale == 0 {
		t.Errorf("degraded %q, stale %d", f.p.Degraded(), f.obs.stale)
	}
}

func TestStaleTempRemovedAtStart(t *testing.T) {
	u := newUpstream(t)
	f := newFront(t, u, nil)
	// A package's, an index file's and a shard's, as kill -9 leaves them.
	if resp, _ := get(t, f.srv.URL+"/linux-64/numpy-1.0-h0_0.conda"); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	f.settle(t)
	var tmps []string
	filepath.WalkDir(f.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && path != f.dir {
			tmps = append(tmps, filepath.Join(path, ".x.json.tmp-123"))
		}
		return err
	})
	tmps = append(tmps, filepath.Join(f.dir, "pkgs", "linux-64", ".numpy-1.0-h0_0.conda.tmp-123"))
	for _, tmp := range tmps {
		if err := os.WriteFile(tmp, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if len(tmps) < 5 {
		t.Fatalf("the cache has only %v", tmps)
	}
	startFront(t, f.p.up, f.dir)
	for _, tmp := range tmps {
		if _, err := os.Stat(tmp); !os.IsNotExist(err) {
			t.Errorf("a temp file survived a restart: %v", err)
		}
	}
}

func TestEviction(t *testing.T) {
	u := newUpstream(t)
	fi, _ := os.Stat(filepath.Join(u.root, "linux-64", "numpy-1.0-h0_0.conda"))
	f := newFront(t, u, func(up *Upstream) { up.CacheSize = fi.Size()*2 + 100 })
	for _, fn := range []string{"numpy-1.0-h0_0.conda", "scipy-1.0-h0_2.conda", "numpy-1.0-h0_0.conda", "zlib-1.0-h0_3.conda"} {
		if resp, _ := get(t, f.srv.URL+"/linux-64/"+fn); resp.StatusCode != 200 {
			t.Fatalf("%s: %d", fn, resp.StatusCode)
		}
		f.settle(t)
		time.Sleep(10 * time.Millisecond) // distinct last-use times
	}
	if got := cachedFiles(t, f.dir); !slices.Equal(got, []string{"numpy-1.0-h0_0.conda", "zlib-1.0-h0_3.conda"}) {
		t.Errorf("cache holds %v, want the two most recently used", got)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "index", "main", "linux-64", shardIndexFile)); err != nil {
		t.Errorf("eviction removed an index file: %v", err)
	}
}

// settle waits until no fetch is in flight: a package is renamed into
// the cache just after its client has the last bytes.
func (f *front) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.p.flights.mu.Lock()
		n := len(f.p.flights.m)
		f.p.flights.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("fetches still in flight")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLabels: an upstream's label is a channel of its own, fetched from
// the upstream's label/<L>/ and cached apart from its root's index.
func TestLabels(t *testing.T) {
	u := newUpstream(t)
	src := filepath.Join(u.root, "linux-64")
	dst := filepath.Join(u.root, "label", "dev", "linux-64")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	f := newFront(t, u, func(up *Upstream) { up.Include = []string{"zlib"} })
	resp, b := get(t, f.srv.URL+"/label/dev/linux-64/repodata.json")
	if got := packagesOf(t, b); resp.StatusCode != 200 || len(got) != 2 || u.count("/label/dev/linux-64/repodata.json.zst") != 1 {
		t.Errorf("label index: %d %v, asked the upstream's label %d times", resp.StatusCode, got, u.count("/label/dev/linux-64/repodata.json.zst"))
	}
	if resp, _ := get(t, f.srv.URL+"/label/dev/linux-64/zlib-1.0-h0_3.conda"); resp.StatusCode != 200 || u.count("/label/dev/linux-64/zlib-1.0-h0_3.conda") != 1 {
		t.Errorf("label package: %d", resp.StatusCode)
	}
	for _, path := range []string{"/label/Dev/linux-64/repodata.json", "/label/../linux-64/repodata.json", "/label/dev/win-64/repodata.json", "/label/dev/linux-64/.hidden"} {
		if resp, _ := get(t, f.srv.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
}

// TestMirrorSync: in mirror mode every included package is fetched ahead,
// once, and served with the upstream gone.
func TestMirrorSync(t *testing.T) {
	u := newUpstream(t)
	f := newFront(t, u, func(up *Upstream) { up.Mirror = true; up.Exclude = []string{"numba"} })
	if err := f.p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"numpy-1.0-h0_0.conda", "numpy-1.0-h0_0.tar.bz2", "scipy-1.0-h0_2.conda", "scipy-1.0-h0_2.tar.bz2", "zlib-1.0-h0_3.conda", "zlib-1.0-h0_3.tar.bz2"}
	if got := cachedFiles(t, f.dir); !slices.Equal(got, want) {
		t.Errorf("after a sync the cache holds %v, want %v", got, want)
	}
	if err := f.p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := u.count("/linux-64/numpy-1.0-h0_0.conda"); n != 1 {
		t.Errorf("a second sync fetched again: %d", n)
	}
	if st := f.p.Status(); st.LastSync == nil || st.SyncError != "" || st.CachedPackages != 6 {
		t.Errorf("status %+v", st)
	}
	u.srv.Close()
	for _, fn := range want {
		if resp, _ := get(t, f.srv.URL+"/linux-64/"+fn); resp.StatusCode != 200 {
			t.Errorf("%s with the upstream gone: %d", fn, resp.StatusCode)
		}
	}
	if err := f.p.Sync(context.Background()); err == nil || f.p.Status().SyncError == "" {
		t.Error("a sync with the upstream gone reported no error")
	}
}

// TestRefreshServesCopyMeanwhile: while one request waits for an index
// refresh, the others get the copy at hand rather than wait too.
func TestRefreshServesCopyMeanwhile(t *testing.T) {
	u := newUpstream(t)
	f := newFront(t, u, func(up *Upstream) { up.IndexTTL = time.Nanosecond; up.StallTimeout = 5 * time.Second })
	get(t, f.srv.URL+"/linux-64/repodata.json")
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	u.setHook(only("repodata.json.zst", func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(arrived) })
		<-release
		http.NotFound(w, r)
	}))
	first := make(chan int)
	go func() {
		resp, err := http.Get(f.srv.URL + "/linux-64/repodata.json")
		if err != nil {
			t.Error(err)
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-arrived
	// Had it waited, the refresh would have been cut after the stall
	// timeout and the copy served marked stale.
	if resp, b := get(t, f.srv.URL+"/linux-64/repodata.json"); resp.StatusCode != 200 || len(packagesOf(t, b)) != 8 || resp.Header.Get("X-Proxy-Stale") != "" {
		t.Errorf("during the refresh: %d %v", resp.StatusCode, resp.Header)
	}
	close(release)
	if st := <-first; st != 200 {
		t.Errorf("the request that waited for the refresh: %d", st)
	}
}

// A first fetch sends nothing of a package no larger than holdBack before
// it is verified (so a mismatch is a clean 502), and all but the last
// holdBack bytes of a larger one, whatever the sizes of the writes.
func TestHoldback(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []int
		sent   int
	}{
		{"one write under holdBack", []int{holdBack - 1}, 0},
		{"one write of holdBack", []int{holdBack}, 0},
		{"one write over holdBack", []int{holdBack + 1}, 1},
		{"small writes", []int{16 << 10, 16 << 10, 16 << 10, 16 << 10, 16 << 10}, 0},
		{"small writes past twice holdBack", slices.Repeat([]int{16 << 10}, 9), holdBack},
		{"large writes", []int{256 << 10, 256 << 10, 100}, 512<<10 - holdBack},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h := &holdback{w: rec, headers: func() {}}
			var all []byte
			for i, n := range tc.writes {
				b := bytes.Repeat([]byte{byte('a' + i)}, n)
				all = append(all, b...)
				h.Write(b)
			}
			if got := rec.Body.Len(); got != tc.sent || (tc.sent == 0 && h.started) || len(all)-got < min(holdBack, len(all)) {
				t.Errorf("before the check: %d bytes sent (started %v), want %d, and at least the last %d held", got, h.started, tc.sent, holdBack)
			}
			if !bytes.Equal(rec.Body.Bytes(), all[:rec.Body.Len()]) {
				t.Errorf("the bytes sent are not the package's first bytes")
			}
			h.flush()
			if !bytes.Equal(rec.Body.Bytes(), all) {
				t.Errorf("after flush: %d bytes, want the %d written", rec.Body.Len(), len(all))
			}
		})
	}
}

// realChannelData is the channeldata.json conda-index wrote for the
// corpus (testdata/PROVENANCE.md): 28 names, six subdirs, compact.
const realChannelData = "../../testdata/expected/generated__conda-index-13bd599__corpus-all-modern/raw/channeldata.json"

// putChannelData gives the upstream the real channeldata.json at rel and
// returns its bytes.
func putChannelData(t *testing.T, u *upstream, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(realChannelData)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Join(u.root, rel)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(u.root, rel), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// channelDataOf decodes a channeldata.json's top level and its packages.
func channelDataOf(t *testing.T, b []byte) (top, pkgs map[string]json.RawMessage) {
	t.Helper()
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatalf("%v: %.200s", err, b)
	}
	if err := json.Unmarshal(top["packages"], &pkgs); err != nil {
		t.Fatal(err)
	}
	return top, pkgs
}

// TestChannelData: the upstream's channeldata.json, of its root and of a
// label, is served as the upstream wrote it (but for white space between
// values) when nothing is filtered,
// cached like the other index files, and with include/exclude keeps
// only the names served, every other key as it is.
func TestChannelData(t *testing.T) {
	u := newUpstream(t)
	orig := putChannelData(t, u, "channeldata.json")
	putChannelData(t, u, "label/dev/channeldata.json")
	f := newFront(t, u, nil)
	orig = bytes.TrimSuffix(orig, []byte("\n"))
	for range 2 {
		resp, b := get(t, f.srv.URL+"/channeldata.json")
		if resp.StatusCode != 200 || !bytes.Equal(b, orig) || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("unfiltered: %d %s, %d bytes, want the upstream's %d", resp.StatusCode, resp.Header.Get("Content-Type"), len(b), len(orig))
		}
	}
	if n, z := u.count("/channeldata.json"), u.count("/channeldata.json.zst"); n != 1 || z != 0 || f.obs.hits["index"] != 1 {
		t.Errorf("asked the upstream %d times (.zst %d), %d hits: want once, never a .zst, one hit", n, z, f.obs.hits["index"])
	}
	req, _ := http.NewRequest(http.MethodHead, f.srv.URL+"/channeldata.json", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 || resp.ContentLength != int64(len(orig)) {
		t.Errorf("HEAD: %v %v", resp, err)
	}

	g := newFront(t, u, func(up *Upstream) {
		up.Include = []string{"z*", "mock", "stub-*"}
		up.Exclude = []string{"stub-depends-*"}
	})
	upTop, upPkgs := channelDataOf(t, orig)
	for _, path := range []string{"/channeldata.json", "/label/dev/channeldata.json"} {
		resp, b := get(t, g.srv.URL+path)
		top, pkgs := channelDataOf(t, b)
		if resp.StatusCode != 200 || !slices.Equal(slices.Sorted(maps.Keys(pkgs)), []string{"mock", "stub-run_exports", "zlib"}) {
			t.Errorf("%s: %d, names %v", path, resp.StatusCode, slices.Sorted(maps.Keys(pkgs)))
		}
		for name, raw := range pkgs {
			if !bytes.Equal(raw, upPkgs[name]) {
				t.Errorf("%s: %s changed: %s", path, name, raw)
			}
		}
		for k, raw := range top {
			if k != "packages" && !bytes.Equal(raw, upTop[k]) {
				t.Errorf("%s: %s changed: %s, want %s", path, k, raw, upTop[k])
			}
		}
		if len(top) != len(upTop) {
			t.Errorf("%s: keys %v", path, slices.Sorted(maps.Keys(top)))
		}
	}
	if n := u.count("/label/dev/channeldata.json"); n != 1 {
		t.Errorf("asked the upstream's label %d times", n)
	}
	for _, path := range []string{"/label/Dev/channeldata.json", "/label/channeldata.json", "/label/dev/x/channeldata.json", "/linux-64/channeldata.json", "/channeldata.json.zst"} {
		if resp, _ := get(t, g.srv.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
}

// TestChannelDataRevalidated: past index_ttl the upstream is asked with
// If-None-Match and its 304 keeps the cached copy; with the upstream
// gone, the copy is served marked stale.
func TestChannelDataRevalidated(t *testing.T) {
	u := newUpstream(t)
	orig := bytes.TrimSuffix(putChannelData(t, u, "channeldata.json"), []byte("\n"))
	var conditional atomic.Int64
	u.setHook(only("/channeldata.json", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") == `"v1"` {
			conditional.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		w.Write(orig)
	}))
	f := newFront(t, u, func(up *Upstream) { up.IndexTTL = time.Nanosecond })
	for i := range 3 {
		resp, b := get(t, f.srv.URL+"/channeldata.json")
		if resp.StatusCode != 200 || !bytes.Equal(b, orig) || resp.Header.Get("X-Proxy-Stale") != "" {
			t.Fatalf("request %d: %d, %d bytes, stale %q", i, resp.StatusCode, len(b), resp.Header.Get("X-Proxy-Stale"))
		}
	}
	if n := conditional.Load(); n != 2 || u.count("/channeldata.json") != 3 {
		t.Errorf("%d conditional requests of %d, want 2 of 3", n, u.count("/channeldata.json"))
	}
	u.srv.Close()
	resp, b := get(t, f.srv.URL+"/channeldata.json")
	if resp.StatusCode != 200 || !bytes.Equal(b, orig) || resp.Header.Get("X-Proxy-Stale") != "true" || !strings.HasPrefix(resp.Header.Get("Warning"), "110") || resp.Header.Get("Age") == "" || f.obs.stale != 1 {
		t.Errorf("upstream gone: %d %v, stale counted %d", resp.StatusCode, resp.Header, f.obs.stale)
	}
}

// TestLabelsShareTheCacheNotAccess: a package two labels list is fetched
// once and served to both from one file, but a package only one label
// lists is not served under another, cached or not: a token of one
// label gets nothing of another's.
func TestLabelsShareTheCacheNotAccess(t *testing.T) {
	u := newUpstream(t)
	devRoot := filepath.Join(u.root, "label", "dev")
	dev := filepath.Join(devRoot, "linux-64")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	only := pkgtest.Simple("devonly", "1.0", "0", "linux-64")
	const both = "numpy-1.0-h0_0.conda"
	os.WriteFile(filepath.Join(dev, only.Stem()+".conda"), pkgtest.Build(t, only, ".conda"), 0o644)
	os.WriteFile(filepath.Join(dev, both), u.file(t, "linux-64/"+both), 0o644)
	w := repodata.New(devRoot, condapkg.DefaultLimits(), slog.New(slog.DiscardHandler), repodata.WithFiles(repodata.DefaultFiles()))
	if err := w.Run(context.Background(), "linux-64"); err != nil {
		t.Fatal(err)
	}
	f := newFront(t, u, nil)
	for _, c := range []struct {
		path   string
		status int
	}{
		{"/label/dev/linux-64/" + only.Stem() + ".conda", 200},
		{"/linux-64/" + only.Stem() + ".conda", 404}, // cached, but main does not list it
		{"/label/dev/linux-64/" + both, 200},
		{"/linux-64/" + both, 200}, // from the same file
	} {
		if resp, _ := get(t, f.srv.URL+c.path); resp.StatusCode != c.status {
			t.Errorf("%s: %d, want %d", c.path, resp.StatusCode, c.status)
		}
		f.settle(t)
	}
	if n := u.count("/linux-64/" + both); n != 0 {
		t.Errorf("the upstream's main was asked for %s %d times; want it served from the label's fetch", both, n)
	}
	// What the pages show a limited token rests on these labels.
	for _, c := range f.p.Cached() {
		want := []string{"", "dev"}
		if c.Filename != both {
			want = []string{"dev"}
		}
		if !slices.Equal(c.Labels, want) {
			t.Errorf("%s is listed in %q, want %q", c.Filename, c.Labels, want)
		}
	}
}
