package progress

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/transfer"
)

const mib = 1 << 20

// dg makes a distinct, valid-looking sha256 digest from n.
func dg(n int) digest.Digest {
	return digest.FromString(fmt.Sprintf("blob %d", n))
}

// syncBuffer is a bytes.Buffer safe for concurrent use that can refuse
// writes: after seal, any write fails the test.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	sealed bool
	late   int // writes after seal
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sealed {
		b.late++
	}
	b.writes++
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) seal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sealed = true
}

func (b *syncBuffer) lateWrites() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.late
}

// copySequence is what the engine reports for one image: a config copied,
// a layer copied after a retry that starts over, a layer skipped, a layer
// mounted, a layer that fails, and the manifest written.
func copySequence(t0 time.Time) []transfer.Event {
	// Events are 300 ms apart, so JSON mode throttles none of them.
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * 300 * time.Millisecond) }
	cfg := "application/vnd.oci.image.config.v1+json"
	layer := "application/vnd.oci.image.layer.v1.tar+gzip"
	return []transfer.Event{
		{Kind: transfer.BlobStarted, Time: at(0), Digest: dg(1), MediaType: cfg, Size: 1234},
		{Kind: transfer.BlobProgress, Time: at(1), Digest: dg(1), MediaType: cfg, Size: 1234, Bytes: 1234},
		{Kind: transfer.BlobDone, Time: at(2), Digest: dg(1), MediaType: cfg, Size: 1234, Bytes: 1234},
		{Kind: transfer.BlobStarted, Time: at(3), Digest: dg(2), MediaType: layer, Size: 12*mib + 300*1024},
		{Kind: transfer.BlobProgress, Time: at(4), Digest: dg(2), MediaType: layer, Size: 12*mib + 300*1024, Bytes: 5 * mib},
		{Kind: transfer.BlobRetry, Time: at(5), Digest: dg(2), MediaType: layer, Size: 12*mib + 300*1024, Err: errors.New("connection reset by peer")},
		{Kind: transfer.BlobProgress, Time: at(6), Digest: dg(2), MediaType: layer, Size: 12*mib + 300*1024, Bytes: 12*mib + 300*1024},
		{Kind: transfer.BlobDone, Time: at(7), Digest: dg(2), MediaType: layer, Size: 12*mib + 300*1024, Bytes: 12*mib + 300*1024},
		{Kind: transfer.BlobSkipped, Time: at(8), Digest: dg(3), MediaType: layer, Size: 3 * mib, Bytes: 3 * mib},
		{Kind: transfer.BlobMounted, Time: at(9), Digest: dg(4), MediaType: layer, Size: 2 * mib, Bytes: 2 * mib},
		{Kind: transfer.BlobStarted, Time: at(10), Digest: dg(5), MediaType: layer, Size: 4 * mib},
		{Kind: transfer.BlobFailed, Time: at(11), Digest: dg(5), MediaType: layer, Size: 4 * mib, Bytes: mib, Err: errors.New("unexpected EOF")},
		{Kind: transfer.ManifestWritten, Time: at(12), Digest: dg(6), MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 900, Ref: "reg.example/app:v1"},
	}
}

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		tty  bool
		want Mode
	}{
		{"auto", true, ModeBar},
		{"auto", false, ModePlain},
		{"", true, ModeBar},
		{"", false, ModePlain},
		{"bar", false, ModeBar},
		{"plain", true, ModePlain},
		{"JSON", true, ModeJSON},
		{"none", true, ModeNone},
	} {
		got, err := ParseMode(tc.in, tc.tty)
		if err != nil || got != tc.want {
			t.Errorf("ParseMode(%q, %v) = %q, %v; want %q", tc.in, tc.tty, got, err, tc.want)
		}
	}
}

func TestParseModeError(t *testing.T) {
	_, err := ParseMode("fancy", true)
	if err == nil {
		t.Fatal("ParseMode(\"fancy\") succeeded")
	}
	msg := err.Error()
	for _, want := range []string{`"fancy"`, "auto", "bar", "plain", "json", "none"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %s", msg, want)
		}
	}
}

func TestPlain(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf, ModePlain)
	for _, e := range copySequence(time.Now()) {
		r.Event(e)
	}
	r.Close()

	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	short := func(n int) string { return shortDigest(dg(n)) }
	want := []string{
		"copied " + short(1) + " 1.2 KiB",
		"retry " + short(2) + " after: connection reset by peer",
		"copied " + short(2) + " 12.3 MiB",
		"skipped " + short(3) + " (exists)",
		"mounted " + short(4),
		"failed " + short(5) + ": unexpected EOF",
		"wrote manifest reg.example/app:v1",
	}
	if len(lines) != len(want)+1 {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want)+1, buf.String())
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d = %q, want %q", i+1, lines[i], w)
		}
	}
	sum := regexp.MustCompile(`^total: copied 2 blobs \(12\.3 MiB\), skipped 1, mounted 1, failed 1, 1 retry, wrote 1 manifest in \d`)
	if last := lines[len(lines)-1]; !sum.MatchString(last) {
		t.Errorf("summary = %q, want it to match %s", last, sum)
	}
	if len(short(1)) != len("sha256:")+12 {
		t.Errorf("short digest %q is not 12 hex characters", short(1))
	}
}

