// Package proxy serves a channel of another server (conda-forge, a private
// Artifactory) read-only, fetching on demand and caching what it fetched:
// one URL for all of a site's conda traffic that keeps working while the
// upstream is down.
//
// Nothing from the upstream is trusted. Index files are filtered as
// streams (filter.go), so that a repodata.json of a million records never
// sits in memory, and every record's filename is checked as an uploaded
// one would be; packages are checked against the sha256 and size of
// their record before they are kept; shards against the sha256 that
// names them (shards.go). Every read from the upstream has a size, a time
// and a decompression bound (fetch.go), and only the upstream's host and
// the hosts it may redirect to are ever contacted.
//
// Index files are kept on disk with the upstream's ETag, revalidated
// after their TTL, and served stale, marked so, while the upstream cannot
// be reached (index.go). Packages are immutable once kept, survive
// restarts and are evicted least recently used first (packages.go).
package proxy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// Upstream is one upstream channel, as configured.
type Upstream struct {
	Name string
	// URL is the channel's root, such as
	// https://conda.anaconda.org/conda-forge.
	URL     string
	Subdirs []string
	// Include and Exclude are package-name globs.
	Include, Exclude []string
	// RedirectHosts are the host:port (net.JoinHostPort, the host in
	// lower case) the upstream may redirect to, beside its own.
	RedirectHosts []string
	// RootCAs, if set, replaces the system's CAs.
	RootCAs *x509.CertPool
	// Token is sent as a bearer token; Username and Password, if set,
	// as HTTP Basic.
	Token, Username, Password string
	// IndexTTL is how long an index file is fresh.
	IndexTTL time.Duration
	// FetchTimeout bounds a request to the upstream, body included;
	// StallTimeout how long its body may send nothing.
	FetchTimeout, StallTimeout time.Duration
	// MaxIndexSize bounds an index file as read, decompressed.
	MaxIndexSize int64
	// CacheSize bounds the cached packages (0: no bound).
	CacheSize int64
	// Private makes responses cacheable by the client only, for a
	// server whose downloads need a token.
	Private bool
	// Mirror fetches every package ahead, every SyncInterval (Run).
	Mirror       bool
	SyncInterval time.Duration
}

// Observer is told what the proxy does, for the metrics.
type Observer interface {
	// Cache records a request served from the cache (hit) or not.
	Cache(upstream, kind string, hit bool)
	// Fetched records bytes read from the upstream.
	Fetched(upstream string, n int64)
	// UpstreamError records a failed or refused fetch, by reason.
	UpstreamError(upstream, reason string)
	// Stale records an index file served stale.
	Stale(upstream string)
}

// Error is a request the proxy cannot serve, with the status the client
// gets and a message fit to send.
type Error struct {
	Status int
	Msg    string
	Err    error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

var (
	errNotFound = &Error{Status: http.StatusNotFound, Msg: "not found in the upstream channel"}
	errExcluded = &Error{Status: http.StatusNotFound, Msg: "not served: the package is not included in this proxy"}
	errDigest   = errors.New("the bytes do not match the sha256 or size the upstream's index gives")
)

// Proxy serves one upstream.
type Proxy struct {
	up     Upstream
	dir    string
	base   *url.URL
	client *http.Client
	// bulk fetches packages (newClient).
	bulk *http.Client
	log  *slog.Logger
	obs  Observer

	flights flights
	lru     *lru

	mu       sync.Mutex
	failedAt time.Time // the first failure since the upstream last answered
	failure  string
	okAt     time.Time
	shards   map[string]shardIndex // filtered shard indexes, by cache dir
	syncedAt time.Time             // the last mirror sync, and its error
	syncErr  string
}

// New returns the proxy of up, caching under dir, which it creates. It
// removes what an interrupted fetch left there.
func New(up Upstream, dir string, log *slog.Logger, obs Observer) (*Proxy, error) {
	base, err := url.Parse(strings.TrimSuffix(up.URL, "/") + "/")
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", up.Name, err)
	}
	if obs == nil {
		obs = nopObserver{}
	}
	p := &Proxy{up: up, dir: dir, base: base, log: log.With("upstream", up.Name), obs: obs, shards: map[string]shardIndex{}}
	p.client, p.bulk = newClient(up, base, false), newClient(up, base, true)
	if err := os.MkdirAll(filepath.Join(dir, "pkgs"), 0o755); err != nil {
		return nil, err
	}
	if err := removeStale(dir); err != nil {
		return nil, fmt.Errorf("upstream %s: %w", up.Name, err)
	}
	if p.lru, err = loadLRU(filepath.Join(dir, "pkgs"), up.Subdirs, up.CacheSize); err != nil {
		return nil, fmt.Errorf("upstream %s: %w", up.Name, err)
	}
	return p, nil
}

