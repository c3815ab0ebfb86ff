package atomicfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// StartWriteback asks the kernel to start writing n bytes of f from off
// to the disk, and returns without waiting (n = 0: to the end of the
// file). It is a hint that makes a later fsync cheap, so its error is not
// final.
func StartWriteback(f *os.File, off, n int64) error {
	return unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// Datasync makes f's data durable, and of its metadata only what is needed
// to read the data back (fdatasync(2)).
func Datasync(f *os.File) error {
	return unix.Fdatasync(int(f.Fd()))
}

// SyncFS makes every file of the file system that holds f durable, in one
// call (syncfs(2)): cheaper than an fsync per file when many were written.
func SyncFS(f *os.File) error {
	return unix.Syncfs(int(f.Fd()))
}
