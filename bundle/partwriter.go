package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/ferry-oci/ferry/internal/store"
)

// partWriter holds a bundle's tar stream while it is written: one file,
// or parts of exactly split bytes each but the last. Writes land at their
// offsets in the stream (WriteAt), so entries can be written at once, each
// into the space reserved for it. The writer marks each range Done once
// its bytes are final, and a goroutine reads back the stream's done prefix
// and hashes each part in order, on another core while later entries are
// still arriving. Files are written under temporary names and get their
// final names in commit; abort removes them.
type partWriter struct {
	dir, base string
	split     int64 // 0: one file

	mu      sync.Mutex
	parts   []*writtenPart
	prefix  int64           // every byte before it is done
	pending map[int64]int64 // done ranges past prefix: start → end
	closed  bool            // nothing more will be done
	wake    chan struct{}   // (one slot) prefix moved, or closed
	moved   chan struct{}   // closed, and replaced, when prefix moves
	stop    atomic.Bool     // abort: the hasher stops at once
	hashed  chan struct{}   // closed when the hasher returns; nil before it starts
	hashErr error           // why the hasher stopped early
}

type writtenPart struct {
	name string // final name, relative to dir
	tmp  *os.File
	h    hash.Hash // SHA-256 of the part, written by the hasher only
	// flushed: the hasher has started writeback up to here.
	flushed int64
	sum     string
}

// hashChunk is what the hasher reads back at once, and writebackChunk
// what it has written to disk at once.
const (
	hashChunk      = 1 << 20
	writebackChunk = 16 << 20
)

func newPartWriter(path string, split int64) (*partWriter, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" || base == "." || base == ".." {
		return nil, fmt.Errorf("bundle file %q: give a file name", path)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("bundle file %s is a directory: give a file name, such as %s", path, filepath.Join(path, "images.tar"))
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("bundle file %s: %w", path, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("bundle file %s: %s is not a directory", path, dir)
	}
	return &partWriter{dir: filepath.Clean(dir), base: base, split: split, pending: map[int64]int64{}, wake: make(chan struct{}, 1), moved: make(chan struct{})}, nil
}

// span returns the part holding offset off of the stream, where off is in
// it, and how many bytes of the part follow. It creates the part, and any
// before it, when they are not there yet.
func (w *partWriter) span(off int64) (*writtenPart, int64, int64, error) {
	i, at, room := 0, off, int64(1<<62)
	if w.split > 0 {
		i, at, room = int(off/w.split), off%w.split, w.split-off%w.split
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.parts) <= i {
		if w.closed {
			return nil, 0, 0, fmt.Errorf("writing %s: the bundle is closed", filepath.Join(w.dir, w.base))
		}
		name := w.base
		if w.split > 0 {
			name = partName(w.base, len(w.parts))
		}
		f, err := os.CreateTemp(w.dir, "."+name+".partial-*")
		if err != nil {
			return nil, 0, 0, fmt.Errorf("creating %s: %w", filepath.Join(w.dir, name), err)
		}
		w.parts = append(w.parts, &writtenPart{name: name, tmp: f, h: sha256.New()})
		if w.hashed == nil {
			w.hashed = make(chan struct{})
			go w.hash()
		}
	}
	return w.parts[i], at, room, nil
}

// WriteAt writes p at offset off of the stream. It is safe for concurrent
// use on ranges that do not overlap.
func (w *partWriter) WriteAt(p []byte, off int64) (int, error) {
	written := 0
	for len(p) > 0 {
		part, at, room, err := w.span(off)
		if err != nil {
			return written, err
		}
		chunk := p[:min(int64(len(p)), room)]
		n, err := part.tmp.WriteAt(chunk, at)
		written += n
		if err != nil {
			return written, fmt.Errorf("writing %s: %w", filepath.Join(w.dir, part.name), err)
		}
		p, off = p[n:], off+int64(n)
	}
	return written, nil
}

