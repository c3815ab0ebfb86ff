package daemon

import (
	"path/filepath"

	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/owners"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// OwnersFile is where the owners of package names are kept, below the
// channel root.
const OwnersFile = lifecycle.AdminDir + "/owners.json"

// policyOptions opens the owners of package names, rebuilding them from
// the audit log if the file was lost, and gathers [policy]. The --dev
// token is bound by no owner.
func (d *daemon) policyOptions() (server.PolicyOptions, error) {
	p := d.cfg.Policy
	path := filepath.Join(d.writeDir, OwnersFile)
	events, err := owners.FromAudit(d.cfg.Audit.File, p.Owners)
	if err != nil {
		return server.PolicyOptions{}, err
	}
	st, err := owners.Open(path, events)
	if err != nil {
		return server.PolicyOptions{}, err
	}
	o := server.PolicyOptions{Owners: st, FirstUpload: p.Owners == owners.ModeFirstUpload, Labels: p.Labels}
	if d.o.Dev {
		o.Exempt = []string{"dev"}
	}
	return o, nil
}
