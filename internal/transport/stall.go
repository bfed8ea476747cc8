package transport

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBodyIdle is how long a response body may send nothing, once
// read, before it is given up: as long as the wait for response headers.
const DefaultBodyIdle = 60 * time.Second

// ErrStalled is wrapped by the error of a read from a response body that
// sent nothing for too long (ROBUSTNESS row 3: a stall is a reset that
// does not say so).
var ErrStalled = errors.New("the connection stalled")

// stallWatch is a response body that closes itself when no byte arrives
// for idle while it is read. The watch starts with the first Read, so a
// body opened ahead of time and read later is not given up meanwhile.
type stallWatch struct {
	rc      io.ReadCloser
	idle    time.Duration
	once    sync.Once
	timer   *time.Timer
	stalled atomic.Bool
}

func watchBody(rc io.ReadCloser, idle time.Duration) io.ReadCloser {
	return &stallWatch{rc: rc, idle: idle}
}

func (w *stallWatch) Read(p []byte) (int, error) {
	w.once.Do(func() {
		w.timer = time.AfterFunc(w.idle, func() {
			w.stalled.Store(true)
			w.rc.Close()
		})
	})
	n, err := w.rc.Read(p)
	if n > 0 && !w.stalled.Load() {
		w.timer.Reset(w.idle)
	}
	if err != nil && err != io.EOF && w.stalled.Load() {
		err = fmt.Errorf("%w: no data for %s (%v)", ErrStalled, w.idle, err)
	}
	return n, err
}

func (w *stallWatch) Close() error {
	w.once.Do(func() {}) // no watch after Close
	if w.timer != nil {
		w.timer.Stop()
	}
	return w.rc.Close()
}
