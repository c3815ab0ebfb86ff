package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/audit"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/metrics"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/sandbox"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/systemd"
)

const usage = `usage: conda-upload-server [-h] -d WRITE_DIR -p PORT -e CONDA_EXE -c CERTFILE -k KEYFILE -t TOKEN_HASH
       conda-upload-server --config FILE [flags]
       conda-upload-server --dev
       conda-upload-server hash-token [--salt SALT] < token
       conda-upload-server --version

A hardened HTTPS endpoint that CI jobs upload conda packages to.

flags (override the config file):
  -h, --help            show this help message and exit
  -d WRITE_DIR, --write_dir WRITE_DIR
                        channel root; packages go to WRITE_DIR/<subdir>/
  -p PORT, --port PORT  webserver port number (default 8443)
  -e CONDA_EXE, --conda_exe CONDA_EXE
                        full path to conda executable; runs "conda index"
                        after each upload (default: the built-in indexer)
  -c CERTFILE, --certfile CERTFILE
                        full path to certificate file for SSL
  -k KEYFILE, --keyfile KEYFILE
                        full path to keyfile for SSL
  -t TOKEN_HASH, --token_hash TOKEN_HASH
                        hash of secure token (prefer token_hash_file)
  --config FILE         TOML configuration file
  --dev                 development mode: self-signed certificate, a
                        one-time token, ./channel, the built-in indexer
  --insecure-http       serve plain HTTP instead of HTTPS (not for production)
`

// flags holds the command-line settings; nil or empty means not given.
type flags struct {
	configPath   string
	dev          bool
	insecureHTTP bool
	set          map[string]bool
	writeDir     string
	port         int
	condaExe     string
	certFile     string
	keyFile      string
	tokenHash    string
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{set: map[string]bool{}}
	fs := flag.NewFlagSet("conda-upload-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	for _, n := range []string{"d", "write_dir"} {
		fs.StringVar(&f.writeDir, n, "", "")
	}
	for _, n := range []string{"p", "port"} {
		fs.IntVar(&f.port, n, 0, "")
	}
	for _, n := range []string{"e", "conda_exe"} {
		fs.StringVar(&f.condaExe, n, "", "")
	}
	for _, n := range []string{"c", "certfile"} {
		fs.StringVar(&f.certFile, n, "", "")
	}
	for _, n := range []string{"k", "keyfile"} {
		fs.StringVar(&f.keyFile, n, "", "")
	}
	for _, n := range []string{"t", "token_hash"} {
		fs.StringVar(&f.tokenHash, n, "", "")
	}
	fs.StringVar(&f.configPath, "config", "", "")
	fs.BoolVar(&f.dev, "dev", false, "")
	fs.BoolVar(&f.insecureHTTP, "insecure-http", false, "")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(fl *flag.Flag) {
		long := map[string]string{"d": "write_dir", "p": "port", "e": "conda_exe", "c": "certfile", "k": "keyfile", "t": "token_hash"}
		name := fl.Name
		if l, ok := long[name]; ok {
			name = l
		}
		f.set[name] = true
	})
	return f, nil
}

// apply overrides config values with the flags that were given.
func (f *flags) apply(c *config.Config) {
	if f.set["write_dir"] {
		c.WriteDir = f.writeDir
	}
	if f.set["port"] {
		c.Port = f.port
	}
	if f.set["conda_exe"] {
		c.CondaExe = f.condaExe
	}
	if f.set["certfile"] {
		c.CertFile = f.certFile
	}
	if f.set["keyfile"] {
		c.KeyFile = f.keyFile
	}
	if f.set["token_hash"] {
		c.TokenHash, c.TokenHashFile = f.tokenHash, ""
	}
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "conda-upload-server: error: %v\n", err)
		fmt.Fprint(stderr, "conda-upload-server: hint: see conda-upload-server --help\n")
		return 2
	}
	log := newLogger(stderr)
	if err := runServer(ctx, f, log, stdout); err != nil {
		fmt.Fprintf(stderr, "conda-upload-server: error: %v\n", err)
		return 1
	}
	return 0
}

