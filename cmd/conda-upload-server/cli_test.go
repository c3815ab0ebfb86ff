package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
)

// This file checks the output policy written at the top of output.go, for
// every command's error paths: results on stdout only, messages on stderr
// as "conda-upload-server: error|warning|hint: ...", no capital initial
// and no full stop, a hint for a wrong command line, 2 for a wrong command
// line and 1 for a failure.

// policyLine is a message line of the policy.
var policyLine = regexp.MustCompile(`^conda-upload-server: (error|warning|hint): (.+)$`)

// checkPolicy asserts that every line of stderr follows the policy, and
// returns the messages by kind.
func checkPolicy(t *testing.T, stderr string) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		m := policyLine.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("stderr line not in the policy's form: %q", line)
			continue
		}
		msg := m[2]
		if strings.HasSuffix(msg, ".") {
			t.Errorf("message ends with a full stop: %q", line)
		}
		first, size := utf8.DecodeRuneInString(msg)
		second, _ := utf8.DecodeRuneInString(msg[size:])
		if unicode.IsUpper(first) && unicode.IsLower(second) {
			t.Errorf("message starts with a capital: %q", line)
		}
		got[m[1]] = append(got[m[1]], msg)
	}
	return got
}

// TestCLIErrorPolicy runs each command's error paths in process.
func TestCLIErrorPolicy(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	several := write("several.toml", "port = 99999\nconda_exe = \"conda\"\n")
	badRoot := write("badroot.toml", fmt.Sprintf("write_dir = %q\ntoken_hash = %q\n[attestations]\ntrusted_root_file = %q\nchannel_url = \"https://conda.example.org/c\"\n",
		dir, auth.Hash(auth.DefaultSalt, "t"), write("trusted_root.json", `{"mediaType": "nonsense"}`)))
	missing := filepath.Join(dir, "missing.toml")
	tokenFile := write("token", testToken+"\n")
	noPEM := write("nopem.pem", "not a certificate\n")
	for _, tt := range []struct {
		name   string
		args   []string
		stdin  string
		code   int
		errors []string // each a substring of one error line, in order
		hint   string   // a substring of the hint; "" for no hint line
	}{
		{"serve: unknown flag", []string{"--nope"}, "", 2, []string{"flag provided but not defined: -nope"}, "run conda-upload-server -h"},
		{"serve: misspelt flag", []string{"--lisen", "127.0.0.1"}, "", 2, []string{"-lisen"}, "did you mean --listen?"},
		{"serve: swapped letters", []string{"--wirte_dir", dir}, "", 2, []string{"-wirte_dir"}, "did you mean --write_dir?"},
		{"serve: bad value", []string{"-p", "eighty"}, "", 2, []string{`invalid value "eighty" for flag -p`}, "run conda-upload-server -h"},
		{"serve: stray argument", []string{"-d", dir, "stray"}, "", 2, []string{`unexpected argument "stray"`}, "run conda-upload-server -h"},
		{"serve: missing config", []string{"--config", missing}, "", 1, []string{"no such file"}, ""},
		{"serve: several problems", []string{"--config", several}, "", 1, []string{"write_dir is not set", "port 99999 is out of range", "bad port", `conda_exe "conda" must be an absolute path`}, ""},
		{"dev: stray argument", []string{"--dev", "x"}, "", 2, []string{`unexpected argument "x"`}, "run conda-upload-server -h"},
		{"dev: missing config", []string{"--dev", "--config", missing}, "", 1, []string{"no such file"}, ""},
		{"unknown command", []string{"promote"}, "", 2, []string{`unknown command "promote"`}, "run conda-upload-server -h"},
		{"misspelt command", []string{"hash-tokne"}, "", 2, []string{`unknown command "hash-tokne"`}, "did you mean hash-token?"},
		{"hash-token: argument", []string{"hash-token", testToken}, "", 2, []string{"reads the token from standard input"}, "conda-upload-server hash-token < token-file"},
		{"hash-token: misspelt flag", []string{"hash-token", "--slat", "x"}, "t\n", 2, []string{"-slat"}, "did you mean --salt?"},
		{"hash-token: unknown flag", []string{"hash-token", "--name", "x"}, "t\n", 2, []string{"-name"}, "run conda-upload-server hash-token -h"},
		{"hash-token: no token", []string{"hash-token"}, "", 1, []string{"no token on standard input"}, "give the token on standard input"},
		{"hash-token: long token", []string{"hash-token"}, strings.Repeat("x", auth.MaxTokenLen+1), 1, []string{"token is longer than"}, ""},
		{"check-config: file as argument", []string{"check-config", several}, "", 2, []string{"unexpected argument"}, "--config " + several},
		{"check-config: unknown flag", []string{"check-config", "--conifg", several}, "", 2, []string{"-conifg"}, "did you mean --config?"},
		{"check-config: missing file", []string{"check-config", "--config", missing}, "", 1, []string{"no such file"}, ""},
		{"check-config: bad trusted root", []string{"check-config", "--config", badRoot}, "", 1, []string{"attestations.trusted_root_file: trusted root"}, ""},
		{"check-config: several problems", []string{"check-config", "--config", several}, "", 1, []string{"write_dir is not set", "port 99999 is out of range", "bad port", "must be an absolute path", "no token configured", "conda_exe: stat conda"}, ""},
		{"admin: no call", []string{"admin"}, "", 2, []string{"no call given"}, "the calls are list, copy, move, yank, unyank, delete, retention, quotas, patch, proxy and owners"},
		{"admin: unknown call", []string{"admin", "promote", "main"}, "", 2, []string{`unknown call "promote"`}, "the calls are"},
		{"admin: wrong arity", []string{"admin", "copy", "main", "noarch", "x-1-0.conda"}, "", 2, []string{"copy takes LABEL SUBDIR FILENAME TO"}, "run conda-upload-server admin -h"},
		{"admin: patch without a sub-call", []string{"admin", "patch"}, "", 2, []string{"patch takes get, set or delete"}, "run conda-upload-server admin -h"},
		{"admin: unknown patch sub-call", []string{"admin", "patch", "put", "main", "noarch"}, "", 2, []string{`patch takes get, set or delete, not "put"`}, "run conda-upload-server admin -h"},
		{"admin: misspelt flag", []string{"admin", "--cacret", noPEM, "list", "main", "noarch"}, "", 2, []string{"-cacret"}, "did you mean --cacert?"},
		{"admin: bad url", []string{"admin", "--url", "ftp://x", "list", "main", "noarch"}, "t\n", 2, []string{`--url "ftp://x"`}, "run conda-upload-server admin -h"},
		{"admin: no token", []string{"admin", "list", "main", "noarch"}, "", 1, []string{"no token"}, "--token-file FILE"},
		{"admin: missing token file", []string{"admin", "--token-file", missing, "list", "main", "noarch"}, "", 1, []string{"token file: open " + missing + ": no such file"}, ""},
		{"admin: missing patch file", []string{"admin", "--token-file", tokenFile, "patch", "set", "main", "noarch", missing}, "", 1, []string{"read patch"}, ""},
		{"admin: no certificate in cacert", []string{"admin", "--token-file", tokenFile, "--cacert", noPEM, "list", "main", "noarch"}, "", 1, []string{"no PEM certificate"}, ""},
		{"admin: server down", []string{"admin", "--token-file", tokenFile, "--url", fmt.Sprintf("https://127.0.0.1:%d/", freePort(t)), "list", "main", "noarch"}, "", 1, []string{"connection refused"}, ""},
		{"reload: no pid", []string{"reload"}, "", 2, []string{"reload takes one PID"}, "run conda-upload-server reload -h"},
		{"reload: bad pid", []string{"reload", "x"}, "", 2, []string{`bad pid "x"`}, "run conda-upload-server reload -h"},
		{"reload: pid 1", []string{"reload", "1"}, "", 2, []string{`bad pid "1"`}, "run conda-upload-server reload -h"},
		{"reload: no such process", []string{"reload", "2147483647"}, "", 1, []string{"reload 2147483647: no such process"}, ""},
		{"version: argument", []string{"version", "x"}, "", 2, []string{"version takes no arguments"}, "run conda-upload-server version -h"},
		{"version: unknown flag", []string{"version", "--short"}, "", 2, []string{"-short"}, "run conda-upload-server version -h"},
		{"help: unknown command", []string{"help", "uplaod"}, "", 2, []string{`unknown command "uplaod"`}, "run conda-upload-server -h"},
		{"help: two commands", []string{"help", "admin", "reload"}, "", 2, []string{"help takes at most one command"}, "run conda-upload-server help -h"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, strings.NewReader(tt.stdin), &out, &errb)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, errb.String())
			}
			if out.Len() > 0 {
				t.Errorf("stdout on error: %q", out.String())
			}
			got := checkPolicy(t, errb.String())
			if len(got["error"]) != len(tt.errors) {
				t.Errorf("error lines %q; want %d, saying %q", got["error"], len(tt.errors), tt.errors)
			} else {
				for i, want := range tt.errors {
					if !strings.Contains(got["error"][i], want) {
						t.Errorf("error line %q lacks %q", got["error"][i], want)
					}
				}
			}
			switch {
			case tt.hint == "" && len(got["hint"]) > 0:
				t.Errorf("unexpected hint %q", got["hint"])
			case tt.hint != "" && (len(got["hint"]) != 1 || !strings.Contains(got["hint"][0], tt.hint)):
				t.Errorf("hints %q; want one saying %q", got["hint"], tt.hint)
			}
		})
	}
}

