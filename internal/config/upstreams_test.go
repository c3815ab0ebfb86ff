package config_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/config"
)

func TestUpstreams(t *testing.T) {
	const head = "write_dir = \"/srv/conda\"\ntoken_hash = \"" + hash64 + "\"\n"
	good := `[[upstreams]]
name = "conda-forge"
url = "https://conda.anaconda.org/conda-forge"
subdirs = ["linux-64", "noarch"]
include = ["num*"]
redirect_hosts = ["cdn.example.org"]
`
	cases := []struct{ name, toml, want string }{
		{"good", good, ""},
		{"duplicate name", good + good, `upstreams\[1\]\.name "conda-forge": want a unique name`},
		{"bad url", "[[upstreams]]\nname = \"x\"\nurl = \"ftp://h/c\"\nsubdirs = [\"noarch\"]\n", `upstreams\[0\]\.url "ftp://h/c"`},
		{"url with user", "[[upstreams]]\nname = \"x\"\nurl = \"https://u:p@h/c\"\nsubdirs = [\"noarch\"]\n", `upstreams\[0\]\.url`},
		{"no subdirs", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\n", `upstreams\[0\]\.subdirs is empty`},
		{"bad subdir", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"linux-fake\"]\n", `"linux-fake" is not a conda platform subdir`},
		{"bad glob", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"noarch\"]\ninclude = [\"[\"]\n", `glob "\[" is malformed`},
		{"mirror mode", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"noarch\"]\nmode = \"mirror\"\nsync_interval = \"6h\"\n", ""},
		{"unknown mode", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"noarch\"]\nmode = \"push\"\n", `mode "push": want "proxy"`},
		{"sync without mirror", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"noarch\"]\nsync_interval = \"6h\"\n", `sync_interval: at least 1m, and only with mode = "mirror"`},
		{"sync too often", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"noarch\"]\nmode = \"mirror\"\nsync_interval = \"5s\"\n", `sync_interval: at least 1m`},
		{"redirect hosts with ports", redirect(`"cdn.example.net:8443", "[::1]:9443", "[2001:db8::1]", "10.0.0.1:80"`), ""},
		{"redirect url", redirect(`"https://cdn"`), `redirect_hosts: "https://cdn": want a host or host:port, without a scheme or a path`},
		{"redirect path", redirect(`"cdn.example.net/pkgs"`), `redirect_hosts: "cdn.example.net/pkgs": want a host or host:port, without a scheme`},
		{"redirect user", redirect(`"u@cdn.example.net"`), `redirect_hosts: "u@cdn.example.net": want a host`},
		{"redirect empty", redirect(`""`), `redirect_hosts: "": want a host`},
		{"redirect port zero", redirect(`"cdn:0"`), `redirect_hosts: "cdn:0": port "0" is not a number from 1 to 65535`},
		{"redirect port too large", redirect(`"cdn:65536"`), `port "65536" is not a number from 1 to 65535`},
		{"redirect port by name", redirect(`"cdn:https"`), `port "https" is not a number`},
		{"redirect port empty", redirect(`"cdn:"`), `port "" is not a number`},
		{"redirect port signed", redirect(`"cdn:+443"`), `port "\+443" is not a number`},
		{"redirect bare IPv6", redirect(`"::1"`), `redirect_hosts: "::1": want a host or host:port, without a scheme or a path \(an IPv6 address in brackets\)`},
		{"redirect bracketed name", redirect(`"[cdn]:8443"`), `redirect_hosts: "\[cdn\]:8443": want a host`},
		{"relative token", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"noarch\"]\ntoken_file = \"tok\"\n", `"tok" must be an absolute path`},
		{"token and user", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"noarch\"]\ntoken_file = \"/t\"\nusername = \"u\"\n", `token_file and username are both set`},
		{"password alone", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"noarch\"]\npassword_file = \"/p\"\n", `password_file is set but username is not`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "c.toml")
			if err := os.WriteFile(f, []byte(head+tc.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := config.Load(f)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Fatalf("err = %v, want match for %q", err, tc.want)
			}
		})
	}
}

func TestUpstreamCredentials(t *testing.T) {
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "proxy-cf-token"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := config.UpstreamConfig{Name: "cf"}.Credentials(creds)
	if err != nil || got.Token != "s3cret" {
		t.Fatalf("token from the systemd credential: %+v, %v", got, err)
	}
	got, err = config.UpstreamConfig{Name: "other"}.Credentials(creds)
	if err != nil || got != (config.UpstreamCredentials{}) {
		t.Fatalf("no credentials: %+v, %v", got, err)
	}
	if _, err := (config.UpstreamConfig{Name: "cf", Username: "ci"}).Credentials(creds); err == nil {
		t.Fatal("a username without a password was accepted")
	}
	pw := filepath.Join(creds, "pw")
	if err := os.WriteFile(pw, []byte("hunter2"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = config.UpstreamConfig{Name: "cf", Username: "ci", PasswordFile: pw}.Credentials("")
	if err != nil || got.Username != "ci" || got.Password != "hunter2" || got.Token != "" {
		t.Fatalf("basic credentials: %+v, %v", got, err)
	}
}

// redirect is an upstream whose redirect_hosts are list.
func redirect(list string) string {
	return "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"noarch\"]\nredirect_hosts = [" + list + "]\n"
}

// TestRedirectEndpoints: each entry's own port, or for a bare host 443,
// and 80 as well for an http upstream.
func TestRedirectEndpoints(t *testing.T) {
	for _, tc := range []struct {
		url   string
		hosts []string
		want  []string
	}{
		{"https://h/c", nil, nil},
		{"https://h/c", []string{"CDN.example.net"}, []string{"cdn.example.net:443"}},
		{"http://h/c", []string{"cdn.example.net"}, []string{"cdn.example.net:443", "cdn.example.net:80"}},
		{"https://h/c", []string{"cdn.example.net:8443", "cdn.example.net:8443", "[::1]:9443", "[::1]", "10.0.0.1:80"},
			[]string{"10.0.0.1:80", "[::1]:443", "[::1]:9443", "cdn.example.net:8443"}},
		{"https://h/c", []string{"https://cdn", "cdn:0", "ok:1"}, []string{"ok:1"}},
	} {
		got := config.UpstreamConfig{URL: tc.url, RedirectHosts: tc.hosts}.RedirectEndpoints()
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s %q: %q, want %q", tc.url, tc.hosts, got, tc.want)
		}
	}
}

const hash64 = "abababababababababababababababababababababababababababababababab"