// newLogger logs logfmt lines to stderr. Under systemd (JOURNAL_STREAM
// set) the time is left out, since the journal stamps every line itself.
func newLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{}
	if os.Getenv("JOURNAL_STREAM") != "" {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// runServer starts the service and blocks until ctx is done and in-flight
// uploads have drained. The start-up order is the one the sandbox needs:
// everything that needs privileges or paths outside the channel (binding,
// reading the key and token hashes, dialling the notify socket, looking
// up the service user) comes before the privilege drop and Landlock.
func runServer(ctx context.Context, f *flags, log *slog.Logger, stdout io.Writer) error {
	cfg := config.Default()
	if f.configPath != "" {
		var err error
		if cfg, err = config.Load(f.configPath); err != nil {
			return err
		}
	}
	f.apply(cfg)
	var devToken string
	if f.dev {
		if cfg.WriteDir == "" {
			cfg.WriteDir = "channel"
		}
		devToken = rand.Text()
		cfg.Tokens = append(cfg.Tokens, config.TokenConfig{Name: "dev", Hash: auth.Hash(cfg.Salt, devToken)})
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if f.set["token_hash"] {
		log.Warn("token_hash was given on the command line, where other local users can read it; prefer token_hash_file in the config file or the token-hash credential")
	}
	writeDir, err := filepath.Abs(cfg.WriteDir)
	if err != nil {
		return err
	}
	mode, err := sandbox.ParseMode(cfg.Sandbox.Landlock)
	if err != nil {
		return err
	}

	// 1. Listeners: from systemd, or bound here.
	listeners, metricsListeners, err := systemd.Listeners()
	if err != nil {
		return err
	}
	if cfg.Metrics.Enabled && cfg.Metrics.Listen != "" {
		ml, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
		metricsListeners = append(metricsListeners, ml)
	}
	defer func() {
		for _, l := range metricsListeners {
			l.Close()
		}
	}()
	activated := len(listeners) > 0
	if !activated {
		ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.Port)))
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		listeners = []net.Listener{ln}
	}
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()

	// 2. TLS certificate and token hashes, from systemd credentials if
	// the unit passes them.
	credDir := os.Getenv("CREDENTIALS_DIRECTORY")
	certFile, keyFile := cfg.CertFile, cfg.KeyFile
	if credDir != "" && fileExists(filepath.Join(credDir, "tls-cert")) {
		certFile, keyFile = filepath.Join(credDir, "tls-cert"), filepath.Join(credDir, "tls-key")
	}
	var cert *server.Certificate
	switch {
	case f.insecureHTTP:
		log.Warn("serving plain HTTP (--insecure-http): tokens and packages cross the network in clear text")
	case certFile != "":
		if cert, err = server.LoadCertificate(certFile, keyFile); err != nil {
			return err
		}
	case f.dev:
		if cert, err = server.SelfSigned(); err != nil {
			return err
		}
	default:
		return errors.New("no TLS certificate: set certfile and keyfile (-c, -k), pass the tls-cert and tls-key credentials, or use --insecure-http for plain HTTP")
	}
	tokens, err := cfg.AuthTokens(credDir)
	if err != nil {
		return err
	}
	authn, err := auth.New(cfg.Salt, tokens)
	if err != nil {
		return err
	}

	// 3. The notify socket, dialled once.
	notify, err := systemd.NewNotifier()
	if err != nil {
		// systemd will time the start out and say so; serving still helps.
		log.Error("cannot notify the service manager", "err", err)
		notify = &systemd.Notifier{}
	}
	defer notify.Close()
	wdInterval, err := systemd.WatchdogInterval()
	if err != nil {
		return err
	}

	// 4. Privileges.
	if err := dropPrivileges(cfg, f.dev, log); err != nil {
		return err
	}
	if err := sandbox.NoNewPrivs(); err != nil {
		return err
	}

	// 5. Landlock, once the channel and the indexer's temp dir exist.
	if err := os.MkdirAll(writeDir, 0o755); err != nil {
		return fmt.Errorf("create write_dir: %w (the server runs as uid %d)", err, os.Getuid())
	}
	policy := sandbox.Policy{
		WriteDirs: append([]string{writeDir}, cfg.Sandbox.WritePaths...),
		ExecDirs:  slices.Clone(sandbox.SystemExecDirs),
		ReadDirs:  slices.Clone(cfg.Sandbox.ReadPaths),
		ReadFiles: slices.Clone(sandbox.SystemReadFiles),
	}
	if certFile != "" {
		// Directories, not files: a renewed certificate is a new inode
		// (renamed into place, or a symlink to a new file), and Landlock
		// rules follow inodes.
		policy.ReadDirs = append(policy.ReadDirs, certDirs(certFile, keyFile)...)
	}
	if credDir != "" {
		policy.ReadDirs = append(policy.ReadDirs, credDir)
	}
	if cfg.TokenHashFile != "" {
		policy.ReadFiles = append(policy.ReadFiles, cfg.TokenHashFile)
	}
	tokensFile := cfg.TokensFilePath(credDir)
	if tokensFile != "" {
		// The directory, so that a tokens file replaced by rename (the
		// usual way to edit it) can still be re-read on SIGHUP.
		policy.ReadDirs = append(policy.ReadDirs, filepath.Dir(tokensFile))
	}
	auditLog, err := audit.Open(cfg.Audit.File, log)
	if err != nil {
		return err
	}
	defer auditLog.Close()
	if cfg.Audit.File != "" {
		policy.WriteFiles = append(policy.WriteFiles, cfg.Audit.File)
	}
	var childTmp string
	if cfg.CondaExe != "" {
		prefix, err := sandbox.CondaPrefix(cfg.CondaExe)
		if err != nil {
			return err
		}
		policy.ExecDirs = append(policy.ExecDirs, prefix)
		policy.ReadDirs = append(policy.ReadDirs, "/etc/conda", "/proc/self", "/sys/devices/system/cpu")
		if childTmp, err = os.MkdirTemp("", "conda-upload-server-index-"); err != nil {
			return fmt.Errorf("indexer temp dir: %w", err)
		}
		defer os.RemoveAll(childTmp)
		// /dev/shm: Python's multiprocessing (conda-index's worker pool).
		policy.TempDirs = []string{childTmp, "/dev/shm"}
	}
	report, err := sandbox.Restrict(mode, policy)
	if err != nil {
		return err
	}
	if report.Enforced {
		log.Info("sandbox", "landlock_abi", report.ABI, "enforced", true, "policy", report.Summary)
	} else {
		log.Warn("sandbox", "landlock_abi", report.ABI, "enforced", false, "policy", report.Summary)
	}

	// 6. The channel.
	st, err := store.Open(writeDir)
	if err != nil {
		return err
	}
	if err := st.CheckWritable(); err != nil {
		return err
	}
	lim := condapkg.DefaultLimits()
	lim.AllowedSubdirs = cfg.AllowedSubdirs
	var runner index.Runner
	var rd *repodata.Index
	if cfg.CondaExe != "" {
		runner = index.Command{
			Argv:    append([]string{cfg.CondaExe}, cfg.Index.Command...),
			Channel: writeDir,
			TempDir: childTmp,
		}
	} else {
		rd = repodata.New(writeDir, lim, log)
		runner = index.Builtin{X: rd}
	}
	ix := index.New(runner, cfg.Index.Timeout.D(), log)
	defer ix.Close()
	var m *metrics.Metrics
	var metricsAllow []netip.Prefix
	if cfg.Metrics.Enabled {
		v, commit := versionInfo()
		m = metrics.New(v, commit, cfg.Metrics.TokenNames)
		ix.OnRun(m.IndexRun)
		if cert != nil {
			m.CertExpiry(cert.Leaf().NotAfter)
		}
		for _, a := range cfg.Metrics.Allow {
			metricsAllow = append(metricsAllow, netip.MustParsePrefix(a))
		}
	}
	if err := startupIndex(ctx, writeDir, cfg, ix, log); err != nil {
		return err
	}

	conns := &server.ConnLimiter{Max: cfg.MaxConnections}
	srv := server.New(server.Options{
		Store: st, Auth: authn, Indexer: ix, Repodata: rd, Limits: lim,
		MaxUploadSize: int64(cfg.MaxUploadSize), MaxConcurrent: cfg.MaxConcurrentUploads,
		WaitIndex: cfg.Index.Wait, Log: log,
		AuthLimiter:   &server.AuthLimiter{Limit: cfg.AuthFailureLimit, Window: cfg.AuthFailureWindow.D()},
		MinUploadRate: int64(cfg.MinUploadRate), RateWindow: cfg.UploadRateWindow.D(),
		Conns: conns, Metrics: m, MetricsAllow: metricsAllow, Audit: auditLog,
		Ready: func() error {
			if err := st.CheckWritable(); err != nil {
				return err
			}
			if ix.Stuck() {
				return errors.New("an index run is stuck past its timeout")
			}
			if cert != nil && time.Now().After(cert.Leaf().NotAfter) {
				return fmt.Errorf("TLS certificate expired on %s", cert.Leaf().NotAfter.UTC().Format(time.RFC3339))
			}
			return nil
		},
	})
	ix.WaitFor(srv.Receiving)
	hs := &http.Server{
		Handler:           srv,
		ConnState:         conns.ConnState,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.IdleTimeout.D(),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		HTTP2:             server.HTTP2Config(),
	}
	scheme := "http"
	if cert != nil {
		hs.TLSConfig = cert.TLSConfig()
		scheme = "https"
	}
	addrs := make([]string, len(listeners))
	for i, l := range listeners {
		addrs[i] = l.Addr().String()
	}
	log.Info("serving", "addrs", addrs, "socket_activated", activated, "scheme", scheme, "channel", writeDir,
		"indexer", runner.Name(), "tokens", len(tokens), "max_upload_size", int64(cfg.MaxUploadSize), "uid", os.Getuid())
	if f.dev {
		printDevBanner(stdout, scheme, cfg.Port, writeDir, devToken)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			reload(cert, cfg, credDir, srv, auditLog, m, log)
		}
	}()

	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		l := conns.Listener(l)
		go func() {
			if cert != nil {
				errc <- hs.ServeTLS(l, "", "")
			} else {
				errc <- hs.Serve(l)
			}
		}()
	}
	for _, l := range metricsListeners {
		ms := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: hs.ErrorLog}
		if m != nil {
			ms.Handler = m.Handler()
		}
		go ms.Serve(l)
		log.Info("serving metrics", "addr", l.Addr().String())
	}
	status := func() string {
		s := srv.Stats()
		return fmt.Sprintf("serving %s; uploads %d, failures %d, in flight %d, index runs %d (%d failed)",
			scheme, s.Uploads, s.Failures, s.InFlight, ix.Runs(), ix.Failures())
	}
	notify.Ready(status())
	wdCtx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	var serveErr atomic.Pointer[error]
	health := func() error {
		if e := serveErr.Load(); e != nil {
			return fmt.Errorf("accept loop ended: %w", *e)
		}
		if err := st.CheckWritable(); err != nil {
			return err
		}
		if ix.Stuck() {
			return errors.New("an index run is stuck past its timeout")
		}
		return nil
	}
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-wdCtx.Done():
				return
			case <-t.C:
				notify.Status(status())
			}
		}
	}()
	if wdInterval > 0 {
		go systemd.Watchdog(wdCtx, notify, wdInterval, health, func(err error) {
			if err != nil {
				log.Error("unhealthy: withholding watchdog pings", "err", err)
				notify.Status("unhealthy: " + err.Error())
			} else {
				log.Info("healthy: sending watchdog pings", "interval", wdInterval)
			}
		})
	}

	select {
	case err := <-errc:
		serveErr.Store(&err)
		// Stay up without pinging: the service manager restarts us.
		log.Error("accept loop ended", "err", err)
		if wdInterval == 0 {
			return fmt.Errorf("serve: %w", err)
		}
		<-ctx.Done()
	case <-ctx.Done():
	}
	stopWatchdog()
	log.Info("shutting down; draining uploads", "grace", cfg.ShutdownGrace.D())
	notify.Stopping("draining uploads")
	srv.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace.D())
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("grace period over; closing remaining connections", "err", err)
		hs.Close()
	}
	ix.Close()
	log.Info("stopped", "uploads", srv.Stats().Uploads)
	return nil
}