// TestCLIAdminRefusals checks that the server's refusals, and a server
// that is not trusted, come out in the policy's form.
func TestCLIAdminRefusals(t *testing.T) {
	p, cert, _, _ := startLabelled(t)
	other, _, _, _ := certPair(t, shared(t), "other-")
	for _, tt := range []struct {
		name, ca, token string
		want, hint      string
	}{
		{"untrusted certificate", other, operatorToken, "certificate", "trust the server's certificate with --cacert FILE"},
		{"unknown token", cert, "wrong", ": 401: ", ""},
		{"token without the scope", cert, ciToken, ": 403: ", ""},
		{"unknown label", cert, operatorToken, ": 404: ", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"list", "main", "noarch"}
			if tt.name == "unknown label" {
				args[1] = "nope"
			}
			code, stdout, stderr := adminCLI(t, p, tt.ca, tt.token, args...)
			if code != 1 || stdout != "" {
				t.Errorf("exit %d, stdout %q; want 1 and nothing", code, stdout)
			}
			got := checkPolicy(t, stderr)
			if len(got["error"]) != 1 || !strings.Contains(got["error"][0], tt.want) {
				t.Errorf("errors %q; want one saying %q", got["error"], tt.want)
			}
			if (tt.hint == "") != (len(got["hint"]) == 0) || (tt.hint != "" && !strings.Contains(got["hint"][0], tt.hint)) {
				t.Errorf("hints %q; want %q", got["hint"], tt.hint)
			}
		})
	}
}

