package progress

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// barInterval is how often the bar is redrawn: at most ten times a second,
// however many events arrive. Events only count; a goroutine draws.
const barInterval = 100 * time.Millisecond

// rateWindow is how far back the bar looks to tell the transfer rate.
const rateWindow = 3 * time.Second

// barSink draws one progress bar for all blobs together:
//
//	45% [========>..........]  230.4 MiB / 512.0 MiB, 45.2 MiB/s, 3/8 blobs
//
// The total grows as blobs start; skipped and mounted blobs count as done
// with their size, but not towards the rate, which is of bytes moved.
// Retries and failures are printed as lines above the bar.
type barSink struct {
	w io.Writer

	mu      sync.Mutex // guards the fields up to the blank line
	t       tally
	msgs    []string  // lines to print above the bar at the next draw
	first   time.Time // when the first event arrived
	started bool      // the drawing goroutine runs
	closed  bool

	stop chan struct{} // closed to stop the drawing goroutine
	done chan struct{} // closed when it has stopped

	drawMu  sync.Mutex // serializes drawing; guards the fields below
	out     *gate
	bar     *progressbar.ProgressBar
	max     int64    // the bar's max
	drawn   bool     // the bar is on the screen
	samples []sample // recent byte counts, for the rate
}

// sample is how many bytes had moved at a time.
type sample struct {
	at    time.Time
	bytes int64
}

// gate passes writes through while open and drops them while shut. The bar
// is updated in several calls, each of which may draw; the gate lets only
// the last one through, so each update draws once.
type gate struct {
	w    io.Writer
	open bool
}

func (g *gate) Write(p []byte) (int, error) {
	if !g.open {
		return len(p), nil
	}
	return g.w.Write(p)
}

func newBarSink(w io.Writer) *barSink {
	out := &gate{w: w}
	return &barSink{
		w:    w,
		stop: make(chan struct{}),
		done: make(chan struct{}),
		out:  out,
		max:  1,
		bar: progressbar.NewOptions64(1,
			progressbar.OptionSetWriter(out),
			progressbar.OptionSetWidth(barWidth(w)),
			progressbar.OptionSetTheme(progressbar.ThemeASCII),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSetElapsedTime(false),
		),
	}
}

// barWidth fits the bar to the terminal w is, leaving about 70 columns for
// the rest of the line, or is 20 when w is not a terminal.
func barWidth(w io.Writer) int {
	if f, ok := w.(interface{ Fd() uintptr }); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			return min(max(cols-70, 10), 40)
		}
	}
	return 20
}

func (b *barSink) event(e transfer.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.t.add(e)
	switch e.Kind {
	case transfer.BlobRetry, transfer.BlobFailed:
		b.msgs = append(b.msgs, plainLine(e, 0))
	}
	if !b.started {
		b.started = true
		b.first = time.Now()
		go b.loop()
	}
}

// loop redraws the bar every barInterval until stop is closed.
func (b *barSink) loop() {
	defer close(b.done)
	tick := time.NewTicker(barInterval)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
			b.draw(false)
		}
	}
}

func (b *barSink) close() {
	b.mu.Lock()
	b.closed = true
	started := b.started
	b.mu.Unlock()
	if started {
		close(b.stop)
		<-b.done
	}
	b.draw(true)
	b.drawMu.Lock()
	b.out.open = false // for good: nothing is drawn after close
	b.drawMu.Unlock()
}

// barState is what one draw shows.
type barState struct {
	blobs, finished, failed int
	total, current, wire    int64
	first                   time.Time
}

// draw shows the messages that arrived since the last draw and then the
// bar. The final draw fills the bar if every blob is done, shows the
// average rate, and ends the line.
func (b *barSink) draw(final bool) {
	b.mu.Lock()
	s := barState{
		blobs:    b.t.blobs,
		finished: b.t.finished(),
		failed:   b.t.failed,
		total:    b.t.total,
		current:  b.t.current(),
		wire:     b.t.wire,
		first:    b.first,
	}
	msgs := b.msgs
	b.msgs = nil
	b.mu.Unlock()

	b.drawMu.Lock()
	defer b.drawMu.Unlock()
	if len(msgs) > 0 {
		b.out.open = true
		if b.drawn {
			b.bar.Clear()
		}
		for _, m := range msgs {
			io.WriteString(b.out, m+"\n")
		}
		b.out.open = false
	}
	if s.blobs == 0 {
		return
	}

	// The bar finishes for good once its value reaches its max, but more
	// blobs may still start: until the final draw, stay one below.
	barMax := max(s.total, 1)
	below := min(s.current, barMax-1)
	val := below
	if final {
		val = min(s.current, barMax)
		if s.finished == s.blobs {
			val = barMax
		}
	}

	desc := fmt.Sprintf("%s / %s", humanBytes(s.current), humanBytes(s.total))
	if rate := b.rate(s, final); rate > 0 {
		desc += fmt.Sprintf(", %s/s", humanBytes(rate))
	}
	desc += fmt.Sprintf(", %d/%s", s.finished, plural(s.blobs, "blob"))
	if s.failed > 0 {
		desc += fmt.Sprintf(", %d failed", s.failed)
	}

	// Update silently, keeping the value below the max at every step, for
	// each of these calls may draw. Then draw once: Describe always draws,
	// and so does reaching the max, which happens only in the final draw.
	b.out.open = false
	if barMax >= b.max {
		if barMax != b.max {
			b.bar.ChangeMax64(barMax)
		}
		b.bar.Set64(below)
	} else {
		b.bar.Set64(below)
		b.bar.ChangeMax64(barMax)
	}
	b.max = barMax
	if val == below {
		b.out.open = true
		b.bar.Describe(desc)
	} else {
		b.bar.Describe(desc)
		b.out.open = true
		b.bar.Set64(val)
	}
	b.drawn = true
	if final {
		io.WriteString(b.out, "\n")
	}
	b.out.open = false
}

// rate is the transfer rate in bytes per second: over the last rateWindow
// while copying, and over the whole copy in the final draw.
func (b *barSink) rate(s barState, final bool) int64 {
	now := time.Now()
	if final {
		if d := now.Sub(s.first).Seconds(); d > 0 {
			return int64(float64(s.wire) / d)
		}
		return 0
	}
	if len(b.samples) == 0 {
		b.samples = append(b.samples, sample{s.first, 0})
	}
	b.samples = append(b.samples, sample{now, s.wire})
	for len(b.samples) > 2 && now.Sub(b.samples[1].at) >= rateWindow {
		b.samples = b.samples[1:]
	}
	first := b.samples[0]
	if d := now.Sub(first.at).Seconds(); d > 0 {
		return int64(float64(s.wire-first.bytes) / d)
	}
	return 0
}
