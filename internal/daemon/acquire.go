package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/conda-upload-server/conda-upload-server/internal/audit"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/mirror"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/systemd"
)

// acquire gets what the process can no longer get once it is confined.
// Files come before sockets, so that a configuration mistake is reported
// before anything is bound.
func (d *daemon) acquire() error {
	if err := d.acquireCertificate(); err != nil {
		return err
	}
	if err := d.acquireTokens(); err != nil {
		return err
	}
	if err := d.acquireMirror(); err != nil {
		return err
	}
	if err := d.acquireUpstreams(); err != nil {
		return err
	}
	if err := d.acquireListeners(); err != nil {
		return err
	}
	d.acquireNotifier()
	var err error
	if d.wdInterval, err = systemd.WatchdogInterval(); err != nil {
		return err
	}
	if d.auditLog, err = audit.Open(d.cfg.Audit.File, d.log); err != nil {
		return err
	}
	d.onClose(func() { d.auditLog.Close() })
	return d.acquireOwnerEvents()
}

// acquireListeners takes the sockets the service manager passes, or binds
// the configured address when it passes none.
func (d *daemon) acquireListeners() error {
	socks, err := systemd.Listeners()
	if err != nil {
		return err
	}
	main, metricsLs, downloadLs := socks.Main, socks.Metrics, socks.Download
	closeAll := func(ls []net.Listener) func() {
		return func() {
			for _, l := range ls {
				l.Close()
			}
		}
	}
	d.activated = len(main) > 0
	if !d.activated {
		if main, err = bind("listen", d.cfg.Listen, d.cfg.Port); err != nil {
			return err
		}
	}
	d.listeners = main
	d.onClose(closeAll(main))
	if d.cfg.Metrics.Enabled && d.cfg.Metrics.Listen != "" {
		ml, err := net.Listen("tcp", d.cfg.Metrics.Listen)
		if err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
		metricsLs = append(metricsLs, ml)
	}
	d.metricsListeners = metricsLs
	d.onClose(closeAll(metricsLs))
	if len(downloadLs) == 0 && d.cfg.ListenDownload != "" && !d.activated {
		if downloadLs, err = bind("listen_download", d.cfg.ListenDownload, d.cfg.Port); err != nil {
			return err
		}
	}
	d.downloadListeners = downloadLs
	d.onClose(closeAll(downloadLs))
	return nil
}

// bind listens on a configured address (a host, or host:port), with
// port as the default port; key names the setting in errors.
func bind(key, listen string, port int) ([]net.Listener, error) {
	addr, err := (&config.Config{Listen: listen, Port: port}).ListenAddr()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return []net.Listener{ln}, nil
}

// acquireCertificate reads the certificate and key: the systemd
// credentials if the unit passes them, else the configured files, else (in
// dev mode) a new self-signed one.
func (d *daemon) acquireCertificate() error {
	d.certFile, d.keyFile = d.cfg.CertFile, d.cfg.KeyFile
	if d.credDir != "" && fileExists(filepath.Join(d.credDir, "tls-cert")) {
		d.certFile, d.keyFile = filepath.Join(d.credDir, "tls-cert"), filepath.Join(d.credDir, "tls-key")
	}
	var err error
	switch {
	case d.o.InsecureHTTP:
		d.log.Warn("serving plain HTTP (--insecure-http): tokens and packages cross the network in clear text")
	case d.certFile != "":
		d.cert, err = server.LoadCertificate(d.certFile, d.keyFile)
	case d.o.Dev:
		d.cert, err = server.SelfSigned()
	default:
		err = errors.New("no TLS certificate: set certfile and keyfile (-c, -k), pass the tls-cert and tls-key credentials, or use --insecure-http for plain HTTP")
	}
	return err
}

// acquireTokens reads the token hashes.
func (d *daemon) acquireTokens() error {
	var err error
	if d.tokens, err = d.cfg.AuthTokens(d.credDir); err != nil {
		return err
	}
	d.authn, err = auth.New(d.cfg.Salt, d.tokens)
	return err
}

// acquireMirror reads the object-storage mirror's keys and CA
// certificates, which may live outside what the sandbox lets it read.
func (d *daemon) acquireMirror() error {
	m := d.cfg.Mirror.S3
	if m == nil {
		return nil
	}
	var err error
	mc := mirror.Config{Endpoint: m.Endpoint, Region: m.Region, Bucket: m.Bucket, Prefix: m.Prefix, PathStyle: m.PathStyle,
		Retention: d.cfg.Index.ShardRetention.D()}
	if mc.AccessKey, mc.SecretKey, err = d.cfg.MirrorKeys(d.credDir); err != nil {
		return err
	}
	if m.CAFile != "" {
		if mc.CAPEM, err = os.ReadFile(m.CAFile); err != nil {
			return fmt.Errorf("mirror.s3.ca_file: %w", err)
		}
	}
	d.mirrorCfg = &mc
	return nil
}

// acquireNotifier dials the notify socket, once: it is outside what the
// sandbox allows.
func (d *daemon) acquireNotifier() {
	n, err := systemd.NewNotifier()
	if err != nil {
		// systemd will time the start out and say so; serving still helps.
		d.log.Error("cannot notify the service manager", "err", err)
		n = &systemd.Notifier{}
	}
	d.notify = n
	d.onClose(func() { n.Close() })
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
