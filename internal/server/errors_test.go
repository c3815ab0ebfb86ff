package server

import (
	"errors"
	"fmt"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
	"io"
	"net/http"
	"syscall"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/form"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// TestClassify: each known error, wrapped as the code wraps it, becomes
// its status and reason; readError keeps a known error as it is and marks
// any other as the client's connection failing.
func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("context: %w", err) }
	connReset := errors.New("connection reset by peer")
	for _, tt := range []struct {
		name   string
		err    error
		status int
		reason string
		known  bool
	}{
		{"server error", errBusy, 503, "unavailable", true},
		{"wrapped server error", wrap(errUnauthorized), 401, "unauthorized", true},
		{"invalid package", wrap(&condapkg.Error{Reason: "no info/index.json"}), 400, "invalid_package", true},
		{"no such package", wrap(lifecycle.ErrNoPackage), 404, "not_found", true},
		{"no such label", lifecycle.ErrNoLabel, 404, "not_found", true},
		{"no such patch", lifecycle.ErrNoPatch, 404, "not_found", true},
		{"exists", wrap(store.ErrExists), 409, "conflict", true},
		{"too large", store.ErrTooLarge, 413, "too_large", true},
		{"name too long for a sidecar", wrap(sidecar.ErrNameTooLong), 400, "bad_request", true},
		{"body over MaxBytesReader", wrap(&http.MaxBytesError{Limit: 1}), 413, "too_large", true},
		{"too slow", wrap(errTooSlow), 408, "too_slow", true},
		{"no space", wrap(syscall.ENOSPC), 507, "no_space", true},
		{"quota", syscall.EDQUOT, 507, "no_space", true},
		{"write failure", &store.WriteError{Err: syscall.EIO}, 500, "internal_error", true},
		{"body cut short", wrap(io.ErrUnexpectedEOF), 400, "bad_request", true},
		{"malformed form", wrap(&form.Error{}), 400, "bad_request", true},
		{"body read failure", &bodyError{connReset}, 400, "bad_request", true},
		{"unknown", connReset, 500, "internal_error", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, known := classify(tt.err)
			if e.Status != tt.status || e.Reason != tt.reason || known != tt.known {
				t.Errorf("classify = %d %s %v, want %d %s %v", e.Status, e.Reason, known, tt.status, tt.reason, tt.known)
			}
			if got := errorOf(tt.err); got.Status != tt.status || got.Reason != tt.reason {
				t.Errorf("errorOf = %d %s, want %d %s", got.Status, got.Reason, tt.status, tt.reason)
			}
			read := readError(tt.err)
			var be *bodyError
			if wrapped := errors.As(read, &be) && !errors.As(tt.err, new(*bodyError)); wrapped == tt.known {
				t.Errorf("readError(%v) = %v: wrapped %v, known %v", tt.err, read, wrapped, tt.known)
			}
			if !tt.known && errorOf(read).Status != http.StatusBadRequest {
				t.Errorf("an unknown error read from the body is %d, want 400", errorOf(read).Status)
			}
		})
	}
	if readError(nil) != nil {
		t.Error("readError(nil) is not nil")
	}
}
