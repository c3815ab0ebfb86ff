//go:build !linux

package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

// StartWriteback is Linux only (sync_file_range(2)).
func StartWriteback(f *os.File, off, n int64) error { return unsupported("sync_file_range") }

// Datasync is Linux only (fdatasync(2)).
func Datasync(f *os.File) error { return unsupported("fdatasync") }

// SyncFS is Linux only (syncfs(2)).
func SyncFS(f *os.File) error { return unsupported("syncfs") }

func unsupported(call string) error {
	return fmt.Errorf("%s: %w on %s: conda-upload-server runs on Linux only", call, errors.ErrUnsupported, runtime.GOOS)
}