// reload re-reads, on SIGHUP, what can change without a restart: the
// certificate and key, the tokens (tokens_file), and the audit log file.
// Whatever fails to load is kept as it was, and the error is logged.
func reload(cert *server.Certificate, cfg *config.Config, credDir string, srv *server.Server, auditLog *audit.Log, m *metrics.Metrics, log *slog.Logger) {
	if cert != nil {
		if err := cert.Reload(); err != nil {
			log.Error("certificate reload failed; keeping the old one", "err", err)
		} else {
			log.Info("certificate reloaded", "not_after", cert.Leaf().NotAfter)
			m.CertExpiry(cert.Leaf().NotAfter)
		}
	}
	tokens, err := cfg.AuthTokens(credDir)
	if err == nil {
		var a *auth.Authenticator
		if a, err = auth.New(cfg.Salt, tokens); err == nil {
			srv.SetAuth(a)
			log.Info("tokens reloaded", "tokens", a.Len())
		}
	}
	if err != nil {
		log.Error("token reload failed; keeping the old tokens", "err", err)
	}
	if err := auditLog.Reopen(); err != nil {
		log.Error("audit log reopen failed", "err", err)
	}
}

// dropPrivileges switches to the configured user when started as root.
func dropPrivileges(cfg *config.Config, dev bool, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		if cfg.User != "" {
			log.Info("not started as root; user setting not needed", "uid", os.Getuid())
		}
		return nil
	}
	if cfg.User == "" {
		switch {
		case cfg.AllowRoot:
			log.Warn("running as root (allow_root = true): a compromise of the server is a compromise of the host")
			return nil
		case dev:
			log.Warn("DEV MODE RUNNING AS ROOT: fine on a throwaway machine, never in production (set user in a config file to drop privileges)")
			return nil
		}
		return errors.New("refusing to run as root: set user (and optionally group) in the config file to drop privileges after binding, or allow_root = true to accept the risk")
	}
	c, err := sandbox.LookupUser(cfg.User, cfg.Group)
	if err != nil {
		return err
	}
	if err := sandbox.Drop(c); err != nil {
		return err
	}
	log.Info("dropped privileges", "user", c.Name, "uid", c.UID, "gid", c.GID)
	return nil
}

