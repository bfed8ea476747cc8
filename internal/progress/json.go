package progress

import (
	"encoding/json"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// jsonProgressInterval is the least time between two BlobProgress objects
// for one blob. The blob's last state always follows in its BlobDone.
const jsonProgressInterval = 250 * time.Millisecond

// jsonEvent is one line of ModeJSON output.
type jsonEvent struct {
	Time      string `json:"time"`
	Event     string `json:"event"`
	Digest    string `json:"digest,omitempty"`
	MediaType string `json:"mediaType,omitempty"`
	Size      int64  `json:"size,omitempty"`
	Bytes     int64  `json:"bytes,omitempty"`
	Ref       string `json:"ref,omitempty"`
	Error     string `json:"error,omitempty"`
}

// jsonSink writes one JSON object per event, newline-delimited.
type jsonSink struct {
	w io.Writer

	mu     sync.Mutex // guards everything below, and writes to w
	last   map[digest.Digest]time.Time
	closed bool
}

func newJSONSink(w io.Writer) *jsonSink {
	return &jsonSink{w: w, last: make(map[digest.Digest]time.Time)}
}

func (j *jsonSink) event(e transfer.Event) {
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}

	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return
	}
	switch e.Kind {
	case transfer.BlobProgress:
		if last, ok := j.last[e.Digest]; ok && t.Sub(last) < jsonProgressInterval {
			return
		}
		j.last[e.Digest] = t
	case transfer.BlobDone, transfer.BlobSkipped, transfer.BlobMounted, transfer.BlobFailed:
		delete(j.last, e.Digest)
	}
	line, err := json.Marshal(jsonEvent{
		Time:      t.UTC().Format(time.RFC3339Nano),
		Event:     e.Kind.String(),
		Digest:    string(e.Digest),
		MediaType: e.MediaType,
		Size:      e.Size,
		Bytes:     e.Bytes,
		Ref:       e.Ref,
		Error:     errText(e.Err),
	})
	if err != nil {
		return // cannot happen: the fields are strings and integers
	}
	j.w.Write(append(line, '\n'))
}

func (j *jsonSink) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closed = true
}
