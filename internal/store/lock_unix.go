//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly || illumos

package store

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// tempLocks: writers hold an exclusive flock on each temp file while they
// write it, and the cleaner removes only temp files it can lock. flock locks
// belong to an open file description, so two Stores in one process exclude
// each other just as two processes do.
const tempLocks = true

// renameOpen: a temp file is renamed while still open (and locked), so that
// the cleaner cannot take it between close and rename.
const renameOpen = true

// tryLock takes an exclusive lock on f without waiting. It reports false
// when another open file description holds one.
func tryLock(f *os.File) (bool, error) {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK), errors.Is(err, syscall.EAGAIN):
			return false, nil
		default:
			return false, &fs.PathError{Op: "flock", Path: f.Name(), Err: err}
		}
	}
}

// unlock releases the lock taken by tryLock. Closing f releases it too.
func unlock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// syncDir makes a rename or create in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		// Some file systems (and some FUSE mounts) cannot fsync a directory;
		// that is not a reason to fail a write that already happened.
		return &fs.PathError{Op: "fsync", Path: dir, Err: err}
	}
	return nil
}

// fileID identifies the file behind fi (its inode), so that a replaced
// index.json is noticed even when size and mtime are unchanged.
func fileID(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}

// rename replaces newpath with oldpath atomically.
func rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }
