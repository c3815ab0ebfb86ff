package config

import (
	"fmt"

	"github.com/conda-upload-server/conda-upload-server/internal/owners"
)

// PolicyConfig is [policy]: who owns a package name, and which labels an
// upload may create.
type PolicyConfig struct {
	// Owners is "config" (owners are only what the admin API sets) or
	// "first-upload" (the first token or publisher to publish a new
	// name owns it).
	Owners string `toml:"owners"`
	// Labels, if set, are the labels (names or globs) an upload may
	// create; main is always allowed. An upload to another label that
	// does not exist yet is 404, as for an unknown channel.
	Labels []string `toml:"labels"`
}

// validatePolicy checks [policy].
func (c *Config) validatePolicy(add func(format string, args ...any)) {
	switch c.Policy.Owners {
	case owners.ModeConfig, owners.ModeFirstUpload:
	default:
		add("policy.owners %q: want %s or %s", c.Policy.Owners, owners.ModeConfig, owners.ModeFirstUpload)
	}
	if c.Policy.Labels != nil && len(c.Policy.Labels) == 0 {
		add("policy.labels is empty: no upload could go anywhere but main; leave it out to allow every label")
	}
	for _, l := range c.Policy.Labels {
		if err := owners.CheckPattern(l); err != nil {
			add("policy.labels: %v", err)
		}
	}
}

// checkPackages checks the packages key of a token or trusted publisher:
// exact conda names or globs, lowercase ASCII (see package owners).
func checkPackages(patterns []string) error {
	if patterns != nil && len(patterns) == 0 {
		return fmt.Errorf("packages is empty: it could publish nothing; leave it out to allow every name")
	}
	for _, p := range patterns {
		if err := owners.CheckPattern(p); err != nil {
			return fmt.Errorf("packages: %w", err)
		}
	}
	return nil
}
