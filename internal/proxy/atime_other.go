//go:build !linux

package proxy

import (
	"io/fs"
	"time"
)

// lastUse is the mtime where the access time is not read (Linux only).
func lastUse(fi fs.FileInfo) time.Time { return fi.ModTime() }
