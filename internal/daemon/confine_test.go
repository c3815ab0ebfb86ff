package daemon

import (
	"slices"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/config"
)

// TestPolicyUpstreamPorts: Landlock lets the server connect to each
// upstream's port and to exactly the ports its redirect_hosts name (a
// bare host is 443, and also 80 for an http upstream); nothing more.
func TestPolicyUpstreamPorts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		upstreams []config.UpstreamConfig
		want      []uint16
	}{
		{"none", nil, nil},
		{"https, no redirects", []config.UpstreamConfig{{URL: "https://conda.anaconda.org/conda-forge"}}, []uint16{443}},
		{"a CDN on its own port", []config.UpstreamConfig{
			{URL: "https://up.example.org:8080/c", RedirectHosts: []string{"cdn.example.net:8443"}}}, []uint16{8080, 8443}},
		{"a bare CDN host", []config.UpstreamConfig{
			{URL: "https://up.example.org:8080/c", RedirectHosts: []string{"cdn.example.net"}}}, []uint16{443, 8080}},
		{"an http upstream", []config.UpstreamConfig{
			{URL: "http://up.example.org:8080/c", RedirectHosts: []string{"cdn.example.net", "[::1]:9443"}}}, []uint16{80, 443, 8080, 9443}},
		{"two upstreams", []config.UpstreamConfig{
			{URL: "https://a.example.org/c", RedirectHosts: []string{"cdn-a:7001"}},
			{URL: "http://b.example.org/c", RedirectHosts: []string{"cdn-b:7002", "cdn-b:7002"}}}, []uint16{80, 443, 7001, 7002}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			c.Upstreams = tc.upstreams
			d := &daemon{cfg: c, writeDir: t.TempDir()}
			p, err := d.policy()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.ConnectTCP, tc.want) {
				t.Errorf("connect to %v, want %v", p.ConnectTCP, tc.want)
			}
		})
	}
}

// TestUpstreamRedirectHosts: the proxy is given the host:port endpoints
// the sandbox opens, not the entries as written.
func TestUpstreamRedirectHosts(t *testing.T) {
	up, err := upstream(config.UpstreamConfig{Name: "cf", URL: "https://conda.anaconda.org/conda-forge",
		RedirectHosts: []string{"CDN.example.net", "cdn.example.net:8443", "[::1]:9443"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"[::1]:9443", "cdn.example.net:443", "cdn.example.net:8443"}; !slices.Equal(up.RedirectHosts, want) {
		t.Errorf("redirect hosts %q, want %q", up.RedirectHosts, want)
	}
}
