package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/attest"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/form"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/proxy"
	"github.com/conda-upload-server/conda-upload-server/internal/quota"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/web"
)

// Error is how a request failed: the status and one-line message the
// client gets, a reason word for logs, metrics and the audit log, and the
// cause, which is logged but never sent.
type Error struct {
	Status int
	// Reason is one word from a fixed set, such as "conflict".
	Reason string
	Msg    string
	// RetryAfter, if set, is sent as Retry-After (for 429 and 503).
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// newError returns an Error whose reason follows from its status.
func newError(status int, msg string) *Error {
	return &Error{Status: status, Reason: reasonOf(status), Msg: msg}
}

var (
	errUnauthorized = newError(http.StatusUnauthorized, "missing or invalid token")
	errShuttingDown = &Error{Status: http.StatusServiceUnavailable, Reason: "unavailable", Msg: "server is shutting down", RetryAfter: 5 * time.Second}
	errBusy         = &Error{Status: http.StatusServiceUnavailable, Reason: "unavailable", Msg: "too many uploads in progress; retry later", RetryAfter: 5 * time.Second}
	errTooManyConns = &Error{Status: http.StatusServiceUnavailable, Reason: "unavailable", Msg: "too many connections; retry later", RetryAfter: 5 * time.Second}
	errNotFound     = newError(http.StatusNotFound, "not found; upload with POST /")
)

// notIndexed is the error of an upload whose package is stored but whose
// index run failed: the package is safe, the index does not list it yet.
func notIndexed(err error) *Error {
	return &Error{Status: http.StatusInternalServerError, Reason: "index_failed",
		Msg: "package stored, but indexing failed: " + oneLine(err.Error()), Err: err}
}

// errorOf maps any error a handler returns to what the client gets. It is
// the one place where errors become HTTP statuses; an error classify does
// not know is a 500 whose cause is logged, not sent.
func errorOf(err error) *Error {
	e, _ := classify(err)
	return e
}

// classify is the one list of the errors the server knows: it returns
// what the client gets for err, and whether err is one of them.
func classify(err error) (_ *Error, known bool) {
	var e *Error
	var mbe *http.MaxBytesError
	var pe *proxy.Error
	var full *quota.LabelFull
	var daily *quota.DailyExceeded
	switch {
	case errors.As(err, &e):
		return e, true
	case errors.As(err, &pe):
		return &Error{Status: pe.Status, Reason: reasonOf(pe.Status), Msg: pe.Msg, Err: err}, true
	case condapkg.IsInvalid(err):
		return &Error{Status: http.StatusBadRequest, Reason: "invalid_package", Msg: err.Error(), Err: err}, true
	case errors.Is(err, lifecycle.ErrNoPackage) || errors.Is(err, lifecycle.ErrNoLabel) || errors.Is(err, lifecycle.ErrNoPatch):
		return &Error{Status: http.StatusNotFound, Reason: "not_found", Msg: err.Error(), Err: err}, true
	case attest.IsRefused(err):
		return &Error{Status: http.StatusBadRequest, Reason: "attestation_refused", Msg: oneLine(err.Error()) + "; nothing stored", Err: err}, true
	case errors.Is(err, sidecar.ErrNameTooLong):
		return &Error{Status: http.StatusBadRequest, Reason: "bad_request", Msg: sidecar.ErrNameTooLong.Error() + "; nothing stored", Err: err}, true
	case errors.Is(err, sidecar.ErrTooLarge):
		return &Error{Status: http.StatusRequestEntityTooLarge, Reason: "too_large", Msg: sidecar.ErrTooLarge.Error() + "; not added", Err: err}, true
	case errors.Is(err, store.ErrExists):
		return &Error{Status: http.StatusConflict, Reason: "conflict", Msg: err.Error(), Err: err}, true
	case errors.Is(err, store.ErrTooLarge) || errors.As(err, &mbe):
		return &Error{Status: http.StatusRequestEntityTooLarge, Reason: "too_large", Msg: "upload exceeds max_upload_size", Err: err}, true
	case errors.Is(err, errTooSlow):
		return &Error{Status: http.StatusRequestTimeout, Reason: "too_slow", Msg: "upload slower than the server's minimum rate; closed", Err: err}, true
	case errors.As(err, &full):
		return &Error{Status: http.StatusInsufficientStorage, Reason: "quota_exceeded", Msg: full.Error() + "; nothing stored", Err: err}, true
	case errors.As(err, &daily):
		return &Error{Status: http.StatusTooManyRequests, Reason: "quota_exceeded", Msg: daily.Error() + "; nothing stored",
			RetryAfter: time.Until(daily.Reset), Err: err}, true
	case store.IsNoSpace(err):
		return &Error{Status: http.StatusInsufficientStorage, Reason: "no_space", Msg: "no space left in the channel's file system", Err: err}, true
	case errors.As(err, new(*store.WriteError)):
		return &Error{Status: http.StatusInternalServerError, Reason: "internal_error", Msg: "internal error", Err: err}, true
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Status: http.StatusBadRequest, Reason: "bad_request", Msg: "request body ended before the multipart form was complete", Err: err}, true
	case form.IsMalformed(err):
		return &Error{Status: http.StatusBadRequest, Reason: "bad_request", Msg: oneLine(err.Error()), Err: err}, true
	case errors.As(err, new(web.BadRequest)):
		return &Error{Status: http.StatusBadRequest, Reason: "bad_request", Msg: oneLine(err.Error()), Err: err}, true
	case errors.As(err, new(*bodyError)):
		return &Error{Status: http.StatusBadRequest, Reason: "bad_request", Msg: "cannot read request body: " + oneLine(errors.Unwrap(err).Error()), Err: err}, true
	}
	return &Error{Status: http.StatusInternalServerError, Reason: "internal_error", Msg: "internal error", Err: err}, false
}

// bodyError marks a failure to read the request body that classify does
// not otherwise know: the client's connection, not the server, failed.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "read body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// readError wraps an error from reading the request body, once, where it
// happens: an error classify knows keeps its meaning, any other is the
// client's connection failing.
func readError(err error) error {
	if err == nil {
		return nil
	}
	if _, known := classify(err); known {
		return err
	}
	return &bodyError{err}
}

// reasonOf names the outcome of a request with a given status, from a
// fixed set of words, where nothing more precise is known.
func reasonOf(status int) string {
	switch status {
	case http.StatusCreated:
		return "created"
	case http.StatusOK:
		return "identical"
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusRequestTimeout:
		return "too_slow"
	case http.StatusConflict:
		return "conflict"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusUnsupportedMediaType:
		return "bad_request"
	case http.StatusTooManyRequests:
		return "rate_limited"
	case http.StatusInternalServerError:
		return "internal_error"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusInsufficientStorage:
		return "no_space"
	case http.StatusBadGateway:
		return "upstream_error"
	case http.StatusGatewayTimeout:
		return "upstream_timeout"
	}
	return "other"
}

func retryAfterHeader(d time.Duration) string {
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.Itoa(s)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// methodNotAllowed is the error for a method a route does not serve.
func methodNotAllowed(allow string) *Error {
	return newError(http.StatusMethodNotAllowed, fmt.Sprintf("method not allowed; use %s", allow))
}
