//go:build !windows && !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || illumos)

package store

import (
	"io/fs"
	"os"
)

// tempLocks: this platform has no flock; the cleaner only removes temp files
// older than staleTempAge.
const tempLocks = false

// renameOpen: rename temp files while they are still open.
const renameOpen = true

// tryLock always succeeds: without flock, index.json updates are serialized
// inside the process only. Do not share a layout between processes here.
func tryLock(*os.File) (bool, error) { return true, nil }

// unlock is a no-op, like tryLock.
func unlock(*os.File) error { return nil }

// syncDir makes a rename in dir durable where the platform allows it.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	_ = d.Sync() // best effort: not every platform can fsync a directory
	return nil
}

// fileID is 0: the cache fingerprint relies on size, mtime and the
// generation counter.
func fileID(fs.FileInfo) uint64 { return 0 }

// rename replaces newpath with oldpath atomically.
func rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }
