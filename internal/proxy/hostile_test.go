package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
)

// TestHostileUpstream: whatever an upstream sends, nothing it should not
// gets into the cache, the client gets a precise error, and the proxy
// goes on serving.
func TestHostileUpstream(t *testing.T) {
	const fn = "numpy-1.0-h0_0.conda"
	bomb := func() []byte {
		var buf bytes.Buffer
		zw, _ := zstd.NewWriter(&buf)
		zw.Write(bytes.Repeat([]byte{' '}, 32<<20))
		zw.Close()
		return buf.Bytes()
	}()
	cases := []struct {
		name   string
		path   string
		hook   func(u *upstream) hookFunc
		status int
		reason string
	}{
		{"wrong sha256", "/linux-64/" + fn, func(u *upstream) hookFunc {
			return only(fn, func(w http.ResponseWriter, r *http.Request) {
				b, _ := os.ReadFile(filepath.Join(u.root, "linux-64", fn))
				b[len(b)-1] ^= 1
				w.Write(b)
			})
		}, http.StatusBadGateway, "digest"},
		{"wrong size", "/linux-64/" + fn, func(u *upstream) hookFunc {
			return only(fn, func(w http.ResponseWriter, r *http.Request) {
				b, _ := os.ReadFile(filepath.Join(u.root, "linux-64", fn))
				w.Write(append(b, 0))
			})
		}, http.StatusBadGateway, "digest"},
		{"wrong sha256, upstream without shards", "/linux-64/" + fn, func(u *upstream) hookFunc {
			return func(w http.ResponseWriter, r *http.Request) bool {
				switch {
				case strings.HasSuffix(r.URL.Path, shardIndexFile):
					http.NotFound(w, r)
				case strings.HasSuffix(r.URL.Path, fn):
					b, _ := os.ReadFile(filepath.Join(u.root, "linux-64", fn))
					b[0] ^= 1
					w.Write(b)
				default:
					return false
				}
				return true
			}
		}, http.StatusBadGateway, "digest"},
		{"zst bomb", "/linux-64/repodata.json", func(u *upstream) hookFunc {
			return only("repodata.json.zst", func(w http.ResponseWriter, r *http.Request) {
				w.Write(bomb)
			})
		}, http.StatusBadGateway, "invalid"},
		{"redirect to an unlisted host", "/linux-64/" + fn, func(u *upstream) hookFunc {
			return only(fn, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "https://elsewhere.example/"+fn, http.StatusFound)
			})
		}, http.StatusBadGateway, "redirect"},
		{"slow drip", "/linux-64/" + fn, func(u *upstream) hookFunc {
			return only(fn, func(w http.ResponseWriter, r *http.Request) {
				b, _ := os.ReadFile(filepath.Join(u.root, "linux-64", fn))
				w.Header().Set("Content-Length", strconv.Itoa(len(b)))
				for _, c := range b {
					if _, err := w.Write([]byte{c}); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
						return
					case <-time.After(3 * time.Second):
					}
				}
			})
		}, http.StatusGatewayTimeout, "timeout"},
		{"shard index names a missing shard", "/linux-64/SHARD:numpy", func(u *upstream) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasSuffix(r.URL.Path, ".msgpack.zst") || strings.Contains(r.URL.Path, "repodata_shards") {
					return false
				}
				http.NotFound(w, r)
				return true
			}
		}, http.StatusBadGateway, "status"},
		{"shard changed since its index", "/linux-64/SHARD:numpy", func(u *upstream) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasSuffix(r.URL.Path, ".msgpack.zst") || strings.Contains(r.URL.Path, "repodata_shards") {
					return false
				}
				http.ServeFile(w, r, shardFile(t, u, "scipy"))
				return true
			}
		}, http.StatusBadGateway, "invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t)
			f := newFront(t, u, func(up *Upstream) { up.StallTimeout = time.Second; up.MaxIndexSize = 1 << 20 })
			path := tc.path
			if name, ok := strings.CutPrefix(path, "/linux-64/SHARD:"); ok {
				path = "/linux-64/" + filepath.Base(shardFile(t, u, name))
			}
			u.setHook(tc.hook(u))
			resp, b := get(t, f.srv.URL+path)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if n := f.obs.errorsOf(tc.reason); n == 0 {
				t.Errorf("no upstream error %q counted: %v", tc.reason, f.obs.errors)
			}
			if got := cachedFiles(t, f.dir); len(got) != 0 {
				t.Errorf("cache holds %v", got)
			}
			if sh, _ := filepath.Glob(filepath.Join(f.dir, "shards", "*", "*")); len(sh) != 0 && strings.Contains(tc.path, "SHARD:") {
				t.Errorf("shards cached: %v", sh)
			}
			// The proxy goes on serving once the upstream behaves.
			u.setHook(func(http.ResponseWriter, *http.Request) bool { return false })
			if resp, _ := get(t, f.srv.URL+path); resp.StatusCode != 200 {
				t.Errorf("after the upstream recovered: %d", resp.StatusCode)
			}
		})
	}
}

