package testneed

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder stands in for a test that Check skips or fails, recording the
// message instead of ending the goroutine.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(format string, args ...any) { r.skipped = fmt.Sprintf(format, args...) }

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

// setShort sets -short for the rest of the test.
func setShort(t *testing.T, on bool) {
	f := flag.Lookup("test.short")
	old := f.Value.String()
	f.Value.Set(fmt.Sprint(on))
	t.Cleanup(func() { f.Value.Set(old) })
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name              string
		ok                bool
		strict, ci, short string
		skip, fail        string // a part of the message, or "" for none
	}{
		{name: "met", ok: true},
		{name: "met strict", ok: true, strict: "1"},
		{name: "missing", skip: "needs curl on PATH (apt-get install curl); CONDA_UPLOAD_TEST_STRICT=1 makes this a failure"},
		{name: "missing strict", strict: "1", fail: "needs curl on PATH, which is missing: apt-get install curl"},
		{name: "missing under CI", ci: "true", fail: "apt-get install curl"},
		{name: "missing, CI not true", ci: "1", skip: "(apt-get install curl)"},
		{name: "short skips what is met", ok: true, short: "true", skip: "needs curl on PATH: skipped in -short"},
		{name: "short skips even strict", strict: "1", short: "true", skip: "skipped in -short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(StrictEnv, tc.strict)
			t.Setenv("CI", tc.ci)
			setShort(t, tc.short == "true")
			r := &recorder{TB: t}
			Check(r, tc.ok, "curl on PATH", "apt-get install curl")
			if !strings.Contains(r.skipped, tc.skip) || (tc.skip == "") != (r.skipped == "") {
				t.Errorf("skipped with %q, want %q", r.skipped, tc.skip)
			}
			if !strings.Contains(r.failed, tc.fail) || (tc.fail == "") != (r.failed == "") {
				t.Errorf("failed with %q, want %q", r.failed, tc.fail)
			}
		})
	}
}

// TestTool looks tools up on a PATH the test makes.
func TestTool(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "here"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	t.Setenv(StrictEnv, "1")
	t.Setenv("CI", "")
	setShort(t, false)

	r := &recorder{TB: t}
	if got := Tool(r, "here", "here-pkg"); got != filepath.Join(dir, "here") || r.failed != "" {
		t.Errorf("Tool(here) = %q, failed %q", got, r.failed)
	}
	r = &recorder{TB: t}
	GoTool(r, "gone", "example.com/gone@v1.0.0")
	if want := "needs gone on PATH, which is missing: GOBIN=/usr/local/bin go install example.com/gone@v1.0.0"; r.failed != want {
		t.Errorf("GoTool(gone) failed with %q, want %q", r.failed, want)
	}
	r = &recorder{TB: t}
	File(r, filepath.Join(dir, "node_modules"), "the solver", "npm install")
	if !strings.Contains(r.failed, "needs the solver ("+dir+"/node_modules)") || !strings.HasSuffix(r.failed, ": npm install") {
		t.Errorf("File failed with %q", r.failed)
	}
}
