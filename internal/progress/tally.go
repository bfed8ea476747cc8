package progress

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// tally counts what the events say has happened. It is not safe for
// concurrent use: its owner locks around it.
type tally struct {
	flights map[digest.Digest]*flight

	blobs   int   // blobs seen: started, or finished without a BlobStarted
	total   int64 // their sizes
	copied  int
	skipped int
	mounted int
	failed  int
	retries int

	copiedBytes int64 // sizes of copied blobs
	doneBytes   int64 // sizes of copied, skipped and mounted blobs
	moving      int64 // bytes moved so far of blobs still in flight
	wire        int64 // bytes moved in all, counting those moved again after a retry

	manifestsWritten int
	manifestsSkipped int
}

// flight is a blob being moved. n counts transfers of the same digest in
// flight at once (to different targets); their progress cannot be told
// apart, so they share one byte count.
type flight struct {
	size  int64
	bytes int64
	n     int
}

// add counts e and returns the size of the blob or manifest it is about:
// e.Size, or the size its BlobStarted gave when e carries none.
func (t *tally) add(e transfer.Event) int64 {
	if t.flights == nil {
		t.flights = make(map[digest.Digest]*flight)
	}
	switch e.Kind {
	case transfer.BlobStarted:
		t.start(e)
		return max(e.Size, 0)
	case transfer.BlobProgress, transfer.BlobRetry:
		f := t.flights[e.Digest]
		if f == nil {
			f = t.start(e)
		}
		if e.Kind == transfer.BlobRetry {
			t.retries++
		}
		// Bytes go backwards after a retry that starts over.
		b := max(e.Bytes, 0)
		if f.size > 0 {
			b = min(b, f.size)
		}
		t.moving += b - f.bytes
		t.wire += max(b-f.bytes, 0)
		f.bytes = b
		return f.size
	case transfer.BlobDone, transfer.BlobSkipped, transfer.BlobMounted, transfer.BlobFailed:
		size := max(e.Size, 0)
		if f := t.flights[e.Digest]; f != nil {
			if size == 0 {
				size = f.size
			}
			if e.Kind == transfer.BlobDone {
				t.wire += max(size-f.bytes, 0) // the last bytes, if unreported
			}
			f.n--
			if f.n <= 0 {
				t.moving -= f.bytes
				delete(t.flights, e.Digest)
			}
		} else {
			// Skipped and mounted blobs come without a BlobStarted.
			t.blobs++
			t.total += size
			if e.Kind == transfer.BlobDone {
				t.wire += size
			}
		}
		switch e.Kind {
		case transfer.BlobDone:
			t.copied++
			t.copiedBytes += size
			t.doneBytes += size
		case transfer.BlobSkipped:
			t.skipped++
			t.doneBytes += size
		case transfer.BlobMounted:
			t.mounted++
			t.doneBytes += size
		case transfer.BlobFailed:
			t.failed++
		}
		return size
	case transfer.ManifestWritten:
		t.manifestsWritten++
	case transfer.ManifestSkipped:
		t.manifestsSkipped++
	}
	return max(e.Size, 0)
}

// start counts a blob whose transfer began.
func (t *tally) start(e transfer.Event) *flight {
	f := t.flights[e.Digest]
	if f == nil {
		f = &flight{size: max(e.Size, 0)}
		t.flights[e.Digest] = f
	}
	f.n++
	t.blobs++
	t.total += max(e.Size, 0)
	return f
}

// finished is how many blobs are done: copied, skipped or mounted.
func (t *tally) finished() int {
	return t.copied + t.skipped + t.mounted
}

// current is how many bytes of total count as done.
func (t *tally) current() int64 {
	return min(max(t.doneBytes+t.moving, 0), t.total)
}

// summary is the plain mode's last line.
func (t *tally) summary() string {
	parts := []string{fmt.Sprintf("copied %s (%s)", plural(t.copied, "blob"), humanBytes(t.copiedBytes))}
	for _, p := range []struct {
		n    int
		what string
	}{{t.skipped, "skipped"}, {t.mounted, "mounted"}, {t.failed, "failed"}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", p.what, p.n))
		}
	}
	if t.retries > 0 {
		parts = append(parts, plural(t.retries, "retry"))
	}
	parts = append(parts, "wrote "+plural(t.manifestsWritten, "manifest"))
	if t.manifestsSkipped > 0 {
		parts = append(parts, fmt.Sprintf("%s already there", plural(t.manifestsSkipped, "manifest")))
	}
	return "total: " + strings.Join(parts, ", ")
}

// plural says "1 blob", "2 blobs", "3 retries".
func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	if strings.HasSuffix(noun, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(noun, "y"))
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// shortDigest shortens "sha256:<64 hex>" to "sha256:<12 hex>".
func shortDigest(d digest.Digest) string {
	algo, hex, ok := strings.Cut(string(d), ":")
	if !ok || len(hex) <= 12 {
		return string(d)
	}
	return algo + ":" + hex[:12]
}

// humanBytes formats a size in IEC units: "512 B", "12.3 MiB".
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v /= unit
		if v < unit {
			return fmt.Sprintf("%.1f %s", v, u)
		}
	}
	return fmt.Sprintf("%.1f EiB", v/unit)
}

// errText is an event's error as text; errors are never printed as values.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
