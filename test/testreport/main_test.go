package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// demo is a module whose tests pass, fail, skip (a test, a subtest, and an
// input of a fuzz target), and one package that does not build.
var demo = map[string]string{
	"go.mod": "module demo\n\ngo 1.24\n",
	"a/a_test.go": `package a

import "testing"

func TestPass(t *testing.T) { t.Log("fine") }
func TestFail(t *testing.T) { t.Log("context"); t.Error("boom") }
func TestSkip(t *testing.T) { t.Skip("needs curl on PATH (apt-get install curl)") }
func TestSub(t *testing.T) {
	t.Run("x", func(t *testing.T) { t.Skip("needs root") })
}
func FuzzInput(f *testing.F) {
	f.Add(1)
	f.Fuzz(func(t *testing.T, i int) { t.Skip("not applicable") })
}
`,
	"b/b_test.go": "package b\n\nimport \"testing\"\n\nfunc TestBuild(t *testing.T) { undefined() }\n",
	"c/c_test.go": "package c\n\nimport \"testing\"\n\nfunc TestPass(t *testing.T) {}\n",
}

// TestReport runs go test -json on the demo module and reads it as CI
// would.
func TestReport(t *testing.T) {
	dir := t.TempDir()
	for name, text := range demo {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "test", "-json", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	stream, _ := cmd.Output() // fails, as it should
	var out bytes.Buffer
	r := &report{out: &out, output: map[string][]string{}}
	if err := r.read(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if code := r.summary(); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	want := []string{
		"demo/a TestSkip: a_test.go:7: needs curl on PATH (apt-get install curl)",
		"demo/a TestSub/x: a_test.go:9: needs root",
	}
	if strings.Join(r.skipped, "\n") != strings.Join(want, "\n") {
		t.Errorf("skipped:\n%s\nwant:\n%s", strings.Join(r.skipped, "\n"), strings.Join(want, "\n"))
	}
	text := out.String()
	for _, s := range []string{"--- FAIL: demo/a TestFail\n    a_test.go:6: context\n    a_test.go:6: boom\n",
		"undefined: undefined", "FAIL demo/b", "ok   demo/c", "2 skipped", "failed, 2 skipped\n"} {
		if !strings.Contains(text, s) {
			t.Errorf("the report lacks %q:\n%s", s, text)
		}
	}
	if strings.Contains(text, "TestPass") || strings.Contains(text, "not applicable") {
		t.Errorf("the report shows a passing test or a fuzz input's skip:\n%s", text)
	}
}

// TestReportExit: a run where everything passes exits 0 (a package
// without tests is no skip); one where a test only skips exits 1.
func TestReportExit(t *testing.T) {
	const pass = `{"Action":"start","Package":"demo/c"}
{"Action":"run","Package":"demo/c","Test":"TestPass"}
{"Action":"output","Package":"demo/c","Test":"TestPass","Output":"=== RUN   TestPass\n"}
{"Action":"pass","Package":"demo/c","Test":"TestPass","Elapsed":0}
{"Action":"skip","Package":"demo/d","Elapsed":0}
{"Action":"pass","Package":"demo/c","Elapsed":0.5}
`
	const skip = `{"Action":"run","Package":"demo/c","Test":"TestRoot"}
{"Action":"output","Package":"demo/c","Test":"TestRoot","Output":"    c_test.go:5: needs root\n"}
{"Action":"skip","Package":"demo/c","Test":"TestRoot","Elapsed":0}
{"Action":"pass","Package":"demo/c","Elapsed":0.5}
`
	for _, tc := range []struct {
		stream, report string
		code           int
	}{
		{pass, "ok   demo/c 500ms\ntests: 1 passed, 0 failed, 0 skipped\n", 0},
		{skip, "ok   demo/c 500ms\n\n1 skipped; under test/run.sh every test must run:\n  demo/c TestRoot: c_test.go:5: needs root\ntests: 0 passed, 0 failed, 1 skipped\n", 1},
	} {
		var out bytes.Buffer
		r := &report{out: &out, output: map[string][]string{}}
		if err := r.read(strings.NewReader(tc.stream)); err != nil {
			t.Fatal(err)
		}
		if code := r.summary(); code != tc.code || out.String() != tc.report {
			t.Errorf("exit %d, report %q; want %d, %q", code, out.String(), tc.code, tc.report)
		}
	}
}
