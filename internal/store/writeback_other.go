//go:build !linux

package store

import "os"

// StartWriteback asks the system to start writing the n bytes of f at off
// to disk; only Linux can be asked, and elsewhere it does nothing.
func StartWriteback(f *os.File, off, n int64) {}
