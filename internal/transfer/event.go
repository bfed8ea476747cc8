package transfer

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// EventKind says what happened to a blob or manifest during a copy.
type EventKind int

// Kinds of event. A blob that is already at the target gets one
// BlobSkipped or BlobMounted. Any other gets BlobStarted, any number of
// BlobProgress, and then BlobDone or BlobFailed; a blob that is retried
// gets BlobRetry and counts from its Bytes again.
const (
	BlobStarted     EventKind = iota + 1 // a transfer began; Size is the total
	BlobProgress                         // Bytes of Size have moved so far
	BlobRetry                            // a retry after Err; Bytes is where it resumes
	BlobDone                             // the blob was copied and verified
	BlobSkipped                          // the destination already had it
	BlobMounted                          // mounted from another repository of the same registry
	BlobFailed                           // gave up after Err
	ManifestWritten                      // a manifest (or index) was written; Ref names it
	ManifestSkipped                      // the destination already had this manifest
)

func (k EventKind) String() string {
	switch k {
	case BlobStarted:
		return "started"
	case BlobProgress:
		return "progress"
	case BlobRetry:
		return "retry"
	case BlobDone:
		return "done"
	case BlobSkipped:
		return "skipped"
	case BlobMounted:
		return "mounted"
	case BlobFailed:
		return "failed"
	case ManifestWritten:
		return "manifest-written"
	case ManifestSkipped:
		return "manifest-skipped"
	}
	return "unknown"
}

// Event reports progress of a copy. Events for one blob arrive in order;
// events for different blobs interleave, from several goroutines.
type Event struct {
	Kind      EventKind
	Time      time.Time
	Digest    digest.Digest
	MediaType string
	Size      int64  // total bytes of the blob or manifest
	Bytes     int64  // bytes moved so far (BlobProgress, BlobRetry, BlobDone)
	Ref       string // for manifests: the destination reference written
	Err       error  // BlobRetry, BlobFailed
}

// EventFunc receives events. It is called from several goroutines at once
// and must be quick: copying waits while it runs.
type EventFunc func(Event)
