package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/channel"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/metrics"
	"github.com/conda-upload-server/conda-upload-server/internal/mirror"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
)

// IndexerTempDir is the conda indexer's TMPDIR and HOME, inside the
// channel: the one place outside /dev/shm the sandbox lets the child
// write, and one the server can remove again when it stops. (A temp dir
// in /tmp could not be removed once confined, and leaked.) Dot-folders
// of the channel are never served.
const IndexerTempDir = ".indexer-tmp"

// build opens the channel, sets up the indexer and the HTTP server, and
// brings the index up to date with the disk.
func (d *daemon) build(ctx context.Context) error {
	cfg := d.cfg
	var err error
	if d.store, err = store.Open(d.writeDir); err != nil {
		return err
	}
	if err := d.store.CheckWritable(); err != nil {
		return err
	}
	lim := condapkg.DefaultLimits()
	lim.AllowedSubdirs = cfg.AllowedSubdirs
	runner, err := d.runner(lim)
	if err != nil {
		return err
	}
	arrivals := &index.Arrivals{}
	opts := []index.Option{index.WithTimeout(cfg.Index.Timeout.D()), index.WithArrivals(arrivals)}
	var metricsAllow []netip.Prefix
	if cfg.Metrics.Enabled {
		d.metrics = metrics.New(d.o.Version, d.o.Revision, cfg.Metrics.TokenNames)
		opts = append(opts, index.WithObserver(d.metrics.IndexRun))
		if d.cert != nil {
			d.metrics.CertExpiry(d.cert.Leaf().NotAfter)
		}
		for _, a := range cfg.Metrics.Allow {
			metricsAllow = append(metricsAllow, netip.MustParsePrefix(a))
		}
	}
	if d.mirrorCfg != nil {
		if err := d.startMirror(ctx); err != nil {
			return err
		}
		// Every index run that succeeds marks its subdir for the mirror.
		opts = append(opts, index.WithAfterRun(func(dir string, err error) {
			if err == nil {
				d.mirror.Mark(dir)
			}
		}))
	}
	d.sched = index.New(runner, d.log, opts...)
	d.onClose(d.sched.Close)
	d.lifecycle = lifecycle.New(d.store)
	if err := d.indexAtStart(ctx); err != nil {
		return err
	}
	var verifier *trusted.Verifier
	if len(cfg.TrustedPublishers) > 0 {
		opts := []trusted.Option{trusted.WithTokenTTL(cfg.OIDC.TokenTTL.D()), trusted.WithKeyFailures(func(issuer string) {
			d.log.Error("cannot fetch a trusted publisher issuer's keys; its tokens are refused until they can be had", "issuer", issuer)
			d.metrics.OIDCKeyFailure(issuer)
		})}
		if verifier, err = trusted.New(cfg.Publishers(), opts...); err != nil {
			return err
		}
	}
	if cfg.Download.Enabled {
		if d.channel, err = channel.Open(d.writeDir, cfg.Download.Access == "token"); err != nil {
			return err
		}
		d.onClose(func() { d.channel.Close() })
	}
	d.conns = &server.ConnLimiter{Max: cfg.MaxConnections}
	var mirrored server.Mirror
	var mirrorWait time.Duration
	if d.mirror != nil {
		mirrored = d.mirror
		if cfg.Mirror.Wait {
			mirrorWait = cfg.Mirror.WaitTimeout.D()
		}
	}
	d.srv = server.New(server.Options{
		Store: d.store, Auth: d.authn, Indexer: d.sched, Arrivals: arrivals, Limits: lim,
		MaxUploadSize: int64(cfg.MaxUploadSize), MaxConcurrent: cfg.MaxConcurrentUploads,
		WaitIndex: cfg.Index.Wait, Log: d.log,
		AuthLimiter:   &server.AuthLimiter{Limit: cfg.AuthFailureLimit, Window: cfg.AuthFailureWindow.D()},
		MinUploadRate: int64(cfg.MinUploadRate), RateWindow: cfg.UploadRateWindow.D(),
		Conns: d.conns, Metrics: d.metrics, MetricsAllow: metricsAllow, Audit: d.auditLog,
		Health: d.health, Channel: d.channel, TokenDownloads: cfg.Download.Access == "token", ChannelName: cfg.ChannelName,
		DownloadRateWhileUploading: int64(cfg.Download.RateWhileUploading), Trusted: verifier, Lifecycle: d.lifecycle,
		Degraded: d.degraded, Mirror: mirrored, MirrorWait: mirrorWait,
		Downloads: server.DownloadLimits{MaxConcurrent: cfg.Download.MaxConcurrent,
			MaxPerConnection: cfg.Download.MaxPerConnection, SendTimeout: cfg.Download.SendTimeout.D()},
	})
	// With a listener of their own, downloads are served there only, and
	// uploads only on the main listeners.
	mainRoles := server.All
	if len(d.downloadListeners) > 0 {
		mainRoles = server.Uploads | server.Ops
	}
	d.hs = d.httpServer(d.srv.Handler(mainRoles))
	if len(d.downloadListeners) > 0 {
		d.downloadHS = d.httpServer(d.srv.Handler(server.Downloads | server.Ops))
	}
	return nil
}

