package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/daemon"
)

// serveFlags is the flags' part of usage, in the layout of the original's
// argparse help.
const serveFlags = `flags (override the config file):
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
  --listen ADDR         address to bind, such as 127.0.0.1 or
                        127.0.0.1:8443 (default: every address; in --dev,
                        127.0.0.1)
  --user NAME           drop root for this user after binding
  --config FILE         TOML configuration file
  --dev                 development mode: self-signed certificate, a
                        one-time token, ./channel, the built-in indexer,
                        loopback only
  --insecure-http       serve plain HTTP instead of HTTPS (not for production)
`

// flags holds the command-line settings; set says which were given.
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
	listen       string
	user         string
}

// shortNames maps the original's short flags to their long names.
var shortNames = map[string]string{"d": "write_dir", "p": "port", "e": "conda_exe", "c": "certfile", "k": "keyfile", "t": "token_hash"}

// parseServeFlags parses the server's command line; done says that the
// program is to stop, with code.
func parseServeFlags(args []string, s stdio) (f *flags, code int, done bool) {
	f = &flags{set: map[string]bool{}}
	fs := flag.NewFlagSet("conda-upload-server", flag.ContinueOnError)
	strs := map[string]*string{"write_dir": &f.writeDir, "conda_exe": &f.condaExe, "certfile": &f.certFile,
		"keyfile": &f.keyFile, "token_hash": &f.tokenHash}
	for short, long := range shortNames {
		if p, ok := strs[long]; ok {
			fs.StringVar(p, short, "", "")
			fs.StringVar(p, long, "", "")
		}
	}
	fs.IntVar(&f.port, "p", 0, "")
	fs.IntVar(&f.port, "port", 0, "")
	fs.StringVar(&f.listen, "listen", "", "")
	fs.StringVar(&f.user, "user", "", "")
	fs.StringVar(&f.configPath, "config", "", "")
	fs.BoolVar(&f.dev, "dev", false, "")
	fs.BoolVar(&f.insecureHTTP, "insecure-http", false, "")
	if code, done := parseFlags(fs, args, "", usage(), s.out, s.err); done {
		return nil, code, true
	}
	if fs.NArg() > 0 {
		return nil, usageError(s.err, "", fmt.Errorf("unexpected argument %q", fs.Arg(0))), true
	}
	fs.Visit(func(fl *flag.Flag) {
		name := fl.Name
		if l, ok := shortNames[name]; ok {
			name = l
		}
		f.set[name] = true
	})
	return f, exitOK, false
}

// apply overrides config values with the flags that were given.
func (f *flags) apply(c *config.Config) {
	if f.set["write_dir"] {
		c.WriteDir = f.writeDir
	}
	if f.set["listen"] {
		c.Listen = f.listen
	}
	if f.set["port"] {
		// The port flag wins over a port in listen.
		c.Port = f.port
		if host, _, err := net.SplitHostPort(c.Listen); err == nil {
			c.Listen = host
		}
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
	if f.set["user"] {
		c.User = f.user
	}
}

// serve runs the server until ctx ends.
func serve(ctx context.Context, args []string, s stdio) int {
	f, code, done := parseServeFlags(args, s)
	if done {
		return code
	}
	cfg := config.Default()
	if f.configPath != "" {
		var err error
		if cfg, err = config.Load(f.configPath); err != nil {
			return errorf(s.err, "%v", err)
		}
	}
	f.apply(cfg)
	if f.set["token_hash"] {
		warningf(s.err, "token_hash was given on the command line, where other local users can read it; prefer token_hash_file in the config file or the token-hash credential")
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	v, rev := versionInfo()
	err := daemon.Run(ctx, daemon.Options{Config: cfg, Dev: f.dev, InsecureHTTP: f.insecureHTTP, Log: newLogger(s.err),
		Stdout: s.out, Version: v, Revision: rev, Reload: hup})
	if err != nil {
		return errorf(s.err, "%v", err)
	}
	return exitOK
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

const reloadUsage = `usage: conda-upload-server reload PID

Makes the server running as PID reload its certificate and key, its tokens
and its audit log file, by sending it SIGHUP. The unit's ExecReload uses
it, so that systemctl reload needs no kill(1) on minimal systems.
`

// reloadPID sends SIGHUP to a running server.
func reloadPID(_ context.Context, args []string, s stdio) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	if code, done := parseFlags(fs, args, "reload", reloadUsage, s.out, s.err); done {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(s.err, "reload", errors.New("reload takes one PID"))
	}
	arg := fs.Arg(0)
	pid, err := strconv.Atoi(arg)
	if err != nil || pid <= 1 {
		return usageError(s.err, "reload", fmt.Errorf("bad pid %q", arg))
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return errorf(s.err, "reload %d: %v", pid, err)
	}
	return exitOK
}
