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
// brings the index up to date with the disk. Each part has a builder of
// its own, called in the order the parts need each other: the metrics
// before the mirror and the scheduler that report to them, the mirror
// before the scheduler that marks it, the index before serving.
func (d *daemon) build(ctx context.Context) error {
	if err := d.openStore(); err != nil {
		return err
	}
	lim := condapkg.DefaultLimits()
	lim.AllowedSubdirs = d.cfg.AllowedSubdirs
	runner, err := d.runner(lim)
	if err != nil {
		return err
	}
	d.startMetrics()
	if d.mirrorCfg != nil {
		if err := d.startMirror(ctx); err != nil {
			return err
		}
	}
	arrivals := &index.Arrivals{}
	d.lifecycle = lifecycle.New(d.store)
	d.newHousekeeping()
	d.startScheduler(runner, arrivals)
	if err := d.indexAtStart(ctx); err != nil {
		return err
	}
	d.startHousekeeping(ctx)
	verifier, err := d.trustedVerifier()
	if err != nil {
		return err
	}
	if err := d.openChannel(); err != nil {
		return err
	}
	if err := d.startProxies(ctx); err != nil {
		return err
	}
	policy, err := d.policyOptions()
	if err != nil {
		return err
	}
	if err := d.openPages(policy.Owners); err != nil {
		return err
	}
	att, err := Attestations(d.cfg)
	if err != nil {
		return err
	}
	d.conns = &server.ConnLimiter{Max: d.cfg.MaxConnections}
	d.srv = server.New(server.Options{
		Store: d.store, Auth: d.authn, Indexer: d.sched, WaitIndex: d.cfg.Index.Wait, Log: d.log,
		Trusted: verifier, Lifecycle: d.lifecycle, Retention: d.house.pruner, Quota: d.house.quota, Attest: att,
		Limits: d.limits(lim, arrivals), Observe: d.observability(), Channel: d.channelOptions(), Mirror: d.mirrorOptions(),
		Policy: policy,
	})
	d.startHTTPServers()
	return nil
}

// openStore opens the channel for writing, and checks that it can.
func (d *daemon) openStore() error {
	var err error
	if d.store, err = store.Open(d.writeDir); err != nil {
		return err
	}
	return d.store.CheckWritable()
}