// certDirs returns the directories of the certificate and key files and
// of the files their symlinks lead to.
func certDirs(files ...string) []string {
	var dirs []string
	for _, f := range files {
		dirs = append(dirs, filepath.Dir(f))
		if real, err := filepath.EvalSymlinks(f); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// startupIndex removes temp files left by a crash and brings the index of
// every existing subdir, and noarch, up to date with the disk, so that
// packages added or removed by hand while the server was down are seen.
func startupIndex(ctx context.Context, root string, cfg *config.Config, ix *index.Indexer, log *slog.Logger) error {
	subdirs := []string{"noarch"}
	for _, s := range cfg.AllowedSubdirs {
		if s == "noarch" {
			continue
		}
		if fi, err := os.Stat(filepath.Join(root, s)); err == nil && fi.IsDir() {
			subdirs = append(subdirs, s)
		}
	}
	start := time.Now()
	for _, s := range subdirs {
		if err := repodata.RemoveStaleTemps(filepath.Join(root, s)); err != nil {
			return fmt.Errorf("clean %s: %w", s, err)
		}
		if cfg.CondaExe != "" && s != "noarch" {
			continue // conda index is slow; it runs on the next upload
		}
		if cfg.CondaExe != "" {
			if _, err := os.Stat(filepath.Join(root, s, "repodata.json")); err == nil {
				continue
			}
		}
		if err := ix.Index(ctx, s); err != nil {
			return fmt.Errorf("index %s at start: %w", s, err)
		}
	}
	log.Info("channel index checked", "subdirs", slices.Clip(subdirs), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func printDevBanner(w io.Writer, scheme string, port int, dir, token string) {
	url := fmt.Sprintf("%s://localhost:%d/", scheme, port)
	fmt.Fprintf(w, `
conda-upload-server is running in dev mode (self-signed certificate, not for production).

  channel: %s
  token:   %s   (printed once; valid until this process exits)

Upload with curl:
  curl -k -F token=%s -F artifact=@mypkg-1.0-0.conda %s

Upload with Python requests:
  import requests
  requests.post(%q, data={'token': %q},
                files={'artifact': open('mypkg-1.0-0.conda', 'rb')}, verify=False)

`, dir, token, token, url, url, token)
}
