package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/attest/attesttest"
	"github.com/conda-upload-server/conda-upload-server/internal/config"
)

// TestAttestations: the policy the server gets from [attestations]: the
// trusted root is read at start (and Landlock lets it be read), a bad one
// stops the daemon, and require_attestation names its publishers.
func TestAttestations(t *testing.T) {
	root := attesttest.New(t).TrustedRoot(t, true)
	c := config.Default()
	c.Attestations = config.AttestationsConfig{TrustedRootFile: root, ChannelURL: "https://conda.example.org/c", RequireLabels: []string{"main"}}
	c.TrustedPublishers = []config.TrustedPublisherConfig{{Name: "a"}, {Name: "b", RequireAttestation: true}}
	a, err := Attestations(c)
	if err != nil {
		t.Fatal(err)
	}
	if a.Mode != "verify" || a.Verifier == nil || a.ChannelURL != c.Attestations.ChannelURL ||
		!slices.Equal(a.RequireLabels, []string{"main"}) || !slices.Equal(a.RequirePublishers, []string{"b"}) {
		t.Errorf("policy %+v", a)
	}
	d := &daemon{cfg: c, writeDir: t.TempDir()}
	p, err := d.policy()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(p.ReadFiles, root) {
		t.Errorf("Landlock may not read the trusted root: %v", p.ReadFiles)
	}

	bad := filepath.Join(t.TempDir(), "trusted_root.json")
	os.WriteFile(bad, []byte(`{"mediaType": "nonsense"}`), 0o644)
	c.Attestations.TrustedRootFile = bad
	if _, err := Attestations(c); err == nil || !strings.Contains(err.Error(), "trusted_root_file") {
		t.Errorf("a bad trusted root: %v", err)
	}
	c.Attestations = config.AttestationsConfig{}
	if a, err := Attestations(c); err != nil || a.Mode != "store" || a.Verifier != nil {
		t.Errorf("no trusted root: %+v, %v", a, err)
	}
}
