package transfer

import (
	"hash"
	"sync"
)

// BackgroundHash hashes what is written to it on a goroutine of its own,
// so that hashing a stream and moving it use two cores. Write copies p,
// which the caller may reuse at once; at most three copies are held.
// Sum or Stop must be called once writing is over, or the goroutine stays;
// a Write after them (from a reader left running) hashes nothing.
type BackgroundHash struct {
	h     hash.Hash
	queue chan []byte
	free  chan []byte
	done  chan struct{}

	mu      sync.Mutex
	stopped bool
}

// NewBackgroundHash starts hashing into h.
func NewBackgroundHash(h hash.Hash) *BackgroundHash {
	b := &BackgroundHash{h: h, queue: make(chan []byte, 2), free: make(chan []byte, 3), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for p := range b.queue {
			b.h.Write(p)
			select {
			case b.free <- p:
			default: // enough are free
			}
		}
	}()
	return b
}

// Write queues a copy of p to be hashed. It never fails.
func (b *BackgroundHash) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return len(p), nil
	}
	var buf []byte
	select {
	case buf = <-b.free:
	default:
	}
	b.queue <- append(buf[:0], p...)
	return len(p), nil
}

// Sum waits for everything written to be hashed and returns the hash.
// Nothing may be written after.
func (b *BackgroundHash) Sum() []byte {
	b.Stop()
	return b.h.Sum(nil)
}

// Stop ends the goroutine, after what was written is hashed. Nothing may
// be written after; it may be called more than once.
func (b *BackgroundHash) Stop() {
	b.mu.Lock()
	if !b.stopped {
		b.stopped = true
		close(b.queue)
	}
	b.mu.Unlock()
	<-b.done
}
