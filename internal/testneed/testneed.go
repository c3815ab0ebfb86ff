// Package testneed lets a test say what it needs from outside Go: root, a
// tool on PATH, a Python module, a file that a setup step makes, a kernel
// with Landlock.
//
// A need that is missing is handled in one of three ways, so that a
// contributor's first run is green and CI still runs everything:
//   - Under test/run.sh and CI (CONDA_UPLOAD_TEST_STRICT=1, or CI=true as
//     CI services set it), it fails the test with the command that fixes
//     it: a skip there would hide a test that never ran.
//   - In a plain `go test ./...`, it skips the test and names the need.
//   - With -short (`make check`), every test that needs something outside
//     Go skips, even when the need is met: -short is the fast loop of
//     tests that need nothing but Go.
package testneed

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// StrictEnv is the variable test/run.sh exports to turn a missing need
// into a failure.
const StrictEnv = "CONDA_UPLOAD_TEST_STRICT"

// python is the interpreter the tests run Python clients with: Debian's,
// whose modules come from Debian packages.
const python = "/usr/bin/python3"

// Strict reports whether a missing need fails the test rather than
// skipping it.
func Strict() bool {
	return os.Getenv(StrictEnv) == "1" || os.Getenv("CI") == "true"
}

// Check is the general form: ok says whether the need is met, need names
// it ("root", "curl on PATH") and fix says how to meet it. The other
// functions are Check with the facts filled in.
func Check(t testing.TB, ok bool, need, fix string) {
	t.Helper()
	switch {
	case testing.Short():
		t.Skipf("needs %s: skipped in -short", need)
	case ok:
		return
	case Strict():
		t.Fatalf("needs %s, which is missing: %s", need, fix)
	default:
		t.Skipf("needs %s (%s); %s=1 makes this a failure", need, fix, StrictEnv)
	}
}

// Root needs the test to run as root: to switch users, chown, or mount.
func Root(t testing.TB) {
	t.Helper()
	Check(t, os.Geteuid() == 0, "root", "run the tests as root, as test/run.sh does")
}

// Tool needs the command name on PATH, from the Debian package pkg, and
// returns its path.
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	Check(t, err == nil, name+" on PATH", "apt-get install "+pkg)
	return path
}

// GoTool needs the command name on PATH, built from the Go package at
// version pkg (path@version), and returns its path.
func GoTool(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	Check(t, err == nil, name+" on PATH", "GOBIN=/usr/local/bin go install "+pkg)
	return path
}

// Python needs Debian's Python with module importable, from the Debian
// package pkg ("" for the standard library), and returns the
// interpreter's path.
func Python(t testing.TB, module, pkg string) string {
	t.Helper()
	err := exec.Command(python, "-c", "import "+module).Run()
	Check(t, err == nil, fmt.Sprintf("%s with the module %s", python, module), strings.TrimSpace("apt-get install python3 "+pkg))
	return python
}

// File needs path to exist; what names it and fix is the step that
// makes it.
func File(t testing.TB, path, what, fix string) {
	t.Helper()
	_, err := os.Stat(path)
	Check(t, err == nil, what+" ("+path+")", fix)
}

// Landlock needs the kernel's Landlock at ABI version abi or later.
func Landlock(t testing.TB, abi int) {
	t.Helper()
	got, err := llsys.LandlockGetABIVersion()
	Check(t, err == nil && got >= abi, fmt.Sprintf("Landlock ABI %d or later (this kernel: %d)", abi, got),
		"Linux 5.19 or later with landlock in its lsm= list")
}
