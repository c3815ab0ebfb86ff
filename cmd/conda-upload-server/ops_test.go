package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
)

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue finds one sample in Prometheus text output.
func metricValue(text, sample string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, sample+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, sample)), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// inFlight reads the uploads in flight from the server's /metrics, which
// loopback may read by default.
func inFlight(t *testing.T, c *http.Client, url string) float64 {
	t.Helper()
	_, text := get(t, c, url+"metrics")
	n, ok := metricValue(text, "conda_upload_in_flight")
	if !ok {
		t.Fatalf("no conda_upload_in_flight in /metrics:\n%s", text)
	}
	return n
}

// TestMetricsAndReadiness checks /metrics after real uploads, who may read
// it, the separate metrics listener, and /readyz.
func TestMetricsAndReadiness(t *testing.T) {
	mport := freePort(t)
	p, root := startWith(t, fmt.Sprintf("[metrics]\nlisten = \"127.0.0.1:%d\"\n", mport))
	p.upload(t, testToken, corpusFile("conda/sample_noarch_python-1.0-py_0.conda"))
	p.upload(t, "wrong", corpusFile("conda/sample_noarch_python-1.0-py_0.conda"))
	p.upload(t, testToken, corpusFile("../bad-pkgs/conda/arch-package-1.0-0.conda"))

	code, text := get(t, p.client, p.url+"metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, text)
	}
	for sample, want := range map[string]float64{
		`conda_upload_requests_total{code="201",reason="created"}`:         1,
		`conda_upload_requests_total{code="401",reason="unauthorized"}`:    1,
		`conda_upload_requests_total{code="400",reason="invalid_package"}`: 1,
		`conda_upload_auth_failures_total`:                                 1,
		`conda_upload_in_flight`:                                           0,
		`conda_upload_request_duration_seconds_count`:                      3,
	} {
		if got, ok := metricValue(text, sample); !ok || got != want {
			t.Errorf("%s = %v (found %v), want %v", sample, got, ok, want)
		}
	}
	for _, sample := range []string{`conda_upload_index_runs_total{indexer="builtin"}`, `conda_upload_received_bytes_total`, `conda_upload_index_duration_seconds_count{indexer="builtin"}`} {
		if v, ok := metricValue(text, sample); !ok || v <= 0 {
			t.Errorf("%s = %v, %v", sample, v, ok)
		}
	}
	if !regexp.MustCompile(`conda_upload_build_info\{goversion="go1\.[^"]+",revision="[^"]*",version="[^"]+"\} 1`).MatchString(text) {
		t.Error("no build info")
	}
	exp, ok := metricValue(text, "conda_upload_tls_certificate_expiry_timestamp_seconds")
	if !ok || time.Until(time.Unix(int64(exp), 0)) < 20*time.Hour {
		t.Errorf("certificate expiry %v", exp)
	}
	if strings.Contains(text, "token=") || strings.Contains(text, root) {
		t.Error("metrics leak token names or paths")
	}
	code, text2 := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	if code != 200 || !strings.Contains(text2, "conda_upload_requests_total") {
		t.Errorf("metrics listener: %d", code)
	}

	// Readiness follows the channel's writability.
	if code, body := get(t, p.client, p.url+"readyz"); code != 200 {
		t.Errorf("/readyz: %d %s", code, body)
	}
	os.Chmod(filepath.Join(root, ".incoming"), 0o500)
	code, body := get(t, p.client, p.url+"readyz")
	os.Chmod(filepath.Join(root, ".incoming"), 0o700)
	if code != 503 || !strings.Contains(body, "not ready") {
		t.Errorf("/readyz with an unwritable channel: %d %s", code, body)
	}
	if code, _ := get(t, p.client, p.url+"healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
}

// TestMetricsAccess: a client outside metrics.allow gets 403, and token
// names appear only when asked for.
func TestMetricsAccess(t *testing.T) {
	p, _ := startWith(t, "[metrics]\nallow = [\"192.0.2.0/24\"]\n")
	if code, _ := get(t, p.client, p.url+"metrics"); code != 403 {
		t.Errorf("loopback outside allow: %d", code)
	}
	p, _ = startWith(t, "[metrics]\ntoken_names = true\n")
	p.upload(t, testToken, corpusFile("conda/sample_noarch_python-1.0-py_0.conda"))
	if _, text := get(t, p.client, p.url+"metrics"); !strings.Contains(text, `token="default"`) {
		t.Error("token_names = true but no token label")
	}
}

// TestAuditLog checks one durable JSON line per attempt, without the
// token, and that copytruncate rotation works.
func TestAuditLog(t *testing.T) {
	logDir := serviceOwned(t, filepath.Join(shared(t), "log"))
	file := filepath.Join(logDir, "audit.jsonl")
	p, _ := startWith(t, fmt.Sprintf("[audit]\nfile = %q\n", file))
	pkg := corpusFile("conda/sample_noarch_python-1.0-py_0.conda")
	p.upload(t, testToken, pkg)
	p.upload(t, testToken, pkg)
	p.upload(t, "nope", pkg)
	type rec struct {
		Remote, Token, Filename, Subdir, SHA256, Result string
		Status                                          int
		Size                                            int64
	}
	read := func() []rec {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(testToken)) {
			t.Error("token in the audit log")
		}
		var out []rec
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var r rec
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			out = append(out, r)
		}
		return out
	}
	recs := read()
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3: %+v", len(recs), recs)
	}
	want := []struct {
		status int
		result string
	}{{201, "created"}, {200, "identical"}, {401, "unauthorized"}}
	for i, w := range want {
		r := recs[i]
		if r.Status != w.status || r.Result != w.result || !strings.HasPrefix(r.Remote, "127.0.0.1:") {
			t.Errorf("record %d: %+v", i, r)
		}
	}
	if r := recs[0]; r.Token != "default" || r.Filename != "sample_noarch_python-1.0-py_0.conda" || r.Subdir != "noarch" || r.Size != 4241 || r.SHA256 != sha256File(t, pkg) {
		t.Errorf("record fields: %+v", r)
	}
	// logrotate copytruncate: new records start the file afresh.
	if err := os.Truncate(file, 0); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	if !p.logged("tokens reloaded") { // the audit log is reopened next
		t.Fatal("no reload after SIGHUP")
	}
	p.upload(t, "nope", pkg)
	if recs := read(); len(recs) != 1 || recs[0].Status != 401 {
		t.Errorf("after copytruncate: %+v", recs)
	}
}

