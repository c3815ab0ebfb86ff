package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
)

// hashToken prints the hash of a token read from stdin, so that the token
// never shows on a command line or in a shell history.
func hashToken(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hash-token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	salt := fs.String("salt", auth.DefaultSalt, "salt, as in the server's `salt` setting")
	tomlName := fs.String("toml", "", "print a [[tokens]] block for a token of this `name` instead of the bare hash")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: conda-upload-server hash-token [--salt SALT] [--toml NAME] < token-file\n\nReads one token from standard input and prints its hash for token_hash,\nor with --toml a [[tokens]] block for the config or tokens file.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "conda-upload-server: error: hash-token reads the token from standard input, not from arguments")
		return 2
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, auth.MaxTokenLen+2)).ReadString('\n')
	if err != nil && err != io.EOF {
		fmt.Fprintf(stderr, "conda-upload-server: error: read token: %v\n", err)
		return 1
	}
	token := strings.TrimRight(line, "\r\n")
	switch {
	case token == "":
		fmt.Fprintln(stderr, "conda-upload-server: error: no token on standard input")
		return 1
	case len(token) > auth.MaxTokenLen:
		fmt.Fprintf(stderr, "conda-upload-server: error: token is longer than %d bytes\n", auth.MaxTokenLen)
		return 1
	}
	if *tomlName != "" {
		fmt.Fprintf(stdout, "[[tokens]]\nname = %q\nhash = %q\n", *tomlName, auth.Hash(*salt, token))
		return 0
	}
	fmt.Fprintln(stdout, auth.Hash(*salt, token))
	return 0
}
