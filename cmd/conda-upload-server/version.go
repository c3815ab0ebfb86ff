package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

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
