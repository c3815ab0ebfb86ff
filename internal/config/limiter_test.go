package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/config"
)

// TestAuthFailureIPv6Prefix: the prefix IPv6 clients are counted by is a
// /64 unless set, and a length that is no IPv6 prefix, or one so short
// that it would lump unrelated networks together, is refused by name.
func TestAuthFailureIPv6Prefix(t *testing.T) {
	for _, tt := range []struct {
		line string
		want int
		err  string
	}{
		{"", 64, ""},
		{"auth_failure_ipv6_prefix = 56", 56, ""},
		{"auth_failure_ipv6_prefix = 128", 128, ""},
		{"auth_failure_ipv6_prefix = 0", 0, "auth_failure_ipv6_prefix 0"},
		{"auth_failure_ipv6_prefix = 8", 0, "auth_failure_ipv6_prefix 8"},
		{"auth_failure_ipv6_prefix = 129", 0, "auth_failure_ipv6_prefix 129"},
		{"auth_failure_ipv6_prefix = -64", 0, "auth_failure_ipv6_prefix -64"},
	} {
		t.Run(tt.line, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.toml")
			base, err := os.ReadFile("testdata/minimal.good.toml")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, append(base, "\n"+tt.line+"\n"...), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := config.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.err == "" && c.AuthFailureIPv6Prefix != tt.want:
				t.Errorf("prefix %d, want %d", c.AuthFailureIPv6Prefix, tt.want)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("err = %v, want one naming %q", err, tt.err)
			}
		})
	}
}
