package daemon

import (
	"path/filepath"

	"github.com/conda-upload-server/conda-upload-server/internal/attest"
	"github.com/conda-upload-server/conda-upload-server/internal/owners"
	"github.com/conda-upload-server/conda-upload-server/internal/proxy"
	"github.com/conda-upload-server/conda-upload-server/internal/stats"
	"github.com/conda-upload-server/conda-upload-server/internal/web"
)

// StatsDir is the folder, in the channel, of the download counts: a
// dot-folder, so never served, and inside what the sandbox lets the
// server write.
const StatsDir = ".stats"

// openPages starts the download counts and, unless [ui] enabled is off,
// the channel's pages wherever downloads are served (so in --dev). The
// pages need the built-in indexer, whose memory they read; with
// conda_exe the counts are kept but no pages are served. A package's
// page names its owners (token and publisher names, never a token). The
// upstreams ([[upstreams]]) are opened before, so each gets a page.
func (d *daemon) openPages(own *owners.Store) error {
	if d.channel == nil {
		return nil
	}
	var err error
	d.stats, err = stats.Open(stats.Options{Dir: filepath.Join(d.writeDir, StatsDir), Logger: d.log})
	if err != nil {
		return err
	}
	d.onClose(func() {
		if err := d.stats.Close(); err != nil {
			d.log.Error("download counts: last flush", "err", err)
		}
	})
	d.metrics.DownloadCounts(d.stats.Total)
	if d.writer == nil || !d.cfg.UI.Enabled {
		return nil
	}
	var ups []*proxy.Proxy
	for _, up := range d.upstreams {
		ups = append(ups, d.proxies[up.Name])
	}
	d.pages, err = web.New(web.Options{Source: d.writer, Stats: d.stats, Yanks: d.lifecycle.YankReasons, Owners: own.Of,
		AttestMode: d.cfg.AttestMode(), Signers: d.signers, Upstreams: ups,
		Private: d.cfg.Download.Access == "token", Version: d.o.Version, Logger: d.log})
	return err
}

// signers names who signed each attestation of a package on a page, as
// the admin list does. A sidecar that cannot be read names no one: the
// page still says the file is attested.
func (d *daemon) signers(dir, filename string) []string {
	st, err := attest.ReadStored(filepath.Join(d.writeDir, dir, filename))
	if err != nil {
		d.log.Warn("page: read attestations", "dir", dir, "filename", filename, "err", err)
	}
	if st == nil {
		return nil
	}
	return st.Signers
}