// TestHostileRecords: records whose filenames could escape, hide, or
// claim another subdir or package are not served.
func TestHostileRecords(t *testing.T) {
	u := newUpstream(t)
	f := newFront(t, u, nil)
	const rd = `{"info":{"subdir":"linux-64","base_url":"https://elsewhere.example/"},"packages":{` +
		`"../evil-1-0.tar.bz2":{"name":"evil","sha256":"` + zeros + `","size":1},` +
		`".hidden-1-0.tar.bz2":{"name":".hidden","sha256":"` + zeros + `","size":1},` +
		`"other-1-0.tar.bz2":{"name":"other","subdir":"win-64","sha256":"` + zeros + `","size":1},` +
		`"liar-1-0.tar.bz2":{"name":"numpy","sha256":"` + zeros + `","size":1},` +
		`"nosum-1-0.tar.bz2":{"name":"nosum","size":1},` +
		`"upper-1-0.tar.bz2":{"name":"upper","SHA256":"` + zeros + `","size":1},` +
		`"escaped-1-0.tar.bz2":{"name":"escaped","SH\u0041256":"` + zeros + `","size":1},` +
		`"twice-1-0.tar.bz2":{"name":"twice","sha256":"` + zeros + `","size":1,"size":2},` +
		`"good-1-0.tar.bz2":{"name":"good","sha256":"` + zeros + `","size":1}},` +
		`"packages.conda":{"wrongext-1-0.tar.bz2":{"name":"wrongext","sha256":"` + zeros + `","size":1}},"repodata_version":1}`
	u.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.HasSuffix(r.URL.Path, "repodata.json.zst"):
			http.NotFound(w, r)
		case strings.HasSuffix(r.URL.Path, "repodata.json"):
			w.Write([]byte(rd))
		default:
			return false
		}
		return true
	})
	resp, b := get(t, f.srv.URL+"/linux-64/repodata.json")
	if got := packagesOf(t, b); resp.StatusCode != 200 || len(got) != 1 || got[0] != "good-1-0.tar.bz2" {
		t.Errorf("served %d %v, want only the good record", resp.StatusCode, got)
	}
	if bytes.Contains(b, []byte("elsewhere")) || !bytes.Contains(b, []byte(`"repodata_version":1`)) {
		t.Errorf("info.base_url kept, or another key changed: %s", b)
	}
	if f.obs.errorsOf("invalid_record") == 0 {
		t.Error("invalid records not counted")
	}
}

// TestRedirectHosts: conda.anaconda.org sends packages to a CDN. A
// redirect is followed only to a host and port of redirect_hosts (a
// bare host is port 443), never to the upstream's own host on another
// port, and the token stays home. A refusal is a 502 whose message, also
// logged, names the host:port.
func TestRedirectHosts(t *testing.T) {
	const fn = "numpy-1.0-h0_0.conda"
	for _, tc := range []struct {
		name   string
		cdnAt  string // the CDN's address; the upstream is on 127.0.0.1
		listed func(cdn string) []string
		ok     bool
	}{
		{"listed with its port", "[::1]:0", func(cdn string) []string { return []string{"cdn.example.net:443", cdn} }, true},
		{"listed without a port", "[::1]:0", func(string) []string { return []string{"[::1]"} }, false},
		{"listed with another port", "[::1]:0", func(string) []string { return []string{"[::1]:1"} }, false},
		{"the upstream's host on another port", "127.0.0.1:0", func(string) []string { return nil }, false},
		{"the upstream's host on another port, listed", "127.0.0.1:0", func(cdn string) []string { return []string{cdn} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t)
			ln, err := net.Listen("tcp", tc.cdnAt)
			if err != nil {
				t.Skip("no such loopback:", err)
			}
			var cdnAuth atomic.Value
			cdn := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cdnAuth.Store(r.Header.Get("Authorization"))
				http.ServeFile(w, r, filepath.Join(u.root, strings.TrimPrefix(r.URL.Path, "/cdn/")))
			}))
			cdn.Listener = ln
			cdn.StartTLS()
			defer cdn.Close()
			u.setHook(only(".conda", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, cdn.URL+"/cdn"+r.URL.Path, http.StatusFound)
			}))
			cdnHost := strings.TrimPrefix(cdn.URL, "https://")
			f := newFront(t, u, func(up *Upstream) { up.RedirectHosts = tc.listed(cdnHost); up.Token = "s3cret" })
			resp, b := get(t, f.srv.URL+"/linux-64/"+fn)
			if tc.ok {
				if resp.StatusCode != 200 || !bytes.Equal(b, u.file(t, "linux-64/"+fn)) {
					t.Fatalf("through the CDN: %d %s", resp.StatusCode, b)
				}
				if a, _ := cdnAuth.Load().(string); a != "" {
					t.Errorf("the CDN got the upstream's credentials: %q", a)
				}
				return
			}
			want := "the upstream redirected to " + cdnHost + ", which is not in redirect_hosts"
			if resp.StatusCode != http.StatusBadGateway || !bytes.Contains(b, []byte(want)) || !strings.Contains(f.log.String(), want) {
				t.Errorf("%d %.200q, log %s: want a 502 naming %s", resp.StatusCode, b, f.log.String(), cdnHost)
			}
			if cdnAuth.Load() != nil || f.obs.errorsOf("redirect") != 1 || len(cachedFiles(t, f.dir)) != 0 {
				t.Errorf("the CDN was asked, or the refusal not counted (%d), or something cached", f.obs.errorsOf("redirect"))
			}
		})
	}
}

