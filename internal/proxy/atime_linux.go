package proxy

import (
	"io/fs"
	"syscall"
	"time"
)

// lastUse is when a cached package was last used: its access time, which
// the cache writes (lru.use) and the kernel may move too; its mtime stays
// the time it was cached, so that its validators never change.
func lastUse(fi fs.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Atim.Unix())
	}
	return fi.ModTime()
}
