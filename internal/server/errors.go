package server

import (
	"errors"
	"net/http"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// httpError is an error with the status and one-line message the client
// gets. Handlers return it, or any error that statusOf knows; everything
// else is a 500 whose detail is logged, not sent.
type httpError struct {
	status     int
	msg        string
	retryAfter string // seconds, for 429 and 503
}

func (e *httpError) Error() string { return e.msg }

func errStatus(status int, msg string) *httpError { return &httpError{status: status, msg: msg} }

var (
	errUnauthorized = errStatus(http.StatusUnauthorized, "missing or invalid token")
	errShuttingDown = &httpError{status: http.StatusServiceUnavailable, msg: "server is shutting down", retryAfter: "5"}
	errBusy         = &httpError{status: http.StatusServiceUnavailable, msg: "too many uploads in progress; retry later", retryAfter: "5"}
	// errHandled says the handler has written its own response.
	errHandled      = &httpError{status: 0, msg: "handled"}
	errTooManyConns = &httpError{status: http.StatusServiceUnavailable, msg: "too many connections; retry later", retryAfter: "5"}
)

// statusOf maps an error to the status and message sent to the client.
// It is the one place where errors become HTTP statuses.
func statusOf(err error) (int, string, string) {
	var he *httpError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		return he.status, he.msg, he.retryAfter
	case condapkg.IsInvalid(err):
		return http.StatusBadRequest, err.Error(), ""
	case errors.Is(err, store.ErrExists):
		return http.StatusConflict, err.Error(), ""
	case errors.Is(err, store.ErrTooLarge) || errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "upload exceeds max_upload_size", ""
	case errors.Is(err, errTooSlow):
		return http.StatusRequestTimeout, "upload slower than the server's minimum rate; closed", ""
	case store.IsNoSpace(err):
		return http.StatusInsufficientStorage, "no space left in the channel's file system", ""
	}
	return http.StatusInternalServerError, "internal error", ""
}
