package daemon

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/proxy"
)

// ProxyCacheDir is the proxies' cache, inside the channel directory (the
// one tree the sandbox lets the server write), as a dot-folder the
// channel never serves: <write_dir>/.proxy-cache/<name>/.
const ProxyCacheDir = ".proxy-cache"

// acquireUpstreams reads the upstreams' credentials and CA certificates,
// which may live outside what the sandbox lets the server read.
func (d *daemon) acquireUpstreams() error {
	for _, u := range d.cfg.Upstreams {
		up, err := upstream(u, d.credDir)
		if err != nil {
			return err
		}
		up.Private = d.cfg.Download.Access == "token"
		d.upstreams = append(d.upstreams, up)
	}
	return nil
}

// upstream turns an [[upstreams]] block into a proxy.Upstream, with the
// defaults of its zero values.
func upstream(u config.UpstreamConfig, credDir string) (proxy.Upstream, error) {
	creds, err := u.Credentials(credDir)
	if err != nil {
		return proxy.Upstream{}, err
	}
	up := proxy.Upstream{
		Name: u.Name, URL: u.URL, Subdirs: u.Subdirs, Include: u.Include, Exclude: u.Exclude,
		RedirectHosts: u.RedirectEndpoints(), Token: creds.Token, Username: creds.Username, Password: creds.Password,
		IndexTTL: u.IndexTTL.D(), FetchTimeout: u.FetchTimeout.D(), MaxIndexSize: int64(u.MaxIndexSize), CacheSize: int64(u.CacheSize),
		Mirror: u.Mode == "mirror", SyncInterval: u.SyncInterval.D(),
	}
	if up.SyncInterval == 0 {
		up.SyncInterval = config.DefaultSyncInterval
	}
	if up.IndexTTL == 0 {
		up.IndexTTL = config.DefaultIndexTTL
	}
	if up.FetchTimeout == 0 {
		up.FetchTimeout = config.DefaultFetchTimeout
	}
	if up.MaxIndexSize == 0 {
		up.MaxIndexSize = config.DefaultMaxIndexSize
	}
	if u.CAFile != "" {
		pem, err := os.ReadFile(u.CAFile)
		if err != nil {
			return up, fmt.Errorf("upstreams %s: ca_file: %w", u.Name, err)
		}
		up.RootCAs = x509.NewCertPool()
		if !up.RootCAs.AppendCertsFromPEM(pem) {
			return up, fmt.Errorf("upstreams %s: ca_file %s holds no PEM certificate", u.Name, u.CAFile)
		}
	}
	return up, nil
}

// startProxies opens the proxies' caches, removing what a crash left,
// and runs the syncs of those in mirror mode until the daemon closes.
func (d *daemon) startProxies(ctx context.Context) error {
	if len(d.upstreams) == 0 {
		return nil
	}
	d.proxies = map[string]*proxy.Proxy{}
	pm := d.metrics.Proxy()
	for _, up := range d.upstreams {
		var obs proxy.Observer
		if pm != nil {
			obs = pm
		}
		p, err := proxy.New(up, filepath.Join(d.writeDir, ProxyCacheDir, up.Name), d.log, obs)
		if err != nil {
			return err
		}
		if pm != nil {
			pm.IndexAge(up.Name, p.IndexAge)
		}
		d.proxies[up.Name] = p
		if up.Mirror {
			sctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { p.Run(sctx, up.SyncInterval); close(done) }()
			d.onClose(func() { stop(); <-done })
		}
	}
	return nil
}

// proxiesDegraded says which upstreams cannot be reached, for /readyz.
func (d *daemon) proxiesDegraded() string {
	var why []string
	for _, up := range d.upstreams {
		if s := d.proxies[up.Name].Degraded(); s != "" {
			why = append(why, s)
		}
	}
	return strings.Join(why, "; ")
}