// Done records that the bytes of [start, end) are written and final: the
// hasher may read them once every byte before them is done too.
func (w *partWriter) Done(start, end int64) {
	if end <= start {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if start != w.prefix {
		w.pending[start] = end
		return
	}
	w.prefix = end
	for {
		next, ok := w.pending[w.prefix]
		if !ok {
			break
		}
		delete(w.pending, w.prefix)
		w.prefix = next
	}
	w.signal()
	close(w.moved)
	w.moved = make(chan struct{})
}

// waitPrefix waits until every byte before off is done.
func (w *partWriter) waitPrefix(ctx context.Context, off int64) error {
	for {
		w.mu.Lock()
		prefix, moved := w.prefix, w.moved
		w.mu.Unlock()
		if prefix >= off {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// signal wakes the hasher; w.mu is held.
func (w *partWriter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// hash reads back the done prefix of the stream and hashes each part,
// until the writer is closed and every done byte is hashed, or it is
// aborted.
func (w *partWriter) hash() {
	defer close(w.hashed)
	buf := make([]byte, hashChunk)
	var off int64
	for {
		w.mu.Lock()
		end, closed := w.prefix, w.closed
		w.mu.Unlock()
		for off < end {
			if w.stop.Load() {
				return
			}
			part, at, room, err := w.span(off)
			if err != nil {
				w.hashErr = err
				return
			}
			n, err := part.tmp.ReadAt(buf[:min(int64(len(buf)), room, end-off)], at)
			part.h.Write(buf[:n])
			off += int64(n)
			// Start writing what is hashed to disk, so that commit's
			// fsync has only the end of the stream left to wait for.
			if at+int64(n)-part.flushed >= writebackChunk || int64(n) == room {
				store.StartWriteback(part.tmp, part.flushed, at+int64(n)-part.flushed)
				part.flushed = at + int64(n)
			}
			if err != nil {
				w.hashErr = fmt.Errorf("reading back %s to hash it: %w", filepath.Join(w.dir, part.name), err)
				return
			}
			if int64(n) == room {
				// The part is whole and hashed, and nothing writes to it
				// any more: at most the window's parts stay open.
				if err := w.finishPart(part); err != nil {
					w.hashErr = err
					return
				}
			}
		}
		if closed || w.stop.Load() {
			return
		}
		<-w.wake
	}
}

// closeAndHash ends writing and waits for the hasher to hash everything
// done.
func (w *partWriter) closeAndHash() error {
	w.mu.Lock()
	w.closed = true
	w.signal()
	hashed := w.hashed
	w.mu.Unlock()
	if hashed != nil {
		<-hashed
	}
	return w.hashErr
}

// commit checks that the stream's size bytes are all done, gives every part
// its final name, removes parts of an earlier bundle of the same name
// beyond the new last one, and writes the checksum file. It returns the
// paths written, parts first.
func (w *partWriter) commit(size int64) ([]string, error) {
	if len(w.parts) == 0 {
		if _, _, _, err := w.span(0); err != nil { // an empty stream is still a file
			return nil, err
		}
	}
	if err := w.closeAndHash(); err != nil {
		return nil, err
	}
	if w.prefix != size || len(w.pending) > 0 {
		return nil, fmt.Errorf("writing %s: %d of %d bytes were written in order; the bundle has a gap", filepath.Join(w.dir, w.base), w.prefix, size)
	}
	var paths, sums []string
	for _, p := range w.parts {
		if err := w.finishPart(p); err != nil {
			return nil, err
		}
	}
	for _, p := range w.parts {
		final := filepath.Join(w.dir, p.name)
		if err := os.Rename(p.tmp.Name(), final); err != nil {
			return nil, fmt.Errorf("writing %s: %w", final, err)
		}
		paths = append(paths, final)
		sums = append(sums, p.sum)
	}
	w.parts = nil
	file, err := w.writeChecksums(paths, sums)
	if err != nil {
		return nil, err
	}
	syncDir(w.dir)
	return append(paths, file), nil
}

// finishPart records the checksum of a part that is whole and hashed,
// and syncs and closes its file; it does nothing the second time.
func (w *partWriter) finishPart(p *writtenPart) error {
	if p.sum != "" {
		return nil
	}
	p.sum = hex.EncodeToString(p.h.Sum(nil))
	err := p.tmp.Sync()
	if cerr := p.tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(p.tmp.Name(), 0o644)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(w.dir, p.name), err)
	}
	return nil
}

// abort removes every file written.
func (w *partWriter) abort() {
	w.stop.Store(true)
	w.closeAndHash()
	for _, p := range w.parts {
		p.tmp.Close()
		os.Remove(p.tmp.Name())
	}
	w.parts = nil
}

// prefixAt reports whether every byte before off is done.
func (w *partWriter) prefixAt(off int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.prefix >= off
}