// TestTokenScopesAndRotation: a token limited to noarch cannot upload to
// linux-64 (403); an expired one gets 403; tokens_file is re-read on
// SIGHUP without dropping the server, and a broken file keeps the old
// tokens.
func TestTokenScopesAndRotation(t *testing.T) {
	dir := serviceOwned(t, shared(t))
	tokensFile := filepath.Join(dir, "tokens.toml")
	writeTokens := func(body string) {
		tmp := tokensFile + ".new"
		os.WriteFile(tmp, []byte(body), 0o644)
		os.Rename(tmp, tokensFile)
	}
	block := func(name, token, extra string) string {
		return fmt.Sprintf("[[tokens]]\nname = %q\nhash = %q\n%s\n", name, auth.Hash(auth.DefaultSalt, token), extra)
	}
	writeTokens(block("noarch-only", "tok-a", `subdirs = ["noarch"]`) + block("old", "tok-old", "expires = 2020-01-01T00:00:00Z"))
	p, _ := startWith(t, fmt.Sprintf("tokens_file = %q\n", tokensFile))

	noarch, linux := corpusFile("conda/sample_noarch_python-1.0-py_0.conda"), corpusFile("quetz/other-package-0.2-0.conda")
	if st, body := p.upload(t, "tok-a", linux); st != 403 || !strings.Contains(fmt.Sprint(body["error"]), "may not upload to subdir linux-64") {
		t.Errorf("scope violation: %d %v", st, body)
	}
	if st, body := p.upload(t, "tok-a", noarch); st != 201 {
		t.Errorf("in scope: %d %v", st, body)
	}
	if st, body := p.upload(t, "tok-old", noarch); st != 403 || !strings.Contains(fmt.Sprint(body["error"]), "expired") {
		t.Errorf("expired: %d %v", st, body)
	}
	if !p.logged(`token=noarch-only`) {
		t.Error("log does not name the token")
	}

	// Rotate: tok-a out, tok-b in.
	writeTokens(block("new", "tok-b", ""))
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.logged("tokens reloaded")
	if st, _ := p.upload(t, "tok-a", linux); st != 401 {
		t.Errorf("removed token: %d", st)
	}
	if st, body := p.upload(t, "tok-b", linux); st != 201 {
		t.Errorf("new token: %d %v", st, body)
	}
	// A broken file keeps the tokens in force.
	writeTokens("[[tokens]]\nname = \"x\"\nhash = \"not-a-hash\"\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	if !p.logged("token reload failed; keeping the old tokens") {
		t.Error("bad tokens file not reported")
	}
	if st, _ := p.upload(t, "tok-b", corpusFile("quetz/test-package-0.1-0.tar.bz2")); st != 201 {
		t.Errorf("after a bad reload: %d", st)
	}
}