func TestPlainNothingHappened(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf, ModePlain)
	r.Close()
	if buf.Len() != 0 {
		t.Errorf("a reporter that saw no events wrote %q", buf.String())
	}
}

func TestJSON(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf, ModeJSON)
	events := copySequence(time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC))
	for _, e := range events {
		r.Event(e)
	}
	r.Close()

	var got []map[string]any
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		got = append(got, m)
	}
	if len(got) != len(events) {
		t.Fatalf("got %d objects, want one per event (%d):\n%s", len(got), len(events), buf.String())
	}
	for i, e := range events {
		m := got[i]
		if m["event"] != e.Kind.String() {
			t.Errorf("object %d: event = %v, want %s", i, m["event"], e.Kind)
		}
		if ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"])); err != nil || !ts.Equal(e.Time) {
			t.Errorf("object %d: time = %v, want %s", i, m["time"], e.Time.Format(time.RFC3339Nano))
		}
		if m["digest"] != string(e.Digest) {
			t.Errorf("object %d: digest = %v, want %s", i, m["digest"], e.Digest)
		}
	}
	// Spot checks of the other fields, and of omitempty.
	retry := got[5]
	if retry["error"] != "connection reset by peer" {
		t.Errorf("retry error = %v", retry["error"])
	}
	if _, ok := retry["bytes"]; ok {
		t.Errorf("retry from the start has bytes = %v; want it left out", retry["bytes"])
	}
	if _, ok := got[0]["error"]; ok {
		t.Errorf("started event has an error field: %v", got[0])
	}
	if got[3]["size"] != float64(12*mib+300*1024) || got[3]["mediaType"] != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Errorf("started event = %v", got[3])
	}
	if got[6]["bytes"] != float64(12*mib+300*1024) {
		t.Errorf("progress event = %v", got[6])
	}
	if m := got[len(got)-1]; m["event"] != "manifest-written" || m["ref"] != "reg.example/app:v1" {
		t.Errorf("manifest event = %v", m)
	}
}

func TestJSONThrottlesProgress(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf, ModeJSON)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := dg(1), dg(2)
	r.Event(transfer.Event{Kind: transfer.BlobStarted, Time: t0, Digest: a, Size: 1000})
	r.Event(transfer.Event{Kind: transfer.BlobStarted, Time: t0, Digest: b, Size: 1000})
	// Progress every 50 ms for 1 s, for two blobs at once.
	for i := 1; i <= 20; i++ {
		at := t0.Add(time.Duration(i) * 50 * time.Millisecond)
		r.Event(transfer.Event{Kind: transfer.BlobProgress, Time: at, Digest: a, Size: 1000, Bytes: int64(i * 50)})
		r.Event(transfer.Event{Kind: transfer.BlobProgress, Time: at, Digest: b, Size: 1000, Bytes: int64(i * 50)})
	}
	r.Event(transfer.Event{Kind: transfer.BlobDone, Time: t0.Add(1001 * time.Millisecond), Digest: a, Size: 1000, Bytes: 1000})
	r.Close()

	progress := map[string][]int64{}
	var done []int64
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var e jsonEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		switch e.Event {
		case "progress":
			progress[e.Digest] = append(progress[e.Digest], e.Bytes)
		case "done":
			done = append(done, e.Bytes)
		}
	}
	// Emitted at 50, 300, 550 and 800 ms: 250 ms apart, per blob.
	want := []int64{50, 300, 550, 800}
	for _, d := range []digest.Digest{a, b} {
		if got := progress[string(d)]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("progress of %s: bytes %v, want %v", shortDigest(d), got, want)
		}
	}
	if fmt.Sprint(done) != "[1000]" {
		t.Errorf("done events carry %v, want the final [1000]", done)
	}
}

func TestNone(t *testing.T) {
	var buf bytes.Buffer
	for _, m := range []Mode{ModeNone, "auto", "bogus"} {
		r := New(&buf, m)
		for _, e := range copySequence(time.Now()) {
			r.Event(e)
		}
		r.Close()
		if r.Mode() != ModeNone {
			t.Errorf("New(%q).Mode() = %q, want none", m, r.Mode())
		}
	}
	if buf.Len() != 0 {
		t.Errorf("wrote %q", buf.String())
	}
	var nilReporter *Reporter
	nilReporter.Event(transfer.Event{Kind: transfer.BlobStarted})
	nilReporter.Close()
}

