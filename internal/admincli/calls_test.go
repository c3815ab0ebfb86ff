package admincli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParse checks each call's request, and the refusals of a wrong
// command line.
func TestParse(t *testing.T) {
	for _, tt := range []struct {
		args               string
		method, path, body string
		bodyFile, err      string
		usage, hint        bool
	}{
		{args: "list main linux-64", method: "GET", path: "/api/v1/packages/main/linux-64"},
		{args: "owners list", method: "GET", path: "/api/v1/owners"},
		{args: "owners list my-pkg", method: "GET", path: "/api/v1/owners/my-pkg"},
		{args: "owners transfer my-pkg oidc:team-b", method: "POST", path: "/api/v1/owners/my-pkg/transfer", body: `{"owner":"oidc:team-b"}`},
		{args: "owners remove my-pkg team-a", method: "POST", path: "/api/v1/owners/my-pkg/remove", body: `{"owner":"team-a"}`},
		{args: "copy dev noarch x-1-0.conda main", method: "POST", path: "/api/v1/packages/dev/noarch/x-1-0.conda/copy", body: `{"to":"main"}`},
		{args: "move dev noarch x-1-0.conda main", method: "POST", path: "/api/v1/packages/dev/noarch/x-1-0.conda/move", body: `{"to":"main"}`},
		{args: "yank main noarch x-1-0.conda", method: "POST", path: "/api/v1/packages/main/noarch/x-1-0.conda/yank", body: `{"reason":""}`},
		{args: "yank main noarch x-1-0.conda broken", method: "POST", path: "/api/v1/packages/main/noarch/x-1-0.conda/yank", body: `{"reason":"broken"}`},
		{args: "unyank main noarch x-1-0.conda", method: "POST", path: "/api/v1/packages/main/noarch/x-1-0.conda/unyank"},
		{args: "delete main noarch x?1.conda", method: "DELETE", path: "/api/v1/packages/main/noarch/x%3F1.conda"},
		{args: "patch get main linux-64", method: "GET", path: "/api/v1/patches/main/linux-64"},
		{args: "patch set main linux-64 p.json", method: "PUT", path: "/api/v1/patches/main/linux-64", bodyFile: "p.json"},
		{args: "patch delete main linux-64", method: "DELETE", path: "/api/v1/patches/main/linux-64"},
		{args: "proxy status", method: "GET", path: "/api/v1/proxy"},
		{args: "proxy purge conda-forge", method: "POST", path: "/api/v1/proxy/conda-forge/purge"},
		{args: "proxy purge", err: "proxy purge takes NAME", usage: true},
		{args: "proxy", err: "proxy takes status or purge", usage: true},
		{args: "retention --dry-run", method: "GET", path: "/api/v1/retention"},
		{args: "retention", method: "POST", path: "/api/v1/retention"},
		{args: "quotas", method: "GET", path: "/api/v1/quotas"},
		{args: "retention --dryrun", err: `retention takes [--dry-run], not "--dryrun"`, usage: true},
		{args: "retention --dry-run now", err: "retention takes [--dry-run]", usage: true},
		{args: "", err: "no call given", usage: true, hint: true},
		{args: "promote main", err: `unknown call "promote"`, usage: true, hint: true},
		{args: "list main", err: "list takes LABEL SUBDIR", usage: true},
		{args: "yank main noarch", err: "yank takes LABEL SUBDIR FILENAME [REASON]", usage: true},
		{args: "yank main noarch x-1-0.conda why not", err: "yank takes LABEL SUBDIR FILENAME [REASON]", usage: true},
		{args: "copy main noarch x-1-0.conda", err: "copy takes LABEL SUBDIR FILENAME TO", usage: true},
		{args: "patch", err: "patch takes get, set or delete", usage: true},
		{args: "patch put main noarch", err: `patch takes get, set or delete, not "put"`, usage: true},
		{args: "patch set main noarch", err: "patch set takes LABEL SUBDIR FILE", usage: true},
	} {
		t.Run(tt.args, func(t *testing.T) {
			req, err := parse(strings.Fields(tt.args))
			if tt.err != "" {
				var e *Error
				if !errors.As(err, &e) || e.Msg != tt.err || e.Usage != tt.usage || (e.Hint != "") != tt.hint {
					t.Fatalf("error %#v; want %q, usage %v, a hint %v", err, tt.err, tt.usage, tt.hint)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.method != tt.method || req.path != tt.path || string(req.body) != tt.body || req.bodyFile != tt.bodyFile {
				t.Errorf("got %s %s %q (file %q); want %s %s %q (file %q)", req.method, req.path, req.body, req.bodyFile, tt.method, tt.path, tt.body, tt.bodyFile)
			}
		})
	}
}

// TestUsageListsCalls checks that the help shows every call with its
// arguments.
func TestUsageListsCalls(t *testing.T) {
	u := Usage()
	for _, line := range []string{
		"list LABEL SUBDIR", "copy LABEL SUBDIR FILENAME TO", "move LABEL SUBDIR FILENAME TO",
		"yank LABEL SUBDIR FILENAME [REASON]", "unyank LABEL SUBDIR FILENAME", "delete LABEL SUBDIR FILENAME",
		"patch get LABEL SUBDIR", "patch set LABEL SUBDIR FILE", "patch delete LABEL SUBDIR",
		"proxy status", "proxy purge NAME",
		"owners list [PACKAGE]", "owners add PACKAGE OWNER", "owners transfer PACKAGE OWNER",
	} {
		found := false
		for _, l := range strings.Split(u, "\n") {
			found = found || strings.HasPrefix(strings.Join(strings.Fields(l), " "), line+" ")
		}
		if !found {
			t.Errorf("usage lacks %q:\n%s", line, u)
		}
	}
}

// TestLoad checks that patch set reads its body from the file, and says
// so when it cannot.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	patch := filepath.Join(dir, "p.json")
	if err := os.WriteFile(patch, []byte(`{"packages":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	req := request{bodyFile: patch}
	if err := req.load(); err != nil || string(req.body) != `{"packages":{}}` {
		t.Errorf("body %q, %v", req.body, err)
	}
	req = request{bodyFile: filepath.Join(dir, "gone.json")}
	var e *Error
	if err := req.load(); !errors.As(err, &e) || e.Usage || !strings.HasPrefix(e.Msg, "read patch: open "+req.bodyFile) {
		t.Errorf("error %#v", err)
	}
}
