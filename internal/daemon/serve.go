package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/systemd"
)

// serve accepts connections until ctx is done, then drains.
func (d *daemon) serve(ctx context.Context) error {
	errc := d.startServing()
	d.notify.Ready(d.status())
	wdCtx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	go d.reportStatus(wdCtx)
	go d.reloadOnRequest(wdCtx)
	if d.wdInterval > 0 {
		go systemd.Watchdog(wdCtx, d.notify, d.wdInterval, d.health, func(err error) {
			if err != nil {
				d.log.Error("unhealthy: withholding watchdog pings", "err", err)
				d.notify.Status("unhealthy: " + err.Error())
			} else {
				d.log.Info("healthy: sending watchdog pings", "interval", d.wdInterval)
			}
		})
	}
	select {
	case err := <-errc:
		d.serveErr.Store(&err)
		d.log.Error("accept loop ended", "err", err)
		if d.wdInterval == 0 {
			d.drain()
			return fmt.Errorf("serve: %w", err)
		}
		// Stay up without pinging: the service manager restarts us.
		<-ctx.Done()
	case <-ctx.Done():
	}
	stopBackground()
	d.drain()
	return nil
}

// startServing starts an accept loop on every listener, and returns the
// channel their errors arrive on.
func (d *daemon) startServing() <-chan error {
	errc := make(chan error, len(d.listeners)+len(d.downloadListeners))
	serve := func(hs *http.Server, ls []net.Listener) {
		for _, l := range ls {
			l := d.conns.Listener(l)
			go func() {
				if d.cert != nil {
					errc <- hs.ServeTLS(l, "", "")
				} else {
					errc <- hs.Serve(l)
				}
			}()
		}
	}
	serve(d.hs, d.listeners)
	serve(d.downloadHS, d.downloadListeners)
	for _, l := range d.metricsListeners {
		ms := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: d.hs.ErrorLog}
		if d.metrics != nil {
			ms.Handler = d.metrics.Handler()
		}
		d.metricsHS = append(d.metricsHS, ms)
		go ms.Serve(l)
		d.log.Info("serving metrics", "addr", l.Addr().String())
	}
	addrs := make([]string, len(d.listeners))
	for i, l := range d.listeners {
		addrs[i] = l.Addr().String()
	}
	downloads := "off"
	if d.channel != nil {
		downloads = d.cfg.Download.Access
	}
	var downloadAddrs []string
	for _, l := range d.downloadListeners {
		downloadAddrs = append(downloadAddrs, l.Addr().String())
	}
	d.log.Info("serving", "addrs", addrs, "download_addrs", downloadAddrs, "socket_activated", d.activated, "scheme", d.scheme(),
		"channel", d.writeDir, "downloads", downloads, "indexer", d.sched.Name(), "tokens", len(d.tokens),
		"max_upload_size", int64(d.cfg.MaxUploadSize), "uid", os.Getuid())
	if d.o.Dev {
		printDevBanner(d.o.Stdout, d.scheme(), d.listeners[0].Addr().String(), d.writeDir, d.devToken)
	}
	return errc
}

func (d *daemon) scheme() string {
	if d.cert != nil {
		return "https"
	}
	return "http"
}

func (d *daemon) status() string {
	s := d.srv.Stats()
	return fmt.Sprintf("serving %s; uploads %d, failures %d, in flight %d, index runs %d (%d failed)",
		d.scheme(), s.Uploads, s.Failures, s.InFlight, d.sched.Runs(), d.sched.Failures())
}

// reportStatus sends STATUS= every ten seconds.
func (d *daemon) reportStatus(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.notify.Status(d.status())
		}
	}
}

// reloadOnRequest re-reads, on each reload request, what can change
// without a restart: the certificate and key, the tokens (tokens_file),
// and the audit log file. Whatever fails to load is kept as it was, and
// the error is logged.
func (d *daemon) reloadOnRequest(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.o.Reload:
			d.reload()
		}
	}
}

func (d *daemon) reload() {
	if d.cert != nil {
		if err := d.cert.Reload(); err != nil {
			d.log.Error("certificate reload failed; keeping the old one", "err", err)
		} else {
			d.log.Info("certificate reloaded", "not_after", d.cert.Leaf().NotAfter)
			d.metrics.CertExpiry(d.cert.Leaf().NotAfter)
		}
	}
	tokens, err := d.cfg.AuthTokens(d.credDir)
	if err == nil {
		var a *auth.Authenticator
		if a, err = auth.New(d.cfg.Salt, tokens); err == nil {
			d.srv.SetAuth(a)
			d.log.Info("tokens reloaded", "tokens", a.Len())
		}
	}
	if err != nil {
		d.log.Error("token reload failed; keeping the old tokens", "err", err)
	}
	if err := d.auditLog.Reopen(); err != nil {
		d.log.Error("audit log reopen failed", "err", err)
	}
}

// drain refuses new uploads, gives those in flight the grace period, and
// stops every server and index run.
func (d *daemon) drain() {
	grace := d.cfg.ShutdownGrace.D()
	d.log.Info("shutting down; draining uploads", "grace", grace)
	d.notify.Stopping("draining uploads")
	d.srv.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, hs := range []*http.Server{d.hs, d.downloadHS} {
		if hs == nil {
			continue
		}
		if err := hs.Shutdown(ctx); err != nil {
			d.log.Warn("grace period over; closing remaining connections", "err", err)
			hs.Close()
		}
	}
	for _, ms := range d.metricsHS {
		if err := ms.Shutdown(ctx); err != nil {
			ms.Close()
		}
	}
	d.sched.Close()
	d.log.Info("stopped", "uploads", d.srv.Stats().Uploads)
}
