// Command conda-upload-server is an HTTPS endpoint that CI jobs upload
// conda packages to. It checks their token, validates each package, stores
// it atomically in a conda channel on local disk and re-indexes the channel.
//
// Usage:
//
//	conda-upload-server -d WRITE_DIR -p PORT -e CONDA_EXE -c CERTFILE -k KEYFILE -t TOKEN_HASH
//	conda-upload-server --config /etc/conda-upload-server/config.toml
//	conda-upload-server --dev
//	conda-upload-server hash-token [--salt SALT] [--toml NAME] < token
//	conda-upload-server check-config --config FILE
//	conda-upload-server admin [--url URL] [--token-file FILE] CALL ARGS... < token
//	conda-upload-server reload PID
//	conda-upload-server version
//
// main wires the internal packages together and is the only place that
// exits; see docs/ for the manual, and output.go for what the
// command line prints where.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// stdio is one invocation's standard streams.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// subcommand is one command of the program: its name, what it does in one
// line of usage, and how it runs, given the arguments after its name.
type subcommand struct {
	name, summary string
	run           func(ctx context.Context, args []string, s stdio) int
}

// commands lists the subcommands in the order usage shows them. With none,
// the program serves.
func commands() []subcommand {
	return []subcommand{
		{"hash-token", "print the hash of a token read from standard input", hashToken},
		{"check-config", "check a configuration file and everything it names", checkConfig},
		{"admin", "call the admin API: labels, yanks, deletes, patches, retention, quotas, proxy, owners", admin},
		{"reload", "make a running server reload its certificate, tokens and audit log", reloadPID},
		{"version", "print the version, the commit and the Go version", printVersion},
		{"help", "print this help, or with a command's name that command's", help},
	}
}

// run executes one invocation and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	s := stdio{in: stdin, out: stdout, err: stderr}
	if len(args) == 0 {
		return serve(ctx, args, s)
	}
	name := args[0]
	if name == "--version" || name == "-version" {
		name = "version"
	}
	if strings.HasPrefix(name, "-") {
		return serve(ctx, args, s)
	}
	c, ok := lookup(name)
	if !ok {
		return unknownCommand(name, stderr)
	}
	return c.run(ctx, args[1:], s)
}

func lookup(name string) (subcommand, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return subcommand{}, false
}

func unknownCommand(name string, stderr io.Writer) int {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	err := fmt.Errorf("unknown command %q", name)
	if near := closest(name, names); near != "" {
		return usageError(stderr, "", err, "did you mean "+near+"?")
	}
	return usageError(stderr, "", err)
}

// usage is the program's help: how to serve, the commands, the flags.
func usage() string {
	var b strings.Builder
	b.WriteString(`usage: conda-upload-server [-h] -d WRITE_DIR -p PORT [-e CONDA_EXE] -c CERTFILE -k KEYFILE -t TOKEN_HASH
       conda-upload-server --config FILE [flags]
       conda-upload-server --dev
       conda-upload-server COMMAND [ARGS...]

A hardened HTTPS endpoint that CI jobs upload conda packages to. With no
command, it serves the channel as the flags below say.

commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-14s%s\n", c.name, c.summary)
	}
	b.WriteString("\nRun \"conda-upload-server COMMAND -h\" for a command's own usage.\n\n")
	b.WriteString(serveFlags)
	return b.String()
}

const helpUsage = `usage: conda-upload-server help [COMMAND]

Prints the program's help, or with a command's name that command's.
`

func help(ctx context.Context, args []string, s stdio) int {
	switch {
	case len(args) == 0:
		fmt.Fprint(s.out, usage())
		return exitOK
	case len(args) > 1:
		return usageError(s.err, "help", errors.New("help takes at most one command"))
	case args[0] == "-h" || args[0] == "--help" || args[0] == "-help":
		fmt.Fprint(s.out, helpUsage)
		return exitOK
	}
	if _, ok := lookup(args[0]); !ok {
		return unknownCommand(args[0], s.err)
	}
	return run(ctx, []string{args[0], "-h"}, s.in, s.out, s.err)
}
