package server

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"unicode/utf8"
)

// A token in a URL, the /t/<token>/ prefix that conda, anaconda.org and
// quetz use, is a secret in the one part of a request that every proxy,
// log line and error message repeats. So the guard, the first code a
// request meets, takes it out before anything can log, count, audit or
// echo the path, whatever else is wrong with the request, and the form
// serves the channel's downloads only: a token of the admin API or of
// operations never belongs in a URL.
//
// What is taken out is found generously, because a refused path is
// exactly one a client got wrong: the part after any segment that reads
// "t" once decoded (any case, up to four percent-encodings deep, with dots,
// spaces, control bytes or ";params" around it), whatever separates them
// (/, \, %2F, %5C, empty and dot segments), up to the next literal "/".
// A label or channel named "t" therefore has the segment after it
// redacted in the log; only the log line changes.

var (
	errBadPath      = newError(http.StatusBadRequest, "malformed request path")
	errBadTokenPath = newError(http.StatusBadRequest, "malformed /t/<token>/ path: a token path is /t/<token>/<channel path>")
	errTokenMethod  = newError(http.StatusMethodNotAllowed, "a /t/<token>/ path serves GET and HEAD only")
	errTokenRoute   = newError(http.StatusNotFound, "not found: a /t/<token>/ path serves the channel's files only")
)

// redacted replaces a secret in what the server logs and answers.
const redacted = "REDACTED"

// pathToken is the context key of the token of a /t/<token>/ prefix.
type pathToken struct{}

// pathSecrets is the context key of the redacted path and what was taken
// out of it.
type pathSecrets struct{}

type secrets struct {
	// logged is the path as logged and echoed.
	logged string
	// parts are the texts taken out, raw and decoded, for scrubbing
	// anything else that might hold them (a panic's value).
	parts []string
}

// logPath is the path as logged and echoed: a token is never in it.
func logPath(r *http.Request) string {
	if s, ok := r.Context().Value(pathSecrets{}).(*secrets); ok {
		return s.logged
	}
	return r.URL.Path
}

// hasPathToken reports whether r came with a /t/<token>/ prefix.
func hasPathToken(r *http.Request) bool {
	_, ok := r.Context().Value(pathToken{}).(string)
	return ok
}

// tokenRouteRefused reports whether r came with a /t/<token>/ prefix to
// an endpoint of another kind than the channel's downloads (ok is false
// if the route serves no endpoint for the method here): such requests get
// 404 (refuseTokenRoute), as if the path did not exist.
func tokenRouteRefused(r *http.Request, kind routeKind, ok bool) bool {
	return hasPathToken(r) && (!ok || kind != kindDownload)
}

// refuseTokenRoute answers what tokenRouteRefused refuses.
func (s *Server) refuseTokenRoute(kind routeKind) http.Handler {
	return s.handle(kind, func(http.ResponseWriter, *http.Request) (*Result, error) { return nil, errTokenRoute })
}

