//go:build !linux

package repodata

import (
	"errors"
	"fmt"
	"runtime"
)

// scanDir is Linux only: it parses getdents(2) records.
func scanDir(dir string, buf *[]byte, f func(name []byte, maybeFile bool)) error {
	return fmt.Errorf("list %s: getdents: %w on %s: conda-upload-server runs on Linux only", dir, errors.ErrUnsupported, runtime.GOOS)
}
