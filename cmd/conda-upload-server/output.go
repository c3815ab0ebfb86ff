package main

// This file holds the output policy of the command line. The rules are:
//
//   - Standard output carries only what a command was asked for: a token's
//     hash, check-config's report, an admin call's answer, the version, the
//     help that -h asked for, --dev's banner. Scripts read it, so on an
//     error nothing is written there.
//
//   - Everything else goes to standard error, one message a line, each
//     starting "conda-upload-server: " and its kind: "error: ", "warning: "
//     or "hint: ". No capitalised initials and no full stops at the end. An
//     error that joins several (a configuration is checked whole) is one
//     line each.
//
//   - A hint says what to do next: the flag or command that was probably
//     meant, or the help to read.
//
//   - A wrong command line exits 2 and does nothing; a command that ran and
//     failed exits 1. The helpers return the exit code, and main alone
//     exits.
//
//   - Once the server runs, it logs with log/slog (logfmt lines on standard
//     error, or the journal) instead: a service is read by log tools, and
//     this policy covers the command line around it.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // the command line is wrong; nothing was done
)

const prog = "conda-upload-server"

func printf(w io.Writer, kind, msg string) {
	for _, line := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		fmt.Fprintf(w, "%s: %s: %s\n", prog, kind, line)
	}
}

// errorf reports a failure and returns exitFailure.
func errorf(w io.Writer, format string, a ...any) int {
	printf(w, "error", fmt.Sprintf(format, a...))
	return exitFailure
}

func warningf(w io.Writer, format string, a ...any) {
	printf(w, "warning", fmt.Sprintf(format, a...))
}

// errorWithHint reports err and what to do about it, and returns code.
func errorWithHint(w io.Writer, code int, err error, hints ...string) int {
	printf(w, "error", err.Error())
	for _, h := range hints {
		printf(w, "hint", h)
	}
	return code
}

// usageError reports a wrong command line of cmd ("" for the server
// itself) and returns exitUsage. With no hint given, the hint is cmd's
// help.
func usageError(w io.Writer, cmd string, err error, hints ...string) int {
	if len(hints) == 0 {
		hints = []string{"run " + strings.TrimSpace(prog+" "+cmd) + " -h"}
	}
	return errorWithHint(w, exitUsage, err, hints...)
}

// parseFlags parses the flags of cmd. With -h it prints usage and the
// flags' defaults to stdout; a wrong flag is a usage error, with a "did
// you mean" hint when a flag of fs is close to it. done says that the
// command is to stop, with code.
func parseFlags(fs *flag.FlagSet, args []string, cmd, usage string, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case err == nil:
		return exitOK, false
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		if documented(fs) {
			fmt.Fprint(stdout, "\nflags:\n")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return exitOK, true
	}
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
		if near := closest(name, names); near != "" {
			return usageError(stderr, cmd, err, "did you mean "+flagName(near)+"?"), true
		}
	}
	return usageError(stderr, cmd, err), true
}

// documented says whether fs describes its flags itself; when it does not
// (the server's own, in the original's argparse layout), usage does.
func documented(fs *flag.FlagSet) bool {
	described := false
	fs.VisitAll(func(f *flag.Flag) { described = described || f.Usage != "" })
	return described
}

// flagName spells a flag as the usage texts do: -d, --write_dir.
func flagName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// closest returns the name in names nearest to s, if it is near enough to
// be a slip of the keyboard: at most two edits, and fewer than half of s.
func closest(s string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(s, n); d < bestD && 2*d < len(s) {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance counts the edits from a to b: a byte inserted, deleted or
// replaced, or two neighbours swapped (the optimal string alignment
// distance).
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
