// Command testreport reads `go test -json` on stdin, keeps the whole
// stream in a file, and prints what a reader of a CI log needs: a line per
// package, the output of each failed test, and every skipped test with its
// reason. A skip fails the run: CI runs every test (test/run.sh makes a
// missing need a failure), so a skip there means a test that never ran.
// Only a fuzz target's input may skip, as not applicable.
//
//	go test -json ./... | go run ./test/testreport -o dist/test/go-test.json
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json, and go build's
// events for a package that does not build).
type event struct {
	Action     string
	Package    string
	ImportPath string
	Test       string
	Elapsed    float64
	Output     string
}

// report is what the stream said so far.
type report struct {
	out     io.Writer
	output  map[string][]string // by package and test, until it ends
	failed  int
	skipped []string // "pkg TestX: reason"
	// tests counts the tests (and subtests) that ran to an end, by
	// outcome, for the closing line.
	tests map[string]int
}

func main() {
	log := flag.String("o", "", "write the whole -json stream to this file")
	flag.Parse()
	raw, err := create(*log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	r := &report{out: os.Stdout, output: map[string][]string{}}
	if err := r.read(io.TeeReader(os.Stdin, raw)); err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	raw.Close()
	os.Exit(r.summary())
}

// create opens the log file, or a sink when there is none.
func create(path string) (io.WriteCloser, error) {
	if path == "" {
		return nopCloser{io.Discard}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return os.Create(path)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// read consumes the stream. A line that is not JSON (go vet's output, a
// build error before the test binary runs) is printed as it is.
func (r *report) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Action == "" {
			fmt.Fprintln(r.out, sc.Text())
			continue
		}
		r.handle(e)
	}
	return sc.Err()
}

// handle keeps a test's output until the test ends, then prints it if it
// failed, or keeps its reason if it skipped.
func (r *report) handle(e event) {
	key := e.Package + " " + e.Test
	if e.Package == "" {
		key = e.ImportPath
	}
	// A fuzz target's input that skips itself is not a test that
	// skipped (see fuzzInput), so it is not counted either.
	if e.Test != "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip" && !fuzzInput(e.Test)) {
		if r.tests == nil {
			r.tests = map[string]int{}
		}
		r.tests[e.Action]++
	}
	switch e.Action {
	case "output", "build-output":
		r.output[key] = append(r.output[key], e.Output)
		return
	case "fail", "build-fail":
		r.failed++
		if text := detail(r.output[key]); text != "" {
			fmt.Fprintf(r.out, "--- FAIL: %s\n%s", key, text)
		}
	case "skip":
		if e.Test != "" && !fuzzInput(e.Test) {
			r.skipped = append(r.skipped, key+": "+strings.Join(strings.Fields(detail(r.output[key])), " "))
		}
	}
	if e.Test == "" && (e.Action == "pass" || e.Action == "fail") {
		word := map[string]string{"pass": "ok", "fail": "FAIL"}[e.Action]
		fmt.Fprintf(r.out, "%-4s %s %s\n", word, e.Package, time.Duration(e.Elapsed*float64(time.Second)).Round(10*time.Millisecond))
	}
	delete(r.output, key)
}

// fuzzInput reports whether test is one input of a fuzz target (its seed
// corpus), which the target may skip as not applicable; a skip of the
// target itself still counts.
func fuzzInput(test string) bool {
	return strings.HasPrefix(test, "Fuzz") && strings.Contains(test, "/")
}

// detail is what a test or package printed beyond the lines go test
// adds itself (=== RUN, --- FAIL, the package's FAIL and ok lines).
func detail(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || t == "FAIL" || t == "PASS" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") ||
			strings.HasPrefix(t, "FAIL\t") || strings.HasPrefix(t, "ok  \t") {
			continue
		}
		b.WriteString(l)
	}
	return b.String()
}

// summary prints the skips and the closing count, and returns the exit
// code. The closing line has the plain "N passed, N failed, N skipped"
// form that CI reads when the stream's own lines are not shown.
func (r *report) summary() int {
	defer func() {
		fmt.Fprintf(r.out, "tests: %d passed, %d failed, %d skipped\n", r.tests["pass"], r.tests["fail"], r.tests["skip"])
	}()
	if len(r.skipped) > 0 {
		fmt.Fprintf(r.out, "\n%d skipped; under test/run.sh every test must run:\n", len(r.skipped))
		for _, s := range r.skipped {
			fmt.Fprintln(r.out, "  "+s)
		}
	}
	if r.failed > 0 || len(r.skipped) > 0 {
		return 1
	}
	return 0
}
