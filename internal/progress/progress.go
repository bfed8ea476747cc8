// Package progress turns the copy engine's events (transfer.Event) into
// output for people and programs: a progress bar on a terminal, one plain
// line per finished blob or manifest, or newline-delimited JSON.
//
// It is the only package that imports github.com/schollz/progressbar. It
// writes only to the io.Writer it is given (the CLI passes stderr) and
// never to stdout, which belongs to a command's data.
package progress

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// Mode is how progress is shown.
type Mode string

// The modes. ParseMode also accepts "auto", which it resolves to one of these.
const (
	// ModeBar draws one progress bar for all blobs together, for a
	// terminal, redrawn at most ten times a second:
	//
	//	 45% [=========>..........]  230.4 MiB / 512.0 MiB, 45.2 MiB/s, 3/8 blobs
	//
	// Skipped and mounted blobs count as done with their size; the rate
	// counts only bytes moved. Retries and failures are printed as lines
	// above the bar. Close draws the final bar and ends its line.
	ModeBar Mode = "bar"
	// ModePlain writes one line per finished blob or manifest, one per
	// retry and failure, and a summary line when the Reporter is closed:
	//
	//	copied sha256:abcd1234ef56 12.3 MiB
	//	skipped sha256:abcd1234ef56 (exists)
	//	mounted sha256:abcd1234ef56
	//	retry sha256:abcd1234ef56 after: ERROR
	//	failed sha256:abcd1234ef56: ERROR
	//	wrote manifest REF
	//	total: copied 3 blobs (12.3 MiB), skipped 1, wrote 1 manifest in 2.1s
	ModePlain Mode = "plain"
	// ModeJSON writes one JSON object per event, newline-delimited:
	//
	//	{"time":"2025-01-02T03:04:05.123456789Z","event":"started","digest":"sha256:…","mediaType":"…","size":123}
	//
	// with the fields time (RFC 3339, UTC), event (transfer.EventKind's
	// String), and, when not empty or zero, digest, mediaType, size, bytes,
	// ref and error. BlobProgress objects come at most once every 250 ms
	// per blob (by the events' Time); the blob's final state follows in
	// its done, skipped, mounted or failed object.
	ModeJSON Mode = "json"
	// ModeNone shows nothing.
	ModeNone Mode = "none"
)

// modeChoices lists what ParseMode accepts, for its error message.
const modeChoices = "auto, bar, plain, json or none"

// ParseMode turns the value of a --progress flag into a Mode. "auto" (and
// the empty string) means ModeBar when stderr is a terminal (errIsTTY) and
// ModePlain otherwise: CI logs get one line per blob, as skopeo prints, and
// scripts that want silence ask for "none". An explicit "bar" is honoured even when stderr
// is not a terminal. Names are matched without regard to case.
func ParseMode(s string, errIsTTY bool) (Mode, error) {
	switch m := strings.ToLower(strings.TrimSpace(s)); m {
	case "", "auto":
		if errIsTTY {
			return ModeBar, nil
		}
		return ModePlain, nil
	case string(ModeBar), string(ModePlain), string(ModeJSON), string(ModeNone):
		return Mode(m), nil
	}
	return "", fmt.Errorf("invalid progress mode %q: choose %s", s, modeChoices)
}

// Reporter draws transfer events on a writer in one Mode. Its Event method
// is a transfer.EventFunc: pass r.Event as the copy's event callback.
//
// A Reporter must be closed when the operation ends: Close writes the last
// state (the final bar, or the summary line) and stops the bar's drawing
// goroutine. Nothing is written to the writer after Close returns.
type Reporter struct {
	mode Mode
	sink sink // nil for ModeNone
	once sync.Once
}

// sink is one mode's drawing. event is called from many goroutines at once
// and must be quick; close is called once, and after it returns the sink
// writes nothing more, however many events still arrive.
type sink interface {
	event(transfer.Event)
	close()
}

// New returns a Reporter that writes to w in the given mode. A mode that is
// not one of the Mode constants (such as an unresolved "auto") shows
// nothing, like ModeNone. In ModeBar the bar's width fits the terminal when
// w is one (an *os.File such as os.Stderr).
func New(w io.Writer, mode Mode) *Reporter {
	r := &Reporter{mode: mode}
	switch mode {
	case ModeBar:
		r.sink = newBarSink(w)
	case ModePlain:
		r.sink = newPlainSink(w)
	case ModeJSON:
		r.sink = newJSONSink(w)
	default:
		r.mode = ModeNone
	}
	return r
}

// Mode reports the mode the Reporter draws in.
func (r *Reporter) Mode() Mode {
	if r == nil {
		return ModeNone
	}
	return r.mode
}

// Event takes one event from the copy engine. It is safe for concurrent
// use and does little work: in ModeBar it only counts, and the bar is
// redrawn by a separate goroutine at most ten times a second. Events that
// arrive after Close are dropped. A nil Reporter discards events.
func (r *Reporter) Event(e transfer.Event) {
	if r == nil || r.sink == nil {
		return
	}
	r.sink.event(e)
}

// Close writes the final state, finishes the bar on its own line, and
// stops the drawing goroutine. It may be called more than once; calls
// after the first do nothing.
func (r *Reporter) Close() {
	if r == nil || r.sink == nil {
		return
	}
	r.once.Do(r.sink.close)
}
