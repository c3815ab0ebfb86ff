//go:build !linux

package sandbox

import (
	"errors"
	"fmt"
	"runtime"
)

// NoNewPrivs is Linux only (prctl(PR_SET_NO_NEW_PRIVS)). The daemon's
// confine phase calls it before it serves anything, so that on another
// system the daemon stops there and says why.
func NoNewPrivs() error {
	return fmt.Errorf("no_new_privs: %w on %s: conda-upload-server runs on Linux only", errors.ErrUnsupported, runtime.GOOS)
}