// startMirror opens the object-storage mirror, exports its metrics and
// runs its sync loop until the daemon closes.
func (d *daemon) startMirror(ctx context.Context) error {
	var err error
	if d.mirror, err = mirror.New(*d.mirrorCfg, d.writeDir, d.log); err != nil {
		return err
	}
	d.metrics.Mirror(d.mirror.Backlog, d.mirror.BehindObjects, d.mirror.Conflicts)
	mctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.mirror.Run(mctx, d.cfg.Mirror.ReconcileInterval.D()); close(done) }()
	d.onClose(func() { stop(); <-done })
	return nil
}

// degraded says why the server works but not fully, for /readyz.
func (d *daemon) degraded() string {
	if d.mirror == nil {
		return ""
	}
	if n := d.mirror.Conflicts(); n > 0 {
		return fmt.Sprintf("mirror: %d objects in the bucket differ from the package of that name; nothing was overwritten", n)
	}
	if e := d.mirror.Err(); e != "" {
		return "mirror behind: " + e
	}
	return ""
}

// httpServer returns the server settings every listener shares.
func (d *daemon) httpServer(h http.Handler) *http.Server {
	hs := &http.Server{
		Handler:           h,
		ConnState:         d.conns.ConnState,
		ReadHeaderTimeout: d.cfg.ReadHeaderTimeout.D(),
		IdleTimeout:       d.cfg.IdleTimeout.D(),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
		HTTP2:             server.HTTP2Config(),
	}
	hs.HTTP2.MaxConcurrentStreams = d.cfg.MaxStreamsPerConnection
	hs.HTTP2.WriteByteTimeout = d.cfg.Download.SendTimeout.D()
	if d.cert != nil {
		hs.TLSConfig = d.cert.TLSConfig()
	}
	return hs
}

// runner chooses the indexer: conda, when conda_exe is set, or the
// built-in repodata writer.
func (d *daemon) runner(lim condapkg.Limits) (index.Runner, error) {
	if d.cfg.CondaExe == "" {
		ix := d.cfg.Index
		return repodata.New(d.writeDir, lim, d.log, repodata.WithFiles(repodata.Files{
			Zst: ix.Zst, Shards: ix.Shards, RunExports: ix.RunExports, Channeldata: ix.Channeldata,
			CurrentRepodata: ix.CurrentRepodata, ShardRetention: ix.ShardRetention.D(),
		})), nil
	}
	tmp := filepath.Join(d.writeDir, IndexerTempDir)
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("indexer temp dir: %w", err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("indexer temp dir: %w", err)
	}
	d.indexerTmp = tmp
	d.onClose(func() {
		if err := os.RemoveAll(tmp); err != nil {
			d.log.Warn("cannot remove the indexer's temp dir", "dir", tmp, "err", err)
		}
	})
	return index.Command{
		Argv:    append([]string{d.cfg.CondaExe}, d.cfg.Index.Command...),
		Channel: d.writeDir,
		TempDir: tmp,
	}, nil
}

// indexAtStart removes temp files left by a crash and brings the index of
// every existing subdir of every label, and each label's noarch, up to
// date with the disk, so that packages added or removed by hand (or by a
// change a crash interrupted) while the server was down are seen. Each
// subdir's patch_instructions.json is derived again from its yanks and
// patch first. conda index is slow: with it, only a missing noarch index
// is written now, and other subdirs on their next change.
func (d *daemon) indexAtStart(ctx context.Context) error {
	labels := []string{store.MainLabel}
	if des, err := os.ReadDir(filepath.Join(d.writeDir, store.LabelDir)); err == nil {
		for _, de := range des {
			if de.IsDir() && store.ValidLabel(de.Name()) {
				labels = append(labels, de.Name())
			}
		}
	}
	var dirs []string
	for _, label := range labels {
		dirs = append(dirs, store.Dir(label, "noarch"))
		for _, s := range d.cfg.AllowedSubdirs {
			dir := store.Dir(label, s)
			if fi, err := os.Stat(filepath.Join(d.writeDir, dir)); s != "noarch" && err == nil && fi.IsDir() {
				dirs = append(dirs, dir)
			}
		}
	}
	start := time.Now()
	for _, dir := range dirs {
		if err := repodata.RemoveStaleTemps(filepath.Join(d.writeDir, dir)); err != nil {
			return fmt.Errorf("clean %s: %w", dir, err)
		}
		if err := d.lifecycle.Refresh(dir); err != nil {
			return fmt.Errorf("patch instructions of %s: %w", dir, err)
		}
		if d.cfg.CondaExe != "" {
			_, err := os.Stat(filepath.Join(d.writeDir, dir, "repodata.json"))
			if filepath.Base(dir) != "noarch" || !errors.Is(err, fs.ErrNotExist) {
				continue
			}
		}
		if err := d.sched.Index(ctx, dir); err != nil {
			return fmt.Errorf("index %s at start: %w", dir, err)
		}
	}
	if d.mirror != nil {
		// Synced once whatever the indexer did: the bucket may be
		// behind from before the start.
		for _, dir := range dirs {
			d.mirror.Mark(dir)
		}
	}
	d.log.Info("channel index checked", "labels", len(labels), "subdirs", slices.Clip(dirs), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}
