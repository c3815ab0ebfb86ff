// Package daemon runs the service from start to stop, in named phases:
//
//   - acquire: everything that needs privileges or paths outside the
//     channel: the listeners, the TLS certificate and key, the token
//     hashes, the service manager's notify socket, the audit log;
//   - confine: drop root for the service user, set no_new_privs, and apply
//     one Landlock policy to the process and every child it starts;
//   - build: the store, the metrics, the object-storage mirror, the
//     indexer and its scheduler; bring every subdir's index up to date
//     with the disk; then the trusted publishers' verifier, the served
//     channel and the HTTP handler, one builder per part (build.go);
//   - serve: accept connections, tell the service manager we are ready,
//     ping its watchdog while healthy, reload on request;
//   - drain: refuse new uploads, let those in flight finish, stop.
//
// The order is what the sandbox needs: once confined, the process can
// bind nothing, read no key and dial no socket. main parses flags and the
// config file, calls Run, and turns its error into an exit code.
package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/audit"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/channel"
	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/metrics"
	"github.com/conda-upload-server/conda-upload-server/internal/mirror"
	"github.com/conda-upload-server/conda-upload-server/internal/owners"
	"github.com/conda-upload-server/conda-upload-server/internal/proxy"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/sandbox"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/stats"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/systemd"
	"github.com/conda-upload-server/conda-upload-server/internal/web"
)

// Options configure a run of the daemon.
type Options struct {
	// Config is the configuration, flags already applied. Run fills in
	// the dev-mode defaults and validates it.
	Config *config.Config
	// Dev is development mode: a self-signed certificate, a one-time
	// token printed to Stdout, ./channel, and loopback only.
	Dev bool
	// InsecureHTTP serves plain HTTP.
	InsecureHTTP bool
	Log          *slog.Logger
	// Stdout gets the dev-mode banner.
	Stdout io.Writer
	// Version and Revision label the metrics.
	Version, Revision string
	// Reload gets a value for every reload request (SIGHUP).
	Reload <-chan os.Signal
}

// daemon is one run: what each phase acquires or builds, for the phases
// after it.
type daemon struct {
	o        Options
	cfg      *config.Config
	log      *slog.Logger
	writeDir string
	mode     sandbox.Mode
	credDir  string
	devToken string

	// acquire
	listeners         []net.Listener
	metricsListeners  []net.Listener
	downloadListeners []net.Listener
	activated         bool
	cert              *server.Certificate
	certFile          string
	keyFile           string
	tokens            []auth.Token
	authn             *auth.Authenticator
	notify            *systemd.Notifier
	wdInterval        time.Duration
	auditLog          *audit.Log
	ownerEvents       []owners.Event

	// build
	store      *store.Store
	indexerTmp string
	sched      *index.Scheduler
	lifecycle  *lifecycle.Manager
	house      *housekeeping
	// mirrorCfg is the object-storage mirror's settings and keys, read
	// before confinement; mirror syncs to it.
	mirrorCfg *mirror.Config
	mirror    *mirror.Mirror
	// upstreams are the proxied channels, read before confinement;
	// proxies serves them.
	upstreams  []proxy.Upstream
	proxies    map[string]*proxy.Proxy
	metrics    *metrics.Metrics
	srv        *server.Server
	conns      *server.ConnLimiter
	hs         *http.Server
	downloadHS *http.Server
	metricsHS  []*http.Server
	channel    *channel.Channel
	// writer is the built-in indexer, whose memory the pages read;
	// stats counts downloads.
	writer *repodata.Writer
	stats  *stats.Counter
	pages  *web.UI

	serveErr atomic.Pointer[error]
	closers  []func()
}

// Run starts the service and blocks until ctx is done and in-flight
// uploads have drained.
func Run(ctx context.Context, o Options) error {
	d, err := prepare(o)
	if err != nil {
		return err
	}
	defer d.close()
	if err := d.acquire(); err != nil {
		return err
	}
	if err := d.confine(); err != nil {
		return err
	}
	if err := d.build(ctx); err != nil {
		return err
	}
	return d.serve(ctx)
}

// prepare fills in the dev-mode defaults and checks the configuration.
func prepare(o Options) (*daemon, error) {
	cfg := o.Config
	d := &daemon{o: o, cfg: cfg, log: o.Log, credDir: os.Getenv("CREDENTIALS_DIRECTORY")}
	if o.Dev {
		if cfg.WriteDir == "" {
			cfg.WriteDir = "channel"
		}
		if cfg.Listen == "" {
			cfg.Listen = "127.0.0.1"
		}
		if !cfg.Download.Enabled {
			cfg.Download.Enabled, cfg.Download.Access = true, "public"
		}
		d.devToken = rand.Text()
		cfg.Tokens = append(cfg.Tokens, config.TokenConfig{Name: devTokenName, Hash: auth.Hash(cfg.Salt, d.devToken),
			Scopes: []string{auth.ScopeUpload, auth.ScopeRead}})
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var err error
	if d.writeDir, err = filepath.Abs(cfg.WriteDir); err != nil {
		return nil, err
	}
	if d.mode, err = sandbox.ParseMode(cfg.Sandbox.Landlock); err != nil {
		return nil, err
	}
	if cfg.MemoryLimit > 0 {
		// A soft limit: the heap of a 100,000-package subdir is about
		// 120 MiB live, and the default GC target would let it reach
		// twice that while the index is rebuilt at start.
		debug.SetMemoryLimit(int64(cfg.MemoryLimit))
	}
	return d, nil
}

// onClose registers f to run when the daemon stops, in reverse order.
func (d *daemon) onClose(f func()) { d.closers = append(d.closers, f) }

func (d *daemon) close() {
	for _, f := range slices.Backward(d.closers) {
		f()
	}
}

// health is the one health check: /readyz answers with it, and the
// watchdog is pinged only while it passes.
func (d *daemon) health() error {
	if e := d.serveErr.Load(); e != nil {
		return fmt.Errorf("accept loop ended: %w", *e)
	}
	if err := d.store.CheckWritable(); err != nil {
		return err
	}
	if d.sched.Stuck() {
		return errors.New("an index run is stuck past its timeout")
	}
	if d.cert != nil && time.Now().After(d.cert.Leaf().NotAfter) {
		return fmt.Errorf("TLS certificate expired on %s", d.cert.Leaf().NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}