const zeros = "0000000000000000000000000000000000000000000000000000000000000000"

// shardFile is the path of the upstream's shard of name.
func shardFile(t *testing.T, u *upstream, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(u.root, "linux-64", shardIndexFile))
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(u.root, "linux-64", shardNames(t, b)[name])
}

type hookFunc = func(w http.ResponseWriter, r *http.Request) bool

// only answers requests whose path ends in suffix with h.
func only(suffix string, h http.HandlerFunc) hookFunc {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, suffix) {
			return false
		}
		h(w, r)
		return true
	}
}

// TestLargeMismatchCut: a package too large to hold back whole is
// streamed as it arrives, and when its bytes turn out wrong the client's
// response is cut short of its Content-Length, so that no client holds a
// complete wrong package; nothing is cached.
func TestLargeMismatchCut(t *testing.T) {
	const fn = "big-1.0-0.conda"
	u := newUpstreamWith(t, func(dir string) {
		f, err := os.Create(filepath.Join(dir, fn))
		if err != nil {
			t.Fatal(err)
		}
		pkgtest.LargeConda(t, pkgtest.Simple("big", "1.0", "0", "linux-64"), 4<<20, f)
		f.Close()
	})
	f := newFront(t, u, nil)
	good, _ := os.ReadFile(filepath.Join(u.root, "linux-64", fn))
	u.setHook(only(fn, func(w http.ResponseWriter, r *http.Request) {
		b := bytes.Clone(good)
		b[len(b)/2] ^= 1
		w.Write(b)
	}))
	resp, err := http.Get(f.srv.URL + "/linux-64/" + fn)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || resp.ContentLength != int64(len(good)) || len(got) >= len(good) || len(got) == 0 {
		t.Errorf("status %d, Content-Length %d, got %d of %d bytes (err %v): want a cut response", resp.StatusCode, resp.ContentLength, len(got), len(good), err)
	}
	if got := cachedFiles(t, f.dir); len(got) != 0 || f.obs.errorsOf("digest") != 1 {
		t.Errorf("cache %v, digest errors %d", got, f.obs.errorsOf("digest"))
	}
	u.setHook(func(http.ResponseWriter, *http.Request) bool { return false })
	if resp, b := get(t, f.srv.URL+"/linux-64/"+fn); resp.StatusCode != 200 || !bytes.Equal(b, good) {
		t.Errorf("after the upstream recovered: %d, %d bytes", resp.StatusCode, len(b))
	}
}

