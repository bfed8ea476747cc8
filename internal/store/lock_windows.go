//go:build windows

package store

import (
	"errors"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/windows"
)

// tempLocks: on Windows temp files are not locked; a file that another
// process holds open cannot be removed anyway, and the cleaner only removes
// temp files older than staleTempAge.
const tempLocks = false

// renameOpen: Windows cannot rename a file that is still open without
// FILE_SHARE_DELETE, so temp files are closed first.
const renameOpen = false

// tryLock takes an exclusive lock on f without waiting (LockFileEx). It
// reports false when another handle holds one.
func tryLock(f *os.File) (bool, error) {
	ol := new(windows.Overlapped)
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, windows.ERROR_LOCK_VIOLATION), errors.Is(err, windows.ERROR_IO_PENDING):
		return false, nil
	default:
		return false, &fs.PathError{Op: "LockFileEx", Path: f.Name(), Err: err}
	}
}

// unlock releases the lock taken by tryLock. Closing f releases it too.
func unlock(f *os.File) error {
	ol := new(windows.Overlapped)
	return windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, ol)
}

// syncDir is a no-op: Windows cannot fsync a directory, and NTFS journals
// renames itself.
func syncDir(string) error { return nil }

// fileID is 0 on Windows; the cache fingerprint relies on size, mtime and
// the generation counter there.
func fileID(fs.FileInfo) uint64 { return 0 }

// rename replaces newpath with oldpath. Windows refuses while another
// handle (a reader of index.json, say) has newpath open, so it retries for
// about a second before giving up.
func rename(oldpath, newpath string) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = os.Rename(oldpath, newpath); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}
