package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// StartWriteback asks the kernel to start writing the n bytes of f at off
// to disk, without waiting for it: a later fsync then has little left to
// wait for. It is advice, and failures are ignored.
func StartWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}
