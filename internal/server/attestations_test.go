package server

import (
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/attest"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
)

// TestJobSigners: a GitLab job signs as https:// + ci_config_ref_uri (the
// claim starts with the host), a GitHub job as https://github.com/ +
// job_workflow_ref, each from its publisher's issuer; a job with neither
// claim signs as nobody.
func TestJobSigners(t *testing.T) {
	tests := []struct {
		id   trusted.Identity
		want []attest.Identity
	}{
		{trusted.Identity{Issuer: "https://gitlab.example.org", CIConfigRefURI: "gitlab.example.org/g/p//.gitlab-ci.yml@refs/heads/main"},
			[]attest.Identity{{SAN: "https://gitlab.example.org/g/p//.gitlab-ci.yml@refs/heads/main", Issuer: "https://gitlab.example.org"}}},
		{trusted.Identity{Issuer: "https://token.actions.githubusercontent.com", JobWorkflowRef: "o/r/.github/workflows/w.yml@refs/heads/main"},
			[]attest.Identity{{SAN: "https://github.com/o/r/.github/workflows/w.yml@refs/heads/main", Issuer: "https://token.actions.githubusercontent.com"}}},
		{trusted.Identity{Issuer: "https://token.actions.githubusercontent.com"}, nil},
	}
	for _, tt := range tests {
		got := jobSigners(tt.id)
		if len(got) != len(tt.want) || len(got) == 1 && got[0] != tt.want[0] {
			t.Errorf("jobSigners(%+v) = %+v, want %+v", tt.id, got, tt.want)
		}
	}
}
