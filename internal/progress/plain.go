package progress

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// plainSink writes a line per finished blob or manifest, per retry and per
// failure, and a summary line on close. Progress events only count.
type plainSink struct {
	w     io.Writer
	start time.Time

	mu     sync.Mutex // guards everything below, and writes to w
	t      tally
	seen   bool // any event arrived
	closed bool
}

func newPlainSink(w io.Writer) *plainSink {
	return &plainSink{w: w, start: time.Now()}
}

func (p *plainSink) event(e transfer.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.seen = true
	size := p.t.add(e)
	if line := plainLine(e, size); line != "" {
		io.WriteString(p.w, line+"\n")
	}
}

func (p *plainSink) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if !p.seen {
		return
	}
	elapsed := time.Since(p.start)
	if elapsed >= time.Second {
		elapsed = elapsed.Round(100 * time.Millisecond)
	} else {
		elapsed = elapsed.Round(time.Millisecond)
	}
	fmt.Fprintf(p.w, "%s in %s\n", p.t.summary(), elapsed)
}

// plainLine is the line for e, or "" for events that get none. size is the
// blob's size as the tally knows it.
func plainLine(e transfer.Event, size int64) string {
	d := shortDigest(e.Digest)
	switch e.Kind {
	case transfer.BlobDone:
		return fmt.Sprintf("copied %s %s", d, humanBytes(size))
	case transfer.BlobSkipped:
		return fmt.Sprintf("skipped %s (exists)", d)
	case transfer.BlobMounted:
		// The event does not say from which repository.
		return fmt.Sprintf("mounted %s", d)
	case transfer.BlobRetry:
		if e.Err == nil {
			return fmt.Sprintf("retry %s", d)
		}
		return fmt.Sprintf("retry %s after: %s", d, errText(e.Err))
	case transfer.BlobFailed:
		if e.Err == nil {
			return fmt.Sprintf("failed %s", d)
		}
		return fmt.Sprintf("failed %s: %s", d, errText(e.Err))
	case transfer.ManifestWritten:
		return "wrote manifest " + manifestName(e)
	case transfer.ManifestSkipped:
		return fmt.Sprintf("skipped manifest %s (exists)", manifestName(e))
	}
	return ""
}

// manifestName names a manifest by its reference, or else its digest.
func manifestName(e transfer.Event) string {
	if e.Ref != "" {
		return e.Ref
	}
	return shortDigest(e.Digest)
}