// removeStale deletes, in every folder of the cache, the temp files of
// writes a crash interrupted: of packages, and of index files and shards,
// which for conda-forge are hundreds of MB each.
func removeStale(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return atomicfile.RemoveStale(path)
	})
}

// Name is the upstream's name.
func (p *Proxy) Name() string { return p.up.Name }

// keep reports whether the package name is served.
func (p *Proxy) keep(name string) bool {
	match := func(globs []string) bool {
		return slices.ContainsFunc(globs, func(g string) bool { ok, _ := path.Match(g, name); return ok })
	}
	return (len(p.up.Include) == 0 || match(p.up.Include)) && !match(p.up.Exclude)
}

// Serve answers a GET or HEAD of rel, a path below /proxy/<name>/:
// <subdir>/<file> or label/<label>/<subdir>/<file>, or the root's
// channeldata.json, or a label's.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, rel string) error {
	if label, ok := channelDataPath(rel); ok {
		return p.serveIndex(w, r, label, "", "channeldata.json", &channelData)
	}
	label, subdir, file, err := p.split(rel)
	if err != nil {
		return err
	}
	switch {
	case indexGroupOf(file) != nil:
		return p.serveIndex(w, r, label, subdir, file, indexGroupOf(file))
	case file == shardIndexFile:
		return p.serveShardIndex(w, r, label, subdir)
	case shardName(file):
		return p.serveShard(w, r, label, subdir, file)
	}
	f, err := condapkg.ParseFilename(file)
	if err != nil {
		return errNotFound
	}
	if !p.keep(f.Name) {
		return errExcluded
	}
	return p.servePackage(w, r, label, subdir, file, f.Name)
}

// split checks rel against the upstream's subdirs and the shape of a
// channel path.
func (p *Proxy) split(rel string) (label, subdir, file string, err error) {
	parts := strings.Split(rel, "/")
	if len(parts) == 4 && parts[0] == store.LabelDir && store.ValidLabel(parts[1]) {
		label, parts = parts[1], parts[2:]
	}
	if len(parts) != 2 || !slices.Contains(p.up.Subdirs, parts[0]) || parts[1] == "" || strings.HasPrefix(parts[1], ".") {
		return "", "", "", errNotFound
	}
	return label, parts[0], parts[1], nil
}

// upstreamPath is rel's path in the upstream channel; subdir "" is the
// channel's root.
func upstreamPath(label, subdir, file string) string {
	if label != "" {
		return path.Join(store.LabelDir, label, subdir, file)
	}
	return path.Join(subdir, file)
}

// cacheDir is where the index files of a label's subdir are kept, and
// with subdir "" those of the label's root.
func (p *Proxy) cacheDir(label, subdir string) string {
	if label == "" {
		return filepath.Join(p.dir, "index", "main", subdir)
	}
	return filepath.Join(p.dir, "index", store.LabelDir, label, subdir)
}

// reached records whether the upstream answered.
func (p *Proxy) reached(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.okAt, p.failure = time.Now(), ""
		return
	}
	if p.failure == "" {
		// The first failure since the upstream last answered: "since".
		p.failedAt = time.Now()
	}
	p.failure = err.Error()
}

// Degraded says why the upstream is unreachable, or "" if its last fetch
// reached it.
func (p *Proxy) Degraded() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failure == "" {
		return ""
	}
	return fmt.Sprintf("upstream %s unreachable since %s: %s", p.up.Name, p.failedAt.UTC().Format(time.RFC3339), p.failure)
}

type nopObserver struct{}

func (nopObserver) Cache(string, string, bool)   {}
func (nopObserver) Fetched(string, int64)        {}
func (nopObserver) UpstreamError(string, string) {}
func (nopObserver) Stale(string)                 {}
