package daemon

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/owners"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// OwnersFile is where the owners of package names are kept, below the
// channel root.
const OwnersFile = lifecycle.AdminDir + "/owners.json"

// devTokenName names the --dev token, which may upload any name.
const devTokenName = "dev"

// acquireOwnerEvents reads the owner changes of the audit log, if the
// owners file is lost, while the audit log can still be read: it belongs
// to root, and the service drops to its user next.
func (d *daemon) acquireOwnerEvents() error {
	if _, err := os.Stat(filepath.Join(d.writeDir, OwnersFile)); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var err error
	d.ownerEvents, err = owners.FromAudit(d.cfg.Audit.File)
	return err
}

// policyOptions opens the owners of package names, rebuilding them from
// the audit log's events if the file was lost, and gathers [policy]. The
// --dev token is bound by no owner.
func (d *daemon) policyOptions() (server.PolicyOptions, error) {
	p := d.cfg.Policy
	st, err := owners.Open(filepath.Join(d.writeDir, OwnersFile), d.ownerEvents)
	if err != nil {
		return server.PolicyOptions{}, err
	}
	o := server.PolicyOptions{Owners: st, FirstUpload: p.Owners == owners.ModeFirstUpload, Labels: p.Labels}
	if d.o.Dev {
		o.Exempt = []string{devTokenName}
	}
	return o, nil
}
