package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/store"
)

// blobIdleTimeout cancels a blob fetch from an upstream that sends nothing
// for this long.
const blobIdleTimeout = 2 * time.Minute

// serveBlob answers GET /v2/<name>/blobs/<digest> for a cached repository
// whose blob the layout lacks. The first request fetches it from the
// upstream and streams it to its client as it is written to the layout;
// requests that arrive meanwhile wait for the blob to be stored and read
// it from there. A request with a Range header waits for the whole blob
// too, then gets its range from the layout.
func (c *cache) serveBlob(w http.ResponseWriter, r *http.Request, rt route, d digest.Digest) *apiError {
	up, upRepo, ok := c.routes.route(rt.name)
	if !ok {
		return blobUnknown(d)
	}
	ctx := r.Context()
	client := w
	if r.Header.Get("Range") != "" {
		client = nil
	}
	var sent fillStatus
	err := c.flights.do(ctx, "blob "+string(d), func() (err error) {
		sent, err = c.fillBlob(client, up, upRepo, d)
		return err
	})
	switch {
	case sent == sentWhole:
		// The client has the verified blob, whether or not storing it
		// worked; the error is for the requests that wait on the layout.
		return nil
	case sent == sentPart:
		// The client has part of the body: cut the connection so that
		// it cannot take it for the whole.
		abortResponse(w)
		return c.fetchError(ctx, up, err, blobUnknown(d))
	case err != nil:
		return c.fetchError(ctx, up, err, blobUnknown(d))
	}
	rc, size, err := c.s.r.ReadBlob(ctx, d)
	if err != nil {
		return storeError(err, blobUnknown(d))
	}
	defer rc.Close()
	return serveContent(w, r, rc, size, d)
}

// headBlob answers HEAD /v2/<name>/blobs/<digest> for a cached repository
// whose blob the layout lacks, with the size the upstream gives; nothing
// is fetched.
func (c *cache) headBlob(w http.ResponseWriter, r *http.Request, rt route, d digest.Digest) *apiError {
	up, upRepo, ok := c.routes.route(rt.name)
	if !ok {
		return blobUnknown(d)
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.timeout)
	defer cancel()
	size, err := up.BlobSize(ctx, upRepo, d)
	if err != nil {
		return c.fetchError(r.Context(), up, err, blobUnknown(d))
	}
	return serveContent(w, r, nil, size, d)
}

// fillStatus is how much of a blob fillBlob sent to its client.
type fillStatus int

const (
	sentNothing fillStatus = iota // the client is to be answered from the layout
	sentPart                      // the response began and cannot be completed
	sentWhole                     // the client has the whole, verified blob
)

// fillBlob fetches blob d into the layout. With w set, the response is
// written as the blob streams; the last byte is held back until the
// digest and size are verified, so a client never receives a complete
// body with wrong content, and nothing is stored when they do not match.
// The byte is released before the blob is made durable: the client does
// not wait for the disk. It returns without fetching when the layout got
// the blob meanwhile (and then w is untouched).
func (c *cache) fillBlob(w http.ResponseWriter, up Upstream, upRepo string, d digest.Digest) (fillStatus, error) {
	if held, err := c.blobHeld(c.ctx, d); err != nil || held {
		return sentNothing, err
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	rc, size, err := up.Blob(ctx, upRepo, d)
	if err != nil {
		return sentNothing, err
	}
	defer rc.Close()
	u, err := c.s.rw.NewUpload(d.Algorithm())
	if err != nil {
		return sentNothing, err
	}
	defer u.Cancel() // a no-op once committed
	src := newIdleReader(rc, blobIdleTimeout, cancel)
	defer src.stop()
	var body io.Reader = src
	if size >= 0 {
		body = io.LimitReader(src, size+1) // one byte more tells a long body
	}
	var out *holdback
	var dst io.Writer = u
	status := sentNothing
	if w != nil {
		out = startBlobResponse(w, d, size)
		dst, status = io.MultiWriter(u, out), sentPart
	}
	if _, err := io.CopyBuffer(dst, body, make([]byte, 256<<10)); err != nil {
		return status, fmt.Errorf("fetching blob %s from %s: %w", d, up, err)
	}
	if err := checkFetched(d, size, u); err != nil {
		return status, err
	}
	if out != nil {
		// Errors writing to the client past this point cannot change the
		// response, and the blob is stored for the requests waiting on it.
		_ = out.release()
		status = sentWhole
	}
	if err := u.Commit(ctx, d); err != nil {
		return status, err
	}
	c.grew(u.Size())
	c.s.log.Info("cached a blob", "digest", d, "bytes", u.Size(), "upstream", up.String(), "upstream_repository", upRepo)
	return status, nil
}

// checkFetched tells whether the upload holds blob d of size bytes (-1:
// any size), with errors that wrap the store's.
func checkFetched(d digest.Digest, size int64, u *store.Upload) error {
	switch n := u.Size(); {
	case size >= 0 && n != size:
		return fmt.Errorf("%w: blob %s: the upstream sent %d bytes for a blob of %d", store.ErrSizeMismatch, d, n, size)
	case u.Digest() != d:
		return fmt.Errorf("%w: blob %s: the upstream sent content that hashes to %s", store.ErrDigestMismatch, d, u.Digest())
	}
	return nil
}

// startBlobResponse writes the status and headers of a 200 for blob d of
// size bytes (-1: unknown, the body is chunked) and returns the writer of
// its body.
func startBlobResponse(w http.ResponseWriter, d digest.Digest, size int64) *holdback {
	h := w.Header()
	h.Set("Docker-Content-Digest", string(d))
	h.Set("ETag", `"`+string(d)+`"`)
	h.Set("Cache-Control", "max-age=31536000")
	h.Set("Content-Type", "application/octet-stream")
	if size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.WriteHeader(http.StatusOK)
	return &holdback{w: w}
}

// holdback writes to w all but the last byte written to it; release sends
// that byte. After w fails (the client went away) it keeps accepting
// writes, so that the fetch feeding it completes for the requests waiting
// on it.
type holdback struct {
	w    io.Writer
	tail [1]byte
	held bool
	err  error
}

func (h *holdback) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if h.err == nil && h.held {
		_, h.err = h.w.Write(h.tail[:])
	}
	if h.err == nil && len(p) > 1 {
		_, h.err = h.w.Write(p[:len(p)-1])
	}
	h.tail[0], h.held = p[len(p)-1], true
	return len(p), nil
}

// release sends the byte held back and returns the first error of w.
func (h *holdback) release() error {
	if h.err == nil && h.held {
		_, h.err = h.w.Write(h.tail[:])
		h.held = false
	}
	return h.err
}

// idleReader calls cancel when no byte arrives for the timeout.
type idleReader struct {
	r       io.Reader
	timeout time.Duration
	timer   *time.Timer
}

func newIdleReader(r io.Reader, timeout time.Duration, cancel context.CancelFunc) *idleReader {
	return &idleReader{r: r, timeout: timeout, timer: time.AfterFunc(timeout, cancel)}
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.timer.Reset(r.timeout)
	}
	return n, err
}

// stop ends the watch.
func (r *idleReader) stop() { r.timer.Stop() }

// abortResponse makes the server cut the connection of a response that
// began and cannot be completed, once the request is logged, so that the
// client sees an error rather than a short or wrong body it could take for
// the whole.
func abortResponse(w http.ResponseWriter) {
	if rec, ok := w.(*recorder); ok {
		rec.abort = true
		return
	}
	panic(http.ErrAbortHandler)
}
