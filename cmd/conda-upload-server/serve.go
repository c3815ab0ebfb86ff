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
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
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
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := runServer(ctx, f, log, stdout); err != nil {
		fmt.Fprintf(stderr, "conda-upload-server: error: %v\n", err)
		return 1
	}
	return 0
}

// runServer starts the service and blocks until ctx is done and in-flight
// uploads have drained.
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

	var cert *server.Certificate
	switch {
	case f.insecureHTTP:
		log.Warn("serving plain HTTP (--insecure-http): tokens and packages cross the network in clear text")
	case cfg.CertFile != "":
		if cert, err = server.LoadCertificate(cfg.CertFile, cfg.KeyFile); err != nil {
			return err
		}
	case f.dev:
		if cert, err = server.SelfSigned(); err != nil {
			return err
		}
	default:
		return errors.New("no TLS certificate: set certfile and keyfile (-c, -k), or use --insecure-http for plain HTTP")
	}
	tokens, err := cfg.AuthTokens(os.Getenv("CREDENTIALS_DIRECTORY"))
	if err != nil {
		return err
	}
	authn, err := auth.New(cfg.Salt, tokens)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()

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
			TempDir: os.TempDir(),
		}
	} else {
		rd = repodata.New(writeDir, lim, log)
		runner = index.Builtin{X: rd}
	}
	ix := index.New(runner, cfg.Index.Timeout.D(), log)
	defer ix.Close()
	if err := startupIndex(ctx, writeDir, cfg, ix, log); err != nil {
		return err
	}

	srv := server.New(server.Options{
		Store: st, Auth: authn, Indexer: ix, Repodata: rd, Limits: lim,
		MaxUploadSize: int64(cfg.MaxUploadSize), MaxConcurrent: cfg.MaxConcurrentUploads,
		WaitIndex: cfg.Index.Wait, Log: log,
	})
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.IdleTimeout.D(),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	scheme := "http"
	if cert != nil {
		hs.TLSConfig = cert.TLSConfig()
		scheme = "https"
	}
	log.Info("serving", "addr", ln.Addr().String(), "scheme", scheme, "channel", writeDir,
		"indexer", runner.Name(), "tokens", len(tokens), "max_upload_size", int64(cfg.MaxUploadSize))
	if f.dev {
		printDevBanner(stdout, scheme, cfg.Port, writeDir, devToken)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if cert == nil {
				continue
			}
			if err := cert.Reload(); err != nil {
				log.Error("certificate reload failed; keeping the old one", "err", err)
			} else {
				log.Info("certificate reloaded", "not_after", cert.Leaf().NotAfter)
			}
		}
	}()

	errc := make(chan error, 1)
	go func() {
		if cert != nil {
			errc <- hs.ServeTLS(ln, "", "")
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down; draining uploads", "grace", cfg.ShutdownGrace.D())
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
