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
//	conda-upload-server admin [--url URL] [--token-file FILE] CALL ARGS... < token
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
		case "admin":
			return admin(ctx, args[1:], stdin, stdout, stderr)
		case "version", "--version", "-version":
			fmt.Fprintln(stdout, versionString())
			return 0
		}
	}
	return serve(ctx, args, stdout, stderr)
}
