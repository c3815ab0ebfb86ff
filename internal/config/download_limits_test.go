package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/config"
)

// TestDownloadLimits: the bounds on streams, downloads in flight and the
// send timeout load from TOML, default to finite values, and are refused
// out of range, each error naming its key.
func TestDownloadLimits(t *testing.T) {
	d := config.Default()
	if d.MaxStreamsPerConnection != 100 || d.Download.MaxConcurrent != 256 || d.Download.MaxPerConnection != 64 || d.Download.SendTimeout.D().Seconds() != 30 {
		t.Errorf("defaults: %d streams, %d/%d downloads, %s", d.MaxStreamsPerConnection, d.Download.MaxConcurrent, d.Download.MaxPerConnection, d.Download.SendTimeout.D())
	}
	for _, c := range []struct{ toml, want string }{
		{"max_streams_per_connection = 250\n[download]\nmax_concurrent = 8\nmax_per_connection = 8\nsend_timeout = \"1m\"\n", ""},
		{"max_streams_per_connection = 0\n", "max_streams_per_connection 0: want 1 to 1000"},
		{"max_streams_per_connection = 5000\n", "max_streams_per_connection 5000"},
		{"[download]\nmax_concurrent = 0\n", "download.max_concurrent must be at least 1"},
		{"[download]\nmax_per_connection = 0\n", "download.max_per_connection 0"},
		{"[download]\nmax_concurrent = 10\nmax_per_connection = 11\n", "download.max_per_connection 11: want 1 to download.max_concurrent (10)"},
		{"[download]\nsend_timeout = \"0s\"\n", "download.send_timeout 0s: want 1s to 10m"},
		{"[download]\nsend_timeout = \"1h\"\n", "download.send_timeout 1h0m0s"},
	} {
		p := filepath.Join(t.TempDir(), "c.toml")
		os.WriteFile(p, []byte("write_dir = \"/srv/channel\"\n"+c.toml), 0o644)
		cfg, err := config.Load(p)
		if err == nil {
			err = cfg.Validate()
		}
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.toml, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: %v, want %q", c.toml, err, c.want)
		}
	}
}