// guard refuses request paths that are not in canonical form before any
// route sees them, and takes a token given as a /t/<token>/ prefix out of
// the path, after redacting it from everything that logs the request.
//
// ServeMux would answer a non-canonical path with a redirect to its
// cleaned form, echoing a token in its Location; a path that needs
// cleaning is not one any client of a channel sends, so it is refused
// instead: dot segments, empty segments, backslashes, NUL and other
// control bytes, semicolons (as in "..;"), invalid UTF-8 (overlong
// encodings), and percent-encoded slashes or backslashes. What passes is
// checked again against the channel's allow-list, and opened through
// os.Root.
func (s *Server) guard(next http.Handler) http.Handler {
	next = s.bounded(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			// Here rather than where each answer is written, so that
			// every response over TLS has it: JSON, files, listings,
			// redirects, 304, 412 and 416 alike.
			w.Header().Set("Strict-Transport-Security", hsts)
		}
		r, sec := redact(r)
		defer s.recoverRedacted(r, sec)
		r, err := takeToken(r)
		if err != nil {
			s.handle(kindDownload, func(w http.ResponseWriter, _ *http.Request) (*Result, error) {
				if err == errTokenMethod {
					w.Header().Set("Allow", "GET, HEAD")
				}
				return nil, err
			}).ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// redact records the redacted path of r, if its path holds anything to
// redact, and drops the raw request line.
func redact(r *http.Request) (*http.Request, *secrets) {
	logged, parts := redactPath(r.URL.EscapedPath())
	if len(parts) == 0 {
		return r, nil
	}
	sec := &secrets{logged: logged, parts: parts}
	r = r.WithContext(context.WithValue(r.Context(), pathSecrets{}, sec))
	r.RequestURI = logged
	return r, sec
}

// takeToken takes the token out of a /t/<token>/<channel path> request,
// which must be otherwise canonical and a GET or HEAD, and refuses any
// other path that is not canonical.
func takeToken(r *http.Request) (*http.Request, error) {
	if !leadingT(r.URL.EscapedPath()) {
		if !cleanPath(r.URL) {
			return r, errBadPath
		}
		return r, nil
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/t/")
	tok, after, found := strings.Cut(rest, "/")
	if !ok || !found || tok == "" || !cleanPath(r.URL) {
		return r, errBadTokenPath
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return r, errTokenMethod
	}
	u := *r.URL
	u.Path, u.RawPath = "/"+after, ""
	sec := &secrets{logged: "/t/" + redacted + u.Path, parts: []string{tok}}
	if logged, parts := redactPath(u.Path); len(parts) > 0 {
		sec.logged = "/t/" + redacted + logged
	}
	ctx := context.WithValue(r.Context(), pathToken{}, tok)
	r = r.WithContext(context.WithValue(ctx, pathSecrets{}, sec))
	r.URL = &u
	return r, nil
}

// recoverRedacted logs a handler's panic with the path redacted and the
// secrets scrubbed from its value, and aborts the response the way
// net/http would, without net/http's own log line (which would print the
// value as it is).
func (s *Server) recoverRedacted(r *http.Request, sec *secrets) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	msg := fmt.Sprint(v)
	if sec != nil {
		for _, p := range sec.parts {
			if p != "" {
				msg = strings.ReplaceAll(msg, p, redacted)
			}
		}
	}
	s.o.Log.Error("panic serving a request", "method", r.Method, "path", logPath(r), "remote", r.RemoteAddr,
		"panic", oneLine(msg), "stack", string(debug.Stack()))
	panic(http.ErrAbortHandler)
}

// redactPath returns an escaped request path with every part that follows
// a "t" segment replaced, and the parts it took out (nil if none).
func redactPath(esc string) (string, []string) {
	segs := strings.Split(esc, "/")
	var parts []string
	afterT := false
	for i, seg := range segs {
		subs := strings.FieldsFunc(decodeFully(seg), func(c rune) bool { return c == '/' || c == '\\' })
		for j, sub := range subs {
			if afterT && trimSegment(sub) != "" {
				segs[i] = strings.Join(append(subs[:j:j], redacted), "/")
				parts = append(parts, seg, decodeFully(seg))
				afterT = false
				break
			}
			if strings.EqualFold(trimSegment(sub), "t") {
				afterT = true
			}
		}
	}
	if parts == nil {
		return esc, nil
	}
	return strings.Join(segs, "/"), parts
}

// leadingT reports whether the first segment of an escaped path that is
// not empty or dots reads "t": a token path, canonical or not.
func leadingT(esc string) bool {
	for _, seg := range strings.Split(esc, "/") {
		for _, sub := range strings.FieldsFunc(decodeFully(seg), func(c rune) bool { return c == '/' || c == '\\' }) {
			if t := trimSegment(sub); t != "" {
				return strings.EqualFold(t, "t")
			}
		}
	}
	return false
}

// decodeFully undoes percent-encoding, repeatedly, as a lax proxy or
// client might.
func decodeFully(s string) string {
	for range 4 {
		d, err := url.PathUnescape(s)
		if err != nil || d == s {
			break
		}
		s = d
	}
	return s
}

// trimSegment is a segment without ";params" and the dots, spaces and
// control bytes around it.
func trimSegment(s string) string {
	s, _, _ = strings.Cut(s, ";")
	return strings.TrimFunc(s, func(c rune) bool { return c == '.' || c <= ' ' || c == 0x7f })
}

// cleanPath reports whether a request path is in canonical form.
func cleanPath(u *url.URL) bool {
	raw := strings.ToLower(u.RawPath)
	if strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") || strings.Contains(raw, "%00") {
		return false
	}
	p := u.Path
	if !strings.HasPrefix(p, "/") || !utf8.ValidString(p) {
		return false
	}
	parts := strings.Split(p[1:], "/")
	for i, part := range parts {
		if (part == "" && i != len(parts)-1) || part == "." || part == ".." {
			return false
		}
		for _, c := range []byte(part) {
			if c < 0x20 || c == 0x7f || c == '\\' || c == ';' {
				return false
			}
		}
	}
	return true
}

// hsts is the Strict-Transport-Security of every response over TLS,
// set by guard before anything else answers.
const hsts = "max-age=31536000"
