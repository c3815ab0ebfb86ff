// Package admincli is the operator's command line for the admin API:
// conda-upload-server admin <call> .... It talks to the running server over
// HTTPS, so that the daemon stays the only writer of the channel (its
// index, its audit log and its locks see every change), and it reads the
// token from standard input or a file, never from the command line, where
// other users could read it in the process list or a shell history.
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

// Usage is the command's help.
const Usage = `usage: conda-upload-server admin [--url URL] [--token-file FILE] [--cacert FILE] CALL ARGS...

The token is read from --token-file, or from standard input; never from
the command line. Each call prints the server's one-line JSON answer.

calls:
  list    LABEL SUBDIR                    files with size, sha256, yanked     (scope read)
  copy    LABEL SUBDIR FILENAME TO        hard-link into label TO, index it   (scope promote)
  move    LABEL SUBDIR FILENAME TO        copy, then remove from LABEL        (scope promote)
  yank    LABEL SUBDIR FILENAME [REASON]  hide from solves, keep downloadable (scope yank)
  unyank  LABEL SUBDIR FILENAME                                               (scope yank)
  delete  LABEL SUBDIR FILENAME           move to .trash/<date>/, unindex     (scope delete)
  patch get    LABEL SUBDIR               print the label's repodata patch    (scope patch)
  patch set    LABEL SUBDIR FILE          set it from a patch_instructions.json
  patch delete LABEL SUBDIR               remove it

LABEL "main" is the channel root.
`

// Error is a failed call: the message to print, and whether the server
// was reached (a refused call) or not.
type Error struct {
	Msg string
	// Usage marks a wrong command line.
	Usage bool
}

func (e *Error) Error() string { return e.Msg }

func usageError(format string, args ...any) error {
	return &Error{Msg: fmt.Sprintf(format, args...), Usage: true}
}

// request is one API call.
type request struct {
	method, path string
	body         []byte
}

// parse turns a call's words into a request.
func parse(args []string, readFile func(string) ([]byte, error)) (request, error) {
	if len(args) == 0 {
		return request{}, usageError("no call given")
	}
	want := func(n int, form string) error {
		if len(args)-1 != n {
			return usageError("%s takes %s", args[0], form)
		}
		return nil
	}
	seg := url.PathEscape
	pkg := func() string {
		return "/api/v1/packages/" + seg(args[1]) + "/" + seg(args[2]) + "/" + seg(args[3])
	}
	jsonBody := func(v any) []byte { b, _ := json.Marshal(v); return b }
	switch call := args[0]; call {
	case "list":
		if err := want(2, "LABEL SUBDIR"); err != nil {
			return request{}, err
		}
		return request{method: http.MethodGet, path: "/api/v1/packages/" + seg(args[1]) + "/" + seg(args[2])}, nil
	case "copy", "move":
		if err := want(4, "LABEL SUBDIR FILENAME TO"); err != nil {
			return request{}, err
		}
		return request{method: http.MethodPost, path: pkg() + "/" + call, body: jsonBody(map[string]string{"to": args[4]})}, nil
	case "yank":
		if len(args) != 4 && len(args) != 5 {
			return request{}, usageError("yank takes LABEL SUBDIR FILENAME [REASON]")
		}
		reason := ""
		if len(args) == 5 {
			reason = args[4]
		}
		return request{method: http.MethodPost, path: pkg() + "/yank", body: jsonBody(map[string]string{"reason": reason})}, nil
	case "unyank":
		if err := want(3, "LABEL SUBDIR FILENAME"); err != nil {
			return request{}, err
		}
		return request{method: http.MethodPost, path: pkg() + "/unyank"}, nil
	case "delete":
		if err := want(3, "LABEL SUBDIR FILENAME"); err != nil {
			return request{}, err
		}
		return request{method: http.MethodDelete, path: pkg()}, nil
	case "patch":
		if len(args) < 2 {
			return request{}, usageError("patch takes get, set or delete")
		}
		sub, rest := args[1], args[2:]
		if (sub == "set" && len(rest) != 3) || (sub != "set" && len(rest) != 2) {
			return request{}, usageError("patch get|delete LABEL SUBDIR, or patch set LABEL SUBDIR FILE")
		}
		path := "/api/v1/patches/" + seg(rest[0]) + "/" + seg(rest[1])
		switch sub {
		case "get":
			return request{method: http.MethodGet, path: path}, nil
		case "delete":
			return request{method: http.MethodDelete, path: path}, nil
		case "set":
			b, err := readFile(rest[2])
			if err != nil {
				return request{}, &Error{Msg: fmt.Sprintf("read patch: %v", err)}
			}
			return request{method: http.MethodPut, path: path, body: b}, nil
		}
		return request{}, usageError("patch takes get, set or delete, not %q", sub)
	default:
		return request{}, usageError("unknown call %q", call)
	}
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

// Run executes one admin command line. It prints the server's answer to
// stdout; an error is an *Error.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "https://localhost:8443/", "the server's `URL`")
	tokenFile := fs.String("token-file", "", "read the token from `FILE` (default: standard input)")
	cacert := fs.String("cacert", "", "trust the CA certificates in `FILE` (such as a self-signed server's own)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	fs.Usage = func() {
		fmt.Fprint(stderr, Usage, "\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return &Error{Msg: err.Error(), Usage: true}
	}
	req, err := parse(fs.Args(), os.ReadFile)
	if err != nil {
		return err
	}
	u, err := url.Parse(*base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return usageError("--url %q: want https://host[:port]/", *base)
	}
	var tok string
	if *tokenFile != "" && *tokenFile != "-" {
		f, err := os.Open(*tokenFile)
		if err != nil {
			return &Error{Msg: fmt.Sprintf("token file: %v", err)}
		}
		tok, err = readToken(f)
		f.Close()
		if err != nil {
			return &Error{Msg: fmt.Sprintf("token file %s: %v", *tokenFile, err)}
		}
	} else if tok, err = readToken(stdin); err != nil {
		return &Error{Msg: fmt.Sprintf("token on standard input: %v", err)}
	}
	client := &http.Client{Timeout: *timeout}
	if *cacert != "" {
		pem, err := os.ReadFile(*cacert)
		if err != nil {
			return &Error{Msg: fmt.Sprintf("--cacert: %v", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return &Error{Msg: fmt.Sprintf("--cacert %s: no PEM certificate in it", *cacert)}
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	target := strings.TrimSuffix(u.String(), "/") + req.path
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, target, body)
	if err != nil {
		return &Error{Msg: err.Error()}
	}
	hr.Header.Set("Authorization", "Bearer "+tok)
	if req.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(hr)
	if err != nil {
		return &Error{Msg: fmt.Sprintf("%s %s: %v", req.method, req.path, err)}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return &Error{Msg: fmt.Sprintf("read answer: %v", err)}
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(answer, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(answer))
		}
		return &Error{Msg: fmt.Sprintf("%s %s: %d: %s", req.method, req.path, resp.StatusCode, e.Error)}
	}
	stdout.Write(answer)
	return nil
}
