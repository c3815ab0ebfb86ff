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
//	conda-upload-server reload PID
//
// main wires the internal packages together and is the only place that
// exits; see README.md for the contract.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one invocation and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "hash-token":
			return hashToken(args[1:], stdin, stdout, stderr)
		case "check-config":
			return checkConfig(args[1:], stdout, stderr)
		case "reload":
			return reloadPID(args[1:], stderr)
		case "version", "--version", "-version":
			fmt.Fprintln(stdout, versionString())
			return 0
		}
	}
	return serve(ctx, args, stdout, stderr)
}

// reloadPID sends SIGHUP to a running server. The unit's ExecReload uses
// it, so that systemctl reload needs no kill(1) on minimal systems.
func reloadPID(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: conda-upload-server reload PID")
		return 2
	}
	pid, err := strconv.Atoi(args[0])
	if err != nil || pid <= 1 {
		fmt.Fprintf(stderr, "conda-upload-server: error: bad pid %q\n", args[0])
		return 2
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		fmt.Fprintf(stderr, "conda-upload-server: error: reload %d: %v\n", pid, err)
		return 1
	}
	return 0
}
