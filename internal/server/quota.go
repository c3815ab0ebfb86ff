package server

import (
	"net/http"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// reserveQuota is publish's quota step: it reserves the package's size in
// its label's quota and its uploader's bytes for today, before the
// package is published; the body so far is only a temp file, removed on
// refusal. The returned function settles the reservation once the
// publish step knows its outcome.
func (s *Server) reserveQuota(pub *publication) (settle func(err error), err error) {
	res, err := s.o.Quota.Reserve(pub.label, pub.token.Name, pub.in.sums.Size)
	if err != nil {
		return nil, err
	}
	return func(err error) {
		if err != nil || pub.outcome == store.Identical {
			res.Release()
			return
		}
		res.Stored()
	}, nil
}

// quotaPrecheck refuses, before the body is read, an upload to label by
// token that the quotas refuse already: at least one byte more, or, for
// a raw body (quetz, Artifactory), its Content-Length. The publish step
// checks again with the package's own size, and reserves it.
func (s *Server) quotaPrecheck(r *http.Request, label string, token auth.Token) error {
	size := int64(1)
	if p := fieldsOf(r).protocol; r.ContentLength > 0 && (p == "quetz" || p == "artifactory") {
		size = r.ContentLength
	}
	return s.o.Quota.Check(label, token.Name, size)
}

// quotas: GET /api/v1/quotas, the usage of every quota (scope read).
func (s *Server) quotas(w http.ResponseWriter, r *http.Request) (*Result, error) {
	if _, err := s.authorize(r, auth.ScopeRead); err != nil {
		return nil, err
	}
	u := s.o.Quota.Usage()
	return &Result{Status: http.StatusOK, Body: map[string]any{"labels": u.Labels, "uploaders": u.Uploaders, "status": http.StatusOK}}, nil
}
