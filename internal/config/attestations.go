package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// AttestationsConfig is [attestations]: what the server does with the
// CEP 50 attestations (Sigstore bundles of CEP 27 publish statements)
// that uploads carry. Verification is offline, against the trusted root
// file alone (internal/attest).
type AttestationsConfig struct {
	// TrustedRootFile is a Sigstore trusted_root.json: the Fulcio CAs,
	// Rekor logs, CT logs and timestamping authorities to trust. The
	// operator keeps it current; nothing is fetched.
	TrustedRootFile string `toml:"trusted_root_file"`
	// Verify is "off" (attestations are dropped), "store" (kept as sent,
	// unverified) or "verify"; empty means verify where a trusted root is
	// configured, else store.
	Verify string `toml:"verify"`
	// Require refuses every upload without a valid attestation;
	// RequireLabels only those to these labels. A trusted publisher's
	// require_attestation does the same for its uploads.
	Require       bool     `toml:"require"`
	RequireLabels []string `toml:"require_labels"`
	// ChannelURL is the channel's public URL, which a statement's
	// targetChannel must equal: this URL for main, and
	// <channel_url>/label/<label> for a label.
	ChannelURL string `toml:"channel_url"`
}

// SignerConfig is one of a token's attestation_identities: a signing
// certificate's URI SAN and its OIDC issuer.
type SignerConfig struct {
	SAN    string `toml:"san"`
	Issuer string `toml:"issuer"`
}

// The attestation modes.
const (
	AttestOff    = "off"
	AttestStore  = "store"
	AttestVerify = "verify"
)

// AttestMode returns the mode in force: Verify, or its default.
func (c *Config) AttestMode() string {
	switch {
	case c.Attestations.Verify != "":
		return c.Attestations.Verify
	case c.Attestations.TrustedRootFile != "":
		return AttestVerify
	}
	return AttestStore
}

// validateAttestations checks [attestations] and the attestation keys of
// publishers and tokens.
func (c *Config) validateAttestations(add func(format string, args ...any)) {
	a := c.Attestations
	mode := c.AttestMode()
	if !slices.Contains([]string{AttestOff, AttestStore, AttestVerify}, mode) {
		add("attestations.verify %q: want off, store or verify", a.Verify)
		return
	}
	if a.TrustedRootFile != "" && !filepath.IsAbs(a.TrustedRootFile) {
		add("attestations.trusted_root_file %q must be an absolute path", a.TrustedRootFile)
	}
	for _, l := range a.RequireLabels {
		if !store.ValidLabel(l) {
			add("attestations.require_labels: %q is not a label name", l)
		}
	}
	required := a.Require || len(a.RequireLabels) > 0 || slices.ContainsFunc(c.TrustedPublishers, func(p TrustedPublisherConfig) bool { return p.RequireAttestation })
	if mode != AttestVerify {
		if required {
			add("attestations: require, require_labels and require_attestation need verify = \"verify\" and a trusted_root_file")
		}
		return
	}
	if a.TrustedRootFile == "" {
		add("attestations.verify = \"verify\" needs trusted_root_file")
	}
	if u, err := url.Parse(a.ChannelURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(a.ChannelURL, "/") {
		add("attestations.channel_url %q: want the channel's public http(s) URL, without a trailing slash (what targetChannel must say)", a.ChannelURL)
	}
}

// checkSigners validates a token's attestation_identities.
func checkSigners(signers []SignerConfig) error {
	for _, s := range signers {
		for key, v := range map[string]string{"san": s.SAN, "issuer": s.Issuer} {
			if u, err := url.Parse(v); err != nil || u.Scheme != "https" || u.Host == "" {
				return fmt.Errorf("attestation_identities: %s %q must be an https URL", key, v)
			}
		}
	}
	return nil
}

func signers(in []SignerConfig) []auth.Signer {
	var out []auth.Signer
	for _, s := range in {
		out = append(out, auth.Signer{SAN: s.SAN, Issuer: s.Issuer})
	}
	return out
}
