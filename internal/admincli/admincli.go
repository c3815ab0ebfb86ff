// Package admincli is the operator's command line for the admin API:
// conda-upload-server admin <call> .... It talks to the running server over
// HTTPS, so that the daemon stays the only writer of the channel (its
// index, its audit log and its locks see every change), and it reads the
// token from standard input or a file, never from the command line, where
// other users could read it in the process list or a shell history.
//
// The package prints nothing but the server's answer: its failures are
// returned as an *Error, for the command to print by its output policy.
package admincli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// maxToken bounds a token read from stdin or a file.
const maxToken = 1024

// maxAnswer bounds the server's answer (a label's listing can be long).
const maxAnswer = 256 << 20

// Usage is the command's help; the flags' defaults follow it.
func Usage() string {
	var b strings.Builder
	b.WriteString(`usage: conda-upload-server admin [--url URL] [--token-file FILE] [--cacert FILE] [--timeout D] CALL ARGS...

The token is read from --token-file, or from standard input; never from
the command line. Each call prints the server's one-line JSON answer.

calls:
`)
	for _, c := range calls() {
		fmt.Fprintf(&b, "  %-13s %-31s %s\n", c.name, c.synopsis, c.summary)
	}
	b.WriteString("\nLABEL \"main\" is the channel root.\n")
	return b.String()
}

// Options are the command's flags.
type Options struct {
	URL       string
	TokenFile string
	CACert    string
	Timeout   time.Duration
}

// Register defines the options' flags on fs.
func (o *Options) Register(fs *flag.FlagSet) {
	fs.StringVar(&o.URL, "url", "https://localhost:8443/", "the server's `URL`")
	fs.StringVar(&o.TokenFile, "token-file", "", "read the token from `FILE` (default: standard input)")
	fs.StringVar(&o.CACert, "cacert", "", "trust the CA certificates in `FILE` (such as a self-signed server's own)")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "give up after this long")
}

// Error is a failed call: the message to print, whether the command line
// was wrong, and what to do about it.
type Error struct {
	Msg string
	// Usage marks a wrong command line: nothing was sent.
	Usage bool
	// Hint, if set, says what to do next.
	Hint string
}

func (e *Error) Error() string { return e.Msg }

func usageError(format string, args ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, args...), Usage: true}
}

func failure(format string, args ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, args...)}
}

// Run makes the call that args name, with the token from stdin or
// o.TokenFile, and prints the server's answer to stdout. An error is an
// *Error.
func Run(ctx context.Context, o Options, args []string, stdin io.Reader, stdout io.Writer) error {
	req, err := parse(args)
	if err != nil {
		return err
	}
	base, err := o.base()
	if err != nil {
		return err
	}
	if err := req.load(); err != nil {
		return err
	}
	tok, err := o.token(stdin)
	if err != nil {
		return err
	}
	client, err := o.client()
	if err != nil {
		return err
	}
	answer, err := send(ctx, client, base+req.path, tok, req)
	if err != nil {
		return err
	}
	if _, err := stdout.Write(answer); err != nil {
		return failure("write answer: %v", err)
	}
	return nil
}

// base checks o.URL and returns it without its trailing slash.
func (o Options) base() (string, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", usageError("--url %q: want https://host[:port]/", o.URL)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// token reads the token from o.TokenFile, or from stdin when that is
// unset or "-".
func (o Options) token(stdin io.Reader) (string, error) {
	const hint = "give the token on standard input, or name its file with --token-file FILE"
	if o.TokenFile == "" || o.TokenFile == "-" {
		tok, err := readToken(stdin)
		if err != nil {
			return "", &Error{Msg: fmt.Sprintf("token on standard input: %v", err), Hint: hint}
		}
		return tok, nil
	}
	f, err := os.Open(o.TokenFile)
	if err != nil {
		return "", failure("token file: %v", err)
	}
	defer f.Close()
	tok, err := readToken(f)
	if err != nil {
		return "", failure("token file %s: %v", o.TokenFile, err)
	}
	return tok, nil
}

// readToken reads one token line.
func readToken(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxToken+2)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	tok := strings.TrimSpace(line)
	switch {
	case tok == "":
		return "", errors.New("no token")
	case len(tok) > maxToken:
		return "", fmt.Errorf("token is longer than %d bytes", maxToken)
	}
	return tok, nil
}

// client returns the HTTP client, trusting only o.CACert when it is set.
func (o Options) client() (*http.Client, error) {
	client := &http.Client{Timeout: o.Timeout}
	if o.CACert == "" {
		return client, nil
	}
	pem, err := os.ReadFile(o.CACert)
	if err != nil {
		return nil, failure("--cacert: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, failure("--cacert %s: no PEM certificate in it", o.CACert)
	}
	client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return client, nil
}

// send makes the call and returns the server's answer. A refusal is an
// error with the server's status and reason.
func send(ctx context.Context, client *http.Client, target, tok string, req request) ([]byte, error) {
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, target, body)
	if err != nil {
		return nil, failure("%v", err)
	}
	hr.Header.Set("Authorization", "Bearer "+tok)
	if req.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(hr)
	if err != nil {
		e := failure("%s %s: %v", req.method, req.path, err)
		if errors.As(err, new(x509.UnknownAuthorityError)) {
			e.Hint = "trust the server's certificate with --cacert FILE"
		}
		return nil, e
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, failure("read answer: %v", err)
	}
	if resp.StatusCode >= 300 {
		return nil, failure("%s %s: %d: %s", req.method, req.path, resp.StatusCode, reason(answer))
	}
	return answer, nil
}

// reason is the error in the server's one-line JSON answer, or the answer
// itself when it is not one.
func reason(answer []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(answer, &e) != nil || e.Error == "" {
		return strings.TrimSpace(string(answer))
	}
	return e.Error
}