// TestCLIWarnings checks that check-config's warnings go to stderr in the
// policy's form, and its report alone to stdout. The test certificate
// expires in a day, which check-config warns of.
func TestCLIWarnings(t *testing.T) {
	dir := t.TempDir()
	cert, key, _, _ := certPair(t, dir, "")
	cfg := filepath.Join(dir, "c.toml")
	body := fmt.Sprintf("write_dir = %q\ncertfile = %q\nkeyfile = %q\n[[tokens]]\nname = \"old\"\nhash = %q\nexpires = 2020-01-01T00:00:00Z\n",
		dir, cert, key, auth.Hash(auth.DefaultSalt, "t"))
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"check-config", "--config", cfg}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	got := checkPolicy(t, errb.String())
	want := []string{`token "old" expired on 2020-01-01`, "certificate expires in less than 30 days"}
	if fmt.Sprint(got["warning"]) != fmt.Sprint(want) || len(got) != 1 {
		t.Errorf("stderr %q; want the warnings %q only", errb.String(), want)
	}
	if strings.Contains(out.String(), "warning") || !strings.HasSuffix(out.String(), cfg+": ok\n") {
		t.Errorf("stdout %q; want the report only", out.String())
	}
}

// TestUsage checks that usage lists every command with a line that says
// what it does, and that each command's -h prints its own usage to
// stdout and exits 0, as help COMMAND does.
func TestUsage(t *testing.T) {
	runOK := func(t *testing.T, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, strings.NewReader(""), &out, &errb); code != 0 || errb.Len() > 0 {
			t.Fatalf("%q: exit %d, stderr %q", args, code, errb.String())
		}
		return out.String()
	}
	top := runOK(t, "-h")
	if runOK(t, "--help") != top || runOK(t, "help") != top || runOK(t, "--dev", "-h") != top {
		t.Error("-h, --help, help and --dev -h differ")
	}
	listed := regexp.MustCompile(`(?m)^  ([a-z][a-z-]*) +([a-z].{10,})$`).FindAllStringSubmatch(top, -1)
	var names []string
	for _, m := range listed {
		names = append(names, m[1])
	}
	want := []string{"hash-token", "check-config", "admin", "reload", "version", "help"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("usage lists %q; want %q\n%s", names, want, top)
	}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			own := runOK(t, name, "-h")
			if !strings.HasPrefix(own, "usage: conda-upload-server "+name) {
				t.Errorf("%s -h:\n%s", name, own)
			}
			if runOK(t, "help", name) != own {
				t.Errorf("help %s differs from %s -h", name, name)
			}
		})
	}
	adminHelp := runOK(t, "admin", "-h")
	for _, flag := range []string{"url", "token-file", "cacert", "timeout"} {
		if !strings.Contains(adminHelp, "\n  -"+flag+" ") {
			t.Errorf("admin -h does not show --%s:\n%s", flag, adminHelp)
		}
	}
}
