package server

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/audit"
	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
)

// Trusted publishing: a CI job presents the ID token its CI system signs
// for it, and gets what its trusted publisher allows. Three ways in:
// POST /api/oidc/mint_token (rattler-build and pixi: the response body is
// the token, as plain text), GET /_/oidc/audience and POST
// /_/oidc/mint-token (named as in PEP 807, JSON), and the ID token itself
// as the Bearer token of an upload.

// oidcToken authenticates a presented token that is not a configured
// one: a token minted here, or an ID token.
func (s *Server) oidcToken(r *http.Request, presented string, lf *logFields) (auth.Token, bool, error) {
	v := s.o.Trusted
	if v == nil {
		return auth.Token{}, false, nil
	}
	if id, ok := v.Lookup(presented); ok {
		s.noteIdentity(lf, id)
		return id.Token, true, nil
	}
	if !trusted.LooksLikeJWT(presented) {
		return auth.Token{}, false, nil
	}
	id, err := s.verifyJWT(r, presented)
	if err != nil {
		return auth.Token{}, true, err
	}
	s.noteIdentity(lf, id)
	return id.Token, true, nil
}

func (s *Server) noteIdentity(lf *logFields, id trusted.Identity) {
	lf.token = id.Token.Name
	lf.oidc = &audit.OIDC{Publisher: id.Publisher, Repository: id.Repository, Ref: id.Ref, SHA: id.SHA}
	lf.signers = jobSigners(id)
}

// verifyJWT verifies an ID token; a refusal is a 401 whose reason is
// logged and sent, and keys that cannot be had a 503.
func (s *Server) verifyJWT(r *http.Request, raw string) (trusted.Identity, error) {
	id, err := s.o.Trusted.Verify(r.Context(), raw)
	var ke *trusted.KeysError
	switch {
	case errors.As(err, &ke):
		s.o.Observe.Metrics.OIDCToken("", "unverifiable")
		return id, &Error{Status: http.StatusServiceUnavailable, Reason: "oidc_keys_unavailable", Msg: oneLine(err.Error()), RetryAfter: 30 * time.Second, Err: err}
	case err != nil:
		s.o.Observe.Metrics.OIDCToken("", "refused")
		return id, &Error{Status: http.StatusUnauthorized, Reason: "unauthorized", Msg: oneLine(err.Error()), Err: err}
	}
	s.o.Observe.Metrics.OIDCToken(id.Publisher, "accepted")
	return id, nil
}

// readJWT reads {"token": "<JWT>"} from a mint request.
func readJWT(r *http.Request) (string, error) {
	var body struct {
		Token string `json:"token"`
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
	if err != nil {
		return "", readError(err)
	}
	if len(b) > 64<<10 {
		return "", newError(http.StatusRequestEntityTooLarge, "mint request over 64 KiB")
	}
	// The reason is not echoed: it could quote a credential sent in the
	// wrong place.
	if err := decodeJSON(b, &body); err != nil || body.Token == "" {
		return "", newError(http.StatusBadRequest, `mint request must be JSON {"token": "<OIDC ID token>"}, with that one key exactly`)
	}
	return body.Token, nil
}

// mint verifies the ID token of a mint request and mints a token for it.
func (s *Server) mint(w http.ResponseWriter, r *http.Request) (string, time.Time, error) {
	if s.o.Trusted == nil {
		return "", time.Time{}, newError(http.StatusNotFound, "trusted publishing is not configured on this server")
	}
	ip := remoteIP(r)
	if wait, blocked := s.o.Limits.AuthLimiter.Blocked(ip, time.Now()); blocked {
		return "", time.Time{}, &Error{Status: http.StatusTooManyRequests, Reason: "rate_limited",
			Msg: "too many failed authentications from this address; retry later", RetryAfter: wait}
	}
	raw, err := readJWT(r)
	if err != nil {
		return "", time.Time{}, err
	}
	id, err := s.verifyJWT(r, raw)
	if err != nil {
		if errorOf(err).Status == http.StatusUnauthorized {
			s.o.Limits.AuthLimiter.Fail(ip, time.Now())
			s.authFailures.Add(1)
		}
		return "", time.Time{}, err
	}
	lf := fieldsOf(r)
	s.noteIdentity(lf, id)
	tok, exp := s.o.Trusted.Mint(id)
	s.o.Log.Info("token minted for a trusted publisher", "publisher", id.Publisher, "repository", id.Repository,
		"ref", id.Ref, "sha", id.SHA, "expires", exp.UTC().Format(time.RFC3339))
	return tok, exp, nil
}

// mintToken is rattler's endpoint: the response body is the token.
func (s *Server) mintToken(w http.ResponseWriter, r *http.Request) (*Result, error) {
	tok, _, err := s.mint(w, r)
	if err != nil {
		return nil, err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, tok)
	return handled, nil
}

// pepMintToken is PEP 807's POST /_/oidc/mint-token.
func (s *Server) pepMintToken(w http.ResponseWriter, r *http.Request) (*Result, error) {
	tok, exp, err := s.mint(w, r)
	if err != nil {
		return nil, err
	}
	return &Result{Status: http.StatusOK, Body: map[string]any{"success": true, "token": tok, "expires": exp.Unix()}}, nil
}

// audience is PEP 807's GET /_/oidc/audience.
func (s *Server) audience(w http.ResponseWriter, r *http.Request) (*Result, error) {
	if s.o.Trusted == nil {
		return nil, newError(http.StatusNotFound, "trusted publishing is not configured on this server")
	}
	return &Result{Status: http.StatusOK, Body: map[string]any{"audience": s.o.Trusted.Audience()}}, nil
}
