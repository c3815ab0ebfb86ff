package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
)

const hashTokenUsage = `usage: conda-upload-server hash-token [--salt SALT] [--toml NAME] < token-file

Reads one token from standard input and prints its hash for token_hash,
or with --toml a [[tokens]] block for the config or tokens file.
`

// tokenOnStdin is the hint for a token that is not on standard input.
const tokenOnStdin = "give the token on standard input: conda-upload-server hash-token < token-file"

// hashToken prints the hash of a token read from stdin, so that the token
// never shows on a command line or in a shell history.
func hashToken(_ context.Context, args []string, s stdio) int {
	fs := flag.NewFlagSet("hash-token", flag.ContinueOnError)
	salt := fs.String("salt", auth.DefaultSalt, "salt, as in the server's `salt` setting")
	tomlName := fs.String("toml", "", "print a [[tokens]] block for a token of this `name` instead of the bare hash")
	if code, done := parseFlags(fs, args, "hash-token", hashTokenUsage, s.out, s.err); done {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(s.err, "hash-token", errors.New("hash-token reads the token from standard input, not from arguments"), tokenOnStdin)
	}
	line, err := bufio.NewReader(io.LimitReader(s.in, auth.MaxTokenLen+2)).ReadString('\n')
	if err != nil && err != io.EOF {
		return errorf(s.err, "read token: %v", err)
	}
	token := strings.TrimRight(line, "\r\n")
	switch {
	case token == "":
		return errorWithHint(s.err, exitFailure, errors.New("no token on standard input"), tokenOnStdin)
	case len(token) > auth.MaxTokenLen:
		return errorf(s.err, "token is longer than %d bytes", auth.MaxTokenLen)
	}
	if *tomlName != "" {
		fmt.Fprintf(s.out, "[[tokens]]\nname = %q\nhash = %q\n", *tomlName, auth.Hash(*salt, token))
		return exitOK
	}
	fmt.Fprintln(s.out, auth.Hash(*salt, token))
	return exitOK
}
