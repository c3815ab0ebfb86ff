package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

const versionUsage = `usage: conda-upload-server version
       conda-upload-server --version

Prints the version, the commit it was built from and the Go version.
`

func printVersion(_ context.Context, args []string, s stdio) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if code, done := parseFlags(fs, args, "version", versionUsage, s.out, s.err); done {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(s.err, "version", errors.New("version takes no arguments"))
	}
	fmt.Fprintln(s.out, versionString())
	return exitOK
}

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func versionString() string {
	v, commit := versionInfo()
	return fmt.Sprintf("conda-upload-server %s (commit %s, %s)", v, commit, runtime.Version())
}

// versionInfo returns the version and the commit it was built from.
func versionInfo() (string, string) {
	v, commit := version, "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return v, commit
}
