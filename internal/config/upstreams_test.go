package config_test

import (
	"os"
	"path/filepath"
	"regexp"
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
		{"redirect url", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"noarch\"]\nredirect_hosts = [\"https://cdn\"]\n", `redirect_hosts: "https://cdn" must be a host name`},
		{"relative token", "[[upstreams]]\nname = \"x\"\nurl = \"https://h/c\"\nsubdirs = [\"noarch\"]\ntoken_file = \"tok\"\n", `"tok" must be an absolute path`},
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

const hash64 = "abababababababababababababababababababababababababababababababab"
