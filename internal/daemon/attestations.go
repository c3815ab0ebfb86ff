package daemon

import (
	"fmt"

	"github.com/conda-upload-server/conda-upload-server/internal/attest"
	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// Attestations builds the server's attestation policy. The trusted root
// is read once, at start: a bad one stops the daemon rather than let
// uploads through unverified.
func Attestations(c *config.Config) (server.Attestations, error) {
	a := server.Attestations{Mode: c.AttestMode(), ChannelURL: c.Attestations.ChannelURL,
		Require: c.Attestations.Require, RequireLabels: c.Attestations.RequireLabels}
	for _, p := range c.TrustedPublishers {
		if p.RequireAttestation {
			a.RequirePublishers = append(a.RequirePublishers, p.Name)
		}
	}
	if a.Mode != config.AttestVerify {
		return a, nil
	}
	v, err := attest.NewFromFile(c.Attestations.TrustedRootFile)
	if err != nil {
		return a, fmt.Errorf("attestations.trusted_root_file: %w", err)
	}
	a.Verifier = v
	return a, nil
}