// barLine is the last thing the bar drew: what follows the last carriage
// return.
func barLine(out string) string {
	out = strings.TrimRight(out, "\n")
	return strings.TrimSpace(out[strings.LastIndex(out, "\r")+1:])
}

func TestBarFinal(t *testing.T) {
	buf := &syncBuffer{}
	r := New(buf, ModeBar)
	for _, e := range copySequence(time.Now()) {
		r.Event(e)
	}
	r.Close()
	buf.seal()
	out := buf.String()

	if !strings.HasSuffix(out, "\n") {
		t.Errorf("output does not end with a newline: %q", out)
	}
	// The retry and the failure are printed above the bar, on their own lines.
	for _, want := range []string{
		"\nretry " + shortDigest(dg(2)) + " after: connection reset by peer\n",
		"\nfailed " + shortDigest(dg(5)) + ": unexpected EOF\n",
	} {
		if !strings.Contains("\n"+out, want) {
			t.Errorf("output lacks %q:\n%q", want, out)
		}
	}
	// 1234 B + 12.3 MiB + 3 MiB + 2 MiB are done; 4 MiB failed: 17.3 of 21.3 MiB.
	line := barLine(out)
	for _, want := range []string{"17.3 MiB / 21.3 MiB", ", 4/5 blobs, 1 failed", "81% [="} {
		if !strings.Contains(line, want) {
			t.Errorf("final bar %q lacks %q", line, want)
		}
	}

	// Events after Close draw nothing, now or later.
	r.Event(transfer.Event{Kind: transfer.BlobStarted, Digest: dg(9), Size: 100})
	r.Event(transfer.Event{Kind: transfer.BlobRetry, Digest: dg(9), Size: 100, Err: errors.New("late")})
	r.Close()
	time.Sleep(3 * barInterval)
	if n := buf.lateWrites(); n != 0 {
		t.Errorf("%d writes after Close: %q", n, buf.String()[len(out):])
	}
}

func TestBarComplete(t *testing.T) {
	buf := &syncBuffer{}
	r := New(buf, ModeBar)
	r.Event(transfer.Event{Kind: transfer.BlobSkipped, Digest: dg(1), Size: 300 * mib})
	r.Event(transfer.Event{Kind: transfer.BlobStarted, Digest: dg(2), Size: 212 * mib})
	r.Event(transfer.Event{Kind: transfer.BlobProgress, Digest: dg(2), Size: 212 * mib, Bytes: 212 * mib})
	r.Event(transfer.Event{Kind: transfer.BlobDone, Digest: dg(2), Size: 212 * mib, Bytes: 212 * mib})
	r.Close()
	line := barLine(buf.String())
	for _, want := range []string{"100% [====================]", "512.0 MiB / 512.0 MiB", ", 2/2 blobs"} {
		if !strings.Contains(line, want) {
			t.Errorf("final bar %q lacks %q", line, want)
		}
	}
	if strings.Count(buf.String(), "\n") != 1 || !strings.HasSuffix(buf.String(), "\n") {
		t.Errorf("want exactly one newline, at the end: %q", buf.String())
	}
}

func TestBarNothingHappened(t *testing.T) {
	buf := &syncBuffer{}
	r := New(buf, ModeBar)
	r.Event(transfer.Event{Kind: transfer.ManifestSkipped, Ref: "reg.example/app:v1"})
	r.Close()
	if out := buf.String(); out != "" {
		t.Errorf("no blobs, yet the bar drew %q", out)
	}
}

