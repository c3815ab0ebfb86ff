//go:build !linux

package index

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
)

// ownGroup is Linux only: the child is tied to the server by the
// parent-death signal (PR_SET_PDEATHSIG).
func ownGroup(cmd *exec.Cmd) error {
	return fmt.Errorf("index child: parent-death signal: %w on %s: conda-upload-server runs on Linux only", errors.ErrUnsupported, runtime.GOOS)
}
