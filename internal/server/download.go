package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/channel"
)

var errBadPath = newError(http.StatusBadRequest, "malformed request path")

// hsts is the Strict-Transport-Security of every response over TLS.
const hsts = "max-age=31536000"

// guard refuses request paths that are not in canonical form before any
// route sees them, and takes a token given as a /t/<token>/ prefix (the
// form conda, anaconda.org and quetz use) out of the path.
//
// ServeMux would answer a non-canonical path with a redirect to its
// cleaned form; a path that needs cleaning is not one any client of a
// channel sends, so it is refused instead: dot segments, empty segments,
// backslashes, NUL and other control bytes, semicolons (as in "..;"),
// invalid UTF-8 (overlong encodings), and percent-encoded slashes or
// backslashes. What passes is checked again against the channel's
// allow-list, and opened through os.Root.
func (s *Server) guard(next http.Handler) http.Handler {
	refuse := s.handle(func(http.ResponseWriter, *http.Request) (*Result, error) { return nil, errBadPath })
	next = s.bounded(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			// Here rather than where each answer is written, so that
			// every response over TLS has it: JSON, files, listings,
			// redirects, 304, 412 and 416 alike.
			w.Header().Set("Strict-Transport-Security", hsts)
		}
		if !cleanPath(r.URL) {
			refuse.ServeHTTP(w, r)
			return
		}
		if rest, ok := strings.CutPrefix(r.URL.Path, "/t/"); ok {
			tok, after, found := strings.Cut(rest, "/")
			if !found || tok == "" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
				refuse.ServeHTTP(w, r)
				return
			}
			u := *r.URL
			u.Path, u.RawPath = "/"+after, ""
			r = r.WithContext(context.WithValue(r.Context(), pathToken{}, tok))
			r.URL = &u
		}
		next.ServeHTTP(w, r)
	})
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

// credentials returns the token a request presents, in any of the forms
// clients send: Authorization: Bearer, HTTP Basic with the token as the
// password (or as the user name, if the password is empty), or a /t/
// prefix. Scheme names are case-insensitive (RFC 9110 §11.1).
func credentials(r *http.Request) (token string, present bool, err error) {
	if t, ok := r.Context().Value(pathToken{}).(string); ok {
		return t, true, nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false, nil
	}
	scheme, param, _ := strings.Cut(strings.TrimSpace(h), " ")
	param = strings.TrimSpace(param)
	switch strings.ToLower(scheme) {
	case "bearer":
		return param, true, nil
	case "basic":
		b, err := base64.StdEncoding.DecodeString(param)
		if err != nil {
			return "", true, newError(http.StatusUnauthorized, "Authorization: Basic credentials are not valid base64")
		}
		user, pass, _ := strings.Cut(string(b), ":")
		if pass == "" {
			pass = user
		}
		return pass, true, nil
	}
	return "", true, newError(http.StatusUnauthorized, `Authorization must be "Bearer <token>" or "Basic <base64 of user:token>"`)
}

// authorize checks that a request presents a token with scope, counting
// wrong tokens against the address's failed-authentication limit.
func (s *Server) authorize(r *http.Request, scope string) (auth.Token, error) {
	lf := fieldsOf(r)
	ip := remoteIP(r)
	if wait, blocked := s.o.AuthLimiter.Blocked(ip, time.Now()); blocked {
		return auth.Token{}, &Error{Status: http.StatusTooManyRequests, Reason: "rate_limited",
			Msg: "too many failed authentications from this address; retry later", RetryAfter: wait}
	}
	tok, present, err := credentials(r)
	if err == nil && !present {
		err = errUnauthorized
	}
	var t auth.Token
	if err == nil {
		t, err = s.checkToken(r, strings.TrimSpace(tok), lf)
	}
	if err != nil {
		if errorOf(err).Status == http.StatusUnauthorized {
			if present {
				s.o.AuthLimiter.Fail(ip, time.Now())
				s.authFailures.Add(1)
				s.o.Metrics.AuthFailure()
			}
		}
		return auth.Token{}, err
	}
	if !t.Can(scope) {
		return auth.Token{}, newError(http.StatusForbidden, fmt.Sprintf("token %q does not have the %s scope", t.Name, scope))
	}
	return t, nil
}

// download serves the channel's public files and listings.
func (s *Server) download(w http.ResponseWriter, r *http.Request) (*Result, error) {
	if !s.downloads() {
		if r.URL.Path == "/" {
			w.Header().Set("Allow", http.MethodPost)
			return nil, methodNotAllowed("POST")
		}
		return nil, errNotFound
	}
	if s.o.TokenDownloads {
		if _, err := s.authorize(r, auth.ScopeRead); err != nil {
			if errorOf(err).Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Basic realm="conda channel", charset="UTF-8"`)
			}
			return nil, err
		}
	}
	w, release, err := s.startDownload(w, r)
	if err != nil {
		return nil, err
	}
	defer release()
	err = s.o.Channel.Serve(w, r, strings.TrimPrefix(r.URL.Path, "/"))
	if errors.Is(err, channel.ErrNotFound) {
		return nil, newError(http.StatusNotFound, "not found: "+oneLine(r.URL.Path))
	}
	if err != nil {
		return nil, err
	}
	return handled, nil
}