// TestBarDrawsWhileRunning checks that the bar is drawn during a copy, that
// it keeps drawing after every known blob is done (more may start), that
// bytes going back on a retry are shown, and that drawing is throttled.
func TestBarDrawsWhileRunning(t *testing.T) {
	buf := &syncBuffer{}
	r := New(buf, ModeBar)
	defer r.Close()

	r.Event(transfer.Event{Kind: transfer.BlobStarted, Digest: dg(1), Size: 10 * mib})
	r.Event(transfer.Event{Kind: transfer.BlobDone, Digest: dg(1), Size: 10 * mib, Bytes: 10 * mib})
	time.Sleep(3 * barInterval)
	if line := barLine(buf.String()); !strings.HasPrefix(line, "99% [") || !strings.Contains(line, "10.0 MiB / 10.0 MiB, ") || !strings.HasSuffix(line, ", 1/1 blob") {
		t.Fatalf("bar while running = %q", line)
	}

	// Every known blob was done; a new one must still show.
	r.Event(transfer.Event{Kind: transfer.BlobStarted, Digest: dg(2), Size: 10 * mib})
	r.Event(transfer.Event{Kind: transfer.BlobProgress, Digest: dg(2), Size: 10 * mib, Bytes: 8 * mib})
	time.Sleep(3 * barInterval)
	if line := barLine(buf.String()); !strings.HasSuffix(line, ", 1/2 blobs") || !strings.HasPrefix(line, "90%") || !strings.Contains(line, "18.0 MiB / 20.0 MiB") {
		t.Fatalf("bar after a second blob started = %q", line)
	}

	// A retry that starts over takes the bytes back.
	r.Event(transfer.Event{Kind: transfer.BlobRetry, Digest: dg(2), Size: 10 * mib, Bytes: 0, Err: errors.New("reset")})
	r.Event(transfer.Event{Kind: transfer.BlobProgress, Digest: dg(2), Size: 10 * mib, Bytes: 2 * mib})
	time.Sleep(3 * barInterval)
	if line := barLine(buf.String()); !strings.Contains(line, "12.0 MiB / 20.0 MiB") {
		t.Fatalf("bar after a retry = %q", line)
	}

	// A flood of events for a second draws at most about ten times.
	before := strings.Count(buf.String(), " blobs")
	deadline := time.Now().Add(time.Second)
	for n := int64(0); time.Now().Before(deadline); n++ {
		r.Event(transfer.Event{Kind: transfer.BlobProgress, Digest: dg(2), Size: 10 * mib, Bytes: 2*mib + n%(8*mib)})
	}
	if draws := strings.Count(buf.String(), " blobs") - before; draws > 12 || draws < 3 {
		t.Errorf("%d draws in one second of events, want about 10", draws)
	}
}

func TestConcurrentEvents(t *testing.T) {
	for _, mode := range []Mode{ModeBar, ModePlain, ModeJSON, ModeNone} {
		t.Run(string(mode), func(t *testing.T) {
			buf := &syncBuffer{}
			r := New(buf, mode)
			var wg sync.WaitGroup
			for g := range 16 {
				wg.Go(func() {
					for i := range 20 {
						d := dg(g*100 + i)
						const size = 64 * 1024
						r.Event(transfer.Event{Kind: transfer.BlobStarted, Time: time.Now(), Digest: d, Size: size})
						for b := int64(0); b <= size; b += 8 * 1024 {
							r.Event(transfer.Event{Kind: transfer.BlobProgress, Time: time.Now(), Digest: d, Size: size, Bytes: b})
						}
						if i%7 == 3 {
							r.Event(transfer.Event{Kind: transfer.BlobRetry, Time: time.Now(), Digest: d, Size: size, Err: errors.New("reset")})
						}
						r.Event(transfer.Event{Kind: transfer.BlobDone, Time: time.Now(), Digest: d, Size: size, Bytes: size})
					}
				})
			}
			// Close while events are still arriving, from another goroutine.
			closed := make(chan struct{})
			go func() {
				time.Sleep(20 * time.Millisecond)
				r.Close()
				buf.seal()
				close(closed)
			}()
			wg.Wait()
			<-closed
			r.Close()
			time.Sleep(2 * barInterval)
			if n := buf.lateWrites(); n != 0 {
				t.Errorf("%d writes after Close", n)
			}
		})
	}
}

// TestConcurrentTotals checks that counts from 16 goroutines add up.
func TestConcurrentTotals(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf, ModePlain)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 10 {
				d := dg(g*100 + i)
				r.Event(transfer.Event{Kind: transfer.BlobStarted, Digest: d, Size: 1024})
				r.Event(transfer.Event{Kind: transfer.BlobProgress, Digest: d, Size: 1024, Bytes: 512})
				r.Event(transfer.Event{Kind: transfer.BlobDone, Digest: d, Size: 1024, Bytes: 1024})
			}
		})
	}
	wg.Wait()
	r.Close()
	out := buf.String()
	if n := strings.Count(out, "\ncopied sha256:") + btoi(strings.HasPrefix(out, "copied sha256:")); n != 160 {
		t.Errorf("%d copied lines, want 160", n)
	}
	if !strings.Contains(out, "total: copied 160 blobs (160.0 KiB)") {
		t.Errorf("summary wrong:\n%s", out[strings.LastIndex(out[:len(out)-1], "\n")+1:])
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0:                     "0 B",
		1023:                  "1023 B",
		1024:                  "1.0 KiB",
		12*mib + 300*1024:     "12.3 MiB",
		512 * mib:             "512.0 MiB",
		3 * 1024 * 1024 * mib: "3.0 TiB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