func TestHashTokenTOML(t *testing.T) {
	cmd := command(t, "hash-token", "--toml", "ci-linux")
	cmd.Stdin = strings.NewReader("s3cret\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Tokens []struct{ Name, Hash string }
	}
	if _, err := toml.Decode(string(out), &doc); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if len(doc.Tokens) != 1 || doc.Tokens[0].Name != "ci-linux" || doc.Tokens[0].Hash != auth.Hash(auth.DefaultSalt, "s3cret") {
		t.Errorf("got %+v", doc)
	}
}

func TestCheckConfig(t *testing.T) {
	dir := shared(t)
	cert, key, _, _ := certPair(t, dir, "")
	os.MkdirAll(filepath.Join(dir, "ch"), 0o755)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	hash := auth.Hash(auth.DefaultSalt, "t")
	good := write("good.toml", fmt.Sprintf("write_dir = %q\ncertfile = %q\nkeyfile = %q\ntoken_hash = %q\n", filepath.Join(dir, "ch"), cert, key, hash))
	bad := write("bad.toml", fmt.Sprintf("write_dir = %q\ncertfile = %q\nkeyfile = %q\ntokens_file = %q\nconda_exe = \"/nonexistent/conda\"\n",
		filepath.Join(dir, "missing"), cert, cert, write("tokens.toml", "[[tokens]]\nname = \"a\"\nhash = \"xyz\"\n")))
	for _, tt := range []struct {
		file string
		code int
		want []string
	}{
		{good, 0, []string{"ok", "tokens: 1", "certificate: localhost"}},
		{bad, 1, []string{"tokens_file", "token hash must be 64 hex digits", "certificate:", "conda_exe: stat /nonexistent/conda", "write_dir: stat"}},
		{write("unknown.toml", "wirte_dir = \"/x\"\n"), 1, []string{"unknown key wirte_dir"}},
	} {
		cmd := command(t, "check-config", "--config", tt.file)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tt.code {
			t.Errorf("%s: exit %d, want %d\n%s", filepath.Base(tt.file), code, tt.code, out)
		}
		for _, w := range tt.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s: output lacks %q:\n%s", filepath.Base(tt.file), w, out)
			}
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := command(t, "--version").Output()
	if err != nil || !regexp.MustCompile(`^conda-upload-server \S+ \(commit \S+, go1\.\d+`).Match(out) {
		t.Errorf("%q %v", out, err)
	}
}

// TestJournalFormat: under systemd (JOURNAL_STREAM set) log lines carry
// no timestamp of their own, and keep their fields.
func TestJournalFormat(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "8:12345")
	p, _ := startWith(t, "")
	p.upload(t, testToken, corpusFile("conda/sample_noarch_python-1.0-py_0.conda"))
	if !p.logged("level=INFO msg=request method=POST path=/ ") {
		t.Error("request line lost its fields")
	}
	for _, line := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
		if strings.HasPrefix(line, "time=") {
			t.Errorf("timestamped line under the journal: %s", line)
		}
	}
}