// TestHostileChannelData: a channeldata.json the proxy cannot vouch for
// is refused whole, nothing of it is cached, and a copy cached before
// goes on being served, marked stale.
func TestHostileChannelData(t *testing.T) {
	good, err := os.ReadFile(realChannelData)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, body string }{
		{"not JSON", "<html>Service Unavailable</html>"},
		{"a name that is a path", `{"channeldata_version":1,"packages":{"../evil":{"version":"1"}},"subdirs":[]}`},
		{"a hidden name", `{"channeldata_version":1,"packages":{".evil":{"version":"1"}},"subdirs":[]}`},
		{"a name of an excluded package that is a path", `{"packages":{"zlib":{},"x/../../y":{}}}`},
		{"a summary that is not an object", `{"packages":{"zlib":"1.2"}}`},
		{"a key twice", `{"packages":{},"packages":{"zlib":{}}}`},
		{"data after the document", `{"packages":{"zlib":{}}}{"packages":{}}`},
		{"over max_index_size", `{"packages":{"zlib":{"description":"` + strings.Repeat("a", 1<<20) + `"}}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t)
			var hostile atomic.Bool
			u.setHook(only("/channeldata.json", func(w http.ResponseWriter, r *http.Request) {
				if hostile.Load() {
					w.Write([]byte(tc.body))
				} else {
					w.Write(good)
				}
			}))
			// Cold: nothing cached, the client gets a 502.
			hostile.Store(true)
			f := newFront(t, u, func(up *Upstream) {
				up.IndexTTL = time.Nanosecond
				up.MaxIndexSize = 1 << 20
				up.Include = []string{"zlib"}
			})
			resp, b := get(t, f.srv.URL+"/channeldata.json")
			if resp.StatusCode != http.StatusBadGateway || !bytes.Contains(b, []byte("cannot use")) || f.obs.errorsOf("invalid") != 1 {
				t.Errorf("cold: %d %s, invalid %d", resp.StatusCode, b, f.obs.errorsOf("invalid"))
			}
			if left := cacheFiles(t, f.dir); len(left) != 0 {
				t.Errorf("cold: the cache holds %v", left)
			}
			// Warm: the copy the upstream sent before is served, stale.
			hostile.Store(false)
			_, before := get(t, f.srv.URL+"/channeldata.json")
			hostile.Store(true)
			resp, b = get(t, f.srv.URL+"/channeldata.json")
			if resp.StatusCode != 200 || !bytes.Equal(b, before) || resp.Header.Get("X-Proxy-Stale") != "true" || f.obs.stale != 1 {
				t.Errorf("warm: %d %v, %d bytes of the %d cached, stale %d", resp.StatusCode, resp.Header, len(b), len(before), f.obs.stale)
			}
			if left := cacheFiles(t, f.dir); !slices.Equal(left, []string{"index/main/channeldata.json", "index/main/channeldata.meta"}) {
				t.Errorf("warm: the cache holds %v", left)
			}
		})
	}
}

// cacheFiles lists every file under a proxy's cache dir.
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestSlowClientDoesNotHoldTheFetch: the client of a first fetch asks
// for a package and reads nothing. It holds the fetch for the stall
// bound, no more, and is not taken for a stalled upstream: it is cut,
// and the request waiting on the same fetch gets the package, which is
// cached.
func TestSlowClientDoesNotHoldTheFetch(t *testing.T) {
	const fn = "big-1.0-0.conda"
	u := newUpstreamWith(t, func(dir string) {
		f, err := os.Create(filepath.Join(dir, fn))
		if err != nil {
			t.Fatal(err)
		}
		// Past what the sockets between the proxy and the client hold.
		pkgtest.LargeConda(t, pkgtest.Simple("big", "1.0", "0", "linux-64"), 24<<20, f)
		f.Close()
	})
	f := newFront(t, u, func(up *Upstream) { up.StallTimeout = time.Second })
	good, _ := os.ReadFile(filepath.Join(u.root, "linux-64", fn))
	c, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /linux-64/%s HTTP/1.1\r\nHost: x\r\n\r\n", fn)
	for !f.p.flights.busy("linux-64/" + fn) {
		time.Sleep(time.Millisecond)
	}
	if resp, b := get(t, f.srv.URL+"/linux-64/"+fn); resp.StatusCode != 200 || !bytes.Equal(b, good) {
		t.Fatalf("the request waiting on a stuck client's fetch: %d, %d bytes; want the package", resp.StatusCode, len(b))
	}
	f.settle(t)
	if got := cachedFiles(t, f.dir); !slices.Equal(got, []string{fn}) || f.obs.errorsOf("timeout") != 0 || f.p.Degraded() != "" {
		t.Errorf("cache %v, timeouts %d, degraded %q; want the package, none, and not degraded", got, f.obs.errorsOf("timeout"), f.p.Degraded())
	}
	if !strings.Contains(f.log.String(), "too slow for the first fetch") {
		t.Errorf("the log does not say the client was cut:\n%s", f.log.String())
	}
}

// TestShardsBaseURL: a shard index whose shards_base_url is on another
// host and port is used only if redirect_hosts lists them, and the
// upstream's credentials never go there.
func TestShardsBaseURL(t *testing.T) {
	const fn = "numpy-1.0-h0_0.conda"
	for _, listed := range []bool{true, false} {
		t.Run(fmt.Sprint("listed=", listed), func(t *testing.T) {
			u := newUpstream(t)
			var cdnAuth atomic.Value
			var cdnShards atomic.Int32
			cdn := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cdnAuth.Store(r.Header.Get("Authorization"))
				if strings.HasSuffix(r.URL.Path, ".msgpack.zst") {
					cdnShards.Add(1)
				}
				http.ServeFile(w, r, filepath.Join(u.root, strings.TrimPrefix(r.URL.Path, "/cdn/")))
			}))
			defer cdn.Close()
			// The shard index names the CDN as its shards' home.
			path := filepath.Join(u.root, "linux-64", "repodata_shards.msgpack.zst")
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var ix map[string]any
			if err := msgpack.Unmarshal(unzstd(t, raw), &ix); err != nil {
				t.Fatal(err)
			}
			ix["info"].(map[string]any)["shards_base_url"] = cdn.URL + "/cdn/linux-64/"
			b, err := msgpack.Marshal(ix)
			if err != nil {
				t.Fatal(err)
			}
			enc, _ := zstd.NewWriter(nil)
			os.WriteFile(path, enc.EncodeAll(b, nil), 0o644)
			cdnHost := strings.TrimPrefix(cdn.URL, "https://")
			f := newFront(t, u, func(up *Upstream) {
				up.Token = "s3cret"
				up.RootCAs.AddCert(cdn.Certificate())
				if listed {
					up.RedirectHosts = []string{cdnHost}
				}
			})
			// Refused shards leave the package to repodata.json.
			resp, body := get(t, f.srv.URL+"/linux-64/"+fn)
			if resp.StatusCode != 200 || !bytes.Equal(body, u.file(t, "linux-64/"+fn)) {
				t.Fatalf("the package: %d", resp.StatusCode)
			}
			if listed {
				if cdnShards.Load() == 0 {
					t.Fatal("no shard was fetched from the listed CDN")
				}
				if a, _ := cdnAuth.Load().(string); a != "" {
					t.Errorf("the CDN got the upstream's credentials: %q", a)
				}
				return
			}
			resp, body = get(t, f.srv.URL+"/linux-64/repodata_shards.msgpack.zst")
			if want := "puts its shards on " + cdnHost; resp.StatusCode != http.StatusBadGateway || !bytes.Contains(body, []byte(want)) {
				t.Errorf("a shard index with its shards on an unlisted host: %d %s; want a 502 naming %s", resp.StatusCode, body, cdnHost)
			}
			if cdnAuth.Load() != nil || f.obs.errorsOf("redirect") == 0 {
				t.Errorf("the unlisted CDN was asked, or the refusal not counted (%d)", f.obs.errorsOf("redirect"))
			}
		})
	}
}

// TestMissingShardIndexRemembered: an upstream without CEP-16 shards
// answers 404 for the shard index. The proxy asks once per index_ttl,
// and keeps answering 404, not 502, while the upstream is down, so that
// a client falls back to repodata.json.
func TestMissingShardIndexRemembered(t *testing.T) {
	u := newUpstream(t)
	const ix = "/linux-64/repodata_shards.msgpack.zst"
	u.setHook(only("repodata_shards.msgpack.zst", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }))
	f := newFront(t, u, func(up *Upstream) { up.IndexTTL = 200 * time.Millisecond })
	for range 3 {
		if resp, _ := get(t, f.srv.URL+ix); resp.StatusCode != 404 {
			t.Fatalf("a missing shard index: %d, want 404", resp.StatusCode)
		}
	}
	if n := u.count(ix); n != 1 {
		t.Errorf("the upstream was asked %d times within the TTL, want once", n)
	}
	// Packages are found through repodata.json.
	if resp, _ := get(t, f.srv.URL+"/linux-64/numpy-1.0-h0_0.conda"); resp.StatusCode != 200 {
		t.Errorf("a package of an upstream without shards: %d", resp.StatusCode)
	}
	u.srv.Close()
	time.Sleep(250 * time.Millisecond) // past the TTL
	if resp, body := get(t, f.srv.URL+ix); resp.StatusCode != 404 {
		t.Errorf("the missing shard index with the upstream down: %d %s, want 404", resp.StatusCode, body)
	}
}