// runner chooses the indexer: conda, when conda_exe is set, or the
// built-in repodata writer.
func (d *daemon) runner(lim condapkg.Limits) (index.Runner, error) {
	if d.cfg.CondaExe == "" {
		ix := d.cfg.Index
		d.writer = repodata.New(d.writeDir, lim, d.log, repodata.WithFiles(repodata.Files{
			Zst: ix.Zst, Shards: ix.Shards, RunExports: ix.RunExports, Channeldata: ix.Channeldata,
			CurrentRepodata: ix.CurrentRepodata, ShardRetention: ix.ShardRetention.D(),
		}))
		return d.writer, nil
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

// startMetrics creates the metrics, if enabled.
func (d *daemon) startMetrics() {
	if !d.cfg.Metrics.Enabled {
		return
	}
	d.metrics = metrics.New(d.o.Version, d.o.Revision, d.cfg.Metrics.TokenNames)
	if d.cert != nil {
		d.metrics.CertExpiry(d.cert.Leaf().NotAfter)
	}
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

// startScheduler starts the index scheduler over runner. Its runs are
// observed by the metrics, and each that succeeds marks its subdir for
// the mirror and queues its retention pass.
func (d *daemon) startScheduler(runner index.Runner, arrivals *index.Arrivals) {
	opts := []index.Option{index.WithTimeout(d.cfg.Index.Timeout.D()), index.WithArrivals(arrivals)}
	if d.metrics != nil {
		opts = append(opts, index.WithObserver(d.metrics.IndexRun))
	}
	opts = append(opts, index.WithAfterRun(func(dir string, err error) {
		if err == nil && d.mirror != nil {
			d.mirror.Mark(dir)
		}
		d.house.afterIndex(dir, err)
	}))
	d.sched = index.New(runner, d.log, opts...)
	d.onClose(d.sched.Close)
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

// trustedVerifier returns the verifier of the trusted publishers' OIDC
// tokens, or nil if none are configured.
func (d *daemon) trustedVerifier() (*trusted.Verifier, error) {
	if len(d.cfg.TrustedPublishers) == 0 {
		return nil, nil
	}
	return trusted.New(d.cfg.Publishers(), trusted.WithTokenTTL(d.cfg.OIDC.TokenTTL.D()), trusted.WithKeyFailures(func(issuer string) {
		d.log.Error("cannot fetch a trusted publisher issuer's keys; its tokens are refused until they can be had", "issuer", issuer)
		d.metrics.OIDCKeyFailure(issuer)
	}))
}

// openChannel opens the channel for serving, if downloads are enabled.
func (d *daemon) openChannel() error {
	if !d.cfg.Download.Enabled {
		return nil
	}
	var err error
	if d.channel, err = channel.Open(d.writeDir, d.cfg.Download.Access == "token"); err != nil {
		return err
	}
	d.onClose(func() { d.channel.Close() })
	return nil
}

// limits are the server's limits from the config.
func (d *daemon) limits(lim condapkg.Limits, arrivals *index.Arrivals) server.Limits {
	cfg := d.cfg
	return server.Limits{
		MaxUploadSize: int64(cfg.MaxUploadSize), MaxConcurrent: cfg.MaxConcurrentUploads, Package: lim,
		AuthLimiter:   &server.AuthLimiter{Limit: cfg.AuthFailureLimit, Window: cfg.AuthFailureWindow.D(), IPv6Prefix: cfg.AuthFailureIPv6Prefix},
		MinUploadRate: int64(cfg.MinUploadRate), RateWindow: cfg.UploadRateWindow.D(),
		Conns: d.conns, Arrivals: arrivals,
		Downloads: server.DownloadLimits{MaxConcurrent: cfg.Download.MaxConcurrent,
			MaxPerConnection: cfg.Download.MaxPerConnection, SendTimeout: cfg.Download.SendTimeout.D()},
	}
}

// observability is what the server reports to: the metrics and who may
// read them, the audit log, the health checks.
func (d *daemon) observability() server.Observability {
	o := server.Observability{Metrics: d.metrics, Audit: d.auditLog, Health: d.health, Degraded: d.degraded}
	if d.metrics != nil {
		for _, a := range d.cfg.Metrics.Allow {
			o.MetricsAllow = append(o.MetricsAllow, netip.MustParsePrefix(a))
		}
	}
	return o
}

// channelOptions say how the server names and serves the channel.
func (d *daemon) channelOptions() server.ChannelOptions {
	return server.ChannelOptions{
		Files: d.channel, TokenDownloads: d.cfg.Download.Access == "token", Name: d.cfg.ChannelName,
		DownloadRateWhileUploading: int64(d.cfg.Download.RateWhileUploading),
		Pages:                      d.pages, Stats: d.stats, Proxies: d.proxies,
	}
}

// mirrorOptions tell the upload answer about the mirror, if there is one.
func (d *daemon) mirrorOptions() server.MirrorOptions {
	if d.mirror == nil {
		return server.MirrorOptions{}
	}
	o := server.MirrorOptions{Bucket: d.mirror}
	if d.cfg.Mirror.Wait {
		o.Wait = d.cfg.Mirror.WaitTimeout.D()
	}
	return o
}

// degraded says why the server works but not fully, for /readyz.
func (d *daemon) degraded() string {
	if why := d.proxiesDegraded(); why != "" {
		return why
	}
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

// startHTTPServers sets up the http.Servers of the listeners. With a
// listener of their own, downloads are served there only, and uploads
// only on the main listeners.
func (d *daemon) startHTTPServers() {
	mainRoles := server.All
	if len(d.downloadListeners) > 0 {
		mainRoles = server.Uploads | server.Ops
	}
	d.hs = d.httpServer(d.srv.Handler(mainRoles))
	if len(d.downloadListeners) > 0 {
		d.downloadHS = d.httpServer(d.srv.Handler(server.Downloads | server.Ops))
	}
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
