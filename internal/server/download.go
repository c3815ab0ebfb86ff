package server

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/channel"
	"github.com/conda-upload-server/conda-upload-server/internal/stats"
	"github.com/conda-upload-server/conda-upload-server/internal/web"
)

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
	if wait, blocked := s.o.Limits.AuthLimiter.Blocked(ip, time.Now()); blocked {
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
				s.o.Limits.AuthLimiter.Fail(ip, time.Now())
				s.authFailures.Add(1)
				s.o.Observe.Metrics.AuthFailure()
			}
		}
		return auth.Token{}, err
	}
	if !t.Can(scope) {
		return auth.Token{}, newError(http.StatusForbidden, fmt.Sprintf("token %q does not have the %s scope", t.Name, scope))
	}
	return t, nil
}

// admitDownload checks a download's token, when downloads need one, and
// takes a download slot for it.
func (s *Server) admitDownload(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, func(), error) {
	if s.o.Channel.TokenDownloads {
		if err := s.authorizeRead(r); err != nil {
			if errorOf(err).Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Basic realm="conda channel", charset="UTF-8"`)
			}
			return w, nil, err
		}
	}
	return s.startDownload(w, r)
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
	// A page checks the token only; it then shows what the token's
	// labels and subdirs allow, where a file or listing is refused.
	pages := s.o.Channel.Pages != nil && web.Wants(r)
	var acc web.Access
	if s.o.Channel.TokenDownloads {
		var err error
		if pages {
			acc, err = s.pageAccess(r)
		} else {
			err = s.authorizeRead(r)
		}
		if err != nil {
			if errorOf(err).Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Basic realm="conda channel", charset="UTF-8"`)
			}
			return nil, err
		}
	}
	if pages {
		return s.page(w, r, acc)
	}
	w, release, err := s.startDownload(w, r)
	if err != nil {
		return nil, err
	}
	defer release()
	err = s.o.Channel.Files.Serve(w, r, strings.TrimPrefix(r.URL.Path, "/"))
	if errors.Is(err, channel.ErrNotFound) {
		return nil, newError(http.StatusNotFound, "not found: "+oneLine(logPath(r)))
	}
	if err != nil {
		return nil, err
	}
	return handled, nil
}

// pageAccess checks a page request's read token and returns what its
// pages may show.
func (s *Server) pageAccess(r *http.Request) (web.Access, error) {
	t, err := s.authorize(r, auth.ScopeRead)
	return web.Access{Labels: t.Labels, Subdirs: t.Subdirs}, err
}

// page serves one of the channel's pages.
func (s *Server) page(w http.ResponseWriter, r *http.Request, acc web.Access) (*Result, error) {
	err := s.o.Channel.Pages.Serve(w, r, acc)
	if errors.Is(err, web.ErrNotFound) {
		return nil, newError(http.StatusNotFound, "not found: "+oneLine(logPath(r)))
	}
	if err != nil {
		return nil, err
	}
	return handled, nil
}

// countDownload counts a package GET answered 200 or 206; HEAD, 304
// and everything else are not downloads.
func (s *Server) countDownload(r *http.Request, status int) {
	if s.o.Channel.Stats == nil || r.Method != http.MethodGet || (status != http.StatusOK && status != http.StatusPartialContent) {
		return
	}
	if file, ok := stats.Countable(strings.TrimPrefix(r.URL.Path, "/")); ok {
		s.o.Channel.Stats.Record(file, remoteIP(r), status == http.StatusPartialContent, time.Now())
	}
}
