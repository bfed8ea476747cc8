package registry

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/store"
)

// Blob uploads: https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-blobs
//
// Every upload streams into a store.Upload (a locked temp file of the
// layout, hashed as it is written) and becomes a blob only when its digest
// is verified: a wrong digest is 400 DIGEST_INVALID and nothing is stored
// (ROBUSTNESS row 23). Request bodies are copied through a fixed buffer,
// never held whole.

// uploadSession is an open upload, at /v2/<repo>/blobs/uploads/<id>.
type uploadSession struct {
	id, repo string
	up       *store.Upload
	// mu is held by the request that writes to or finishes the session,
	// so chunks of one session never interleave.
	mu   sync.Mutex
	done atomic.Bool

	// Guarded by Server.sessMu.
	busy  int       // requests using the session now
	last  time.Time // end of the last request
	timer *time.Timer
}

// cancel drops the session's data.
func (sess *uploadSession) cancel() {
	sess.done.Store(true)
	if sess.timer != nil {
		sess.timer.Stop()
	}
	_ = sess.up.Cancel()
}

func uploadUnknown(id string) *apiError {
	return newError(http.StatusNotFound, codeBlobUploadUnknown, "upload %q is unknown: it was finished, cancelled or expired, or belongs to another repository; start a new upload", id)
}

// uploadLocation is the URL of a session.
func uploadLocation(repo, id string) string { return "/v2/" + repo + "/blobs/uploads/" + id }

// rangeHeader is the Range value for n bytes received: "0-(n-1)", and
// "0-0" for none, as distribution answers.
func rangeHeader(n int64) string {
	if n == 0 {
		return "0-0"
	}
	return "0-" + strconv.FormatInt(n-1, 10)
}

func (s *Server) newSession(repo string, alg digest.Algorithm) (*uploadSession, *apiError) {
	s.sessMu.Lock()
	closed, full := s.closed, len(s.sessions) >= s.opts.MaxUploads
	s.sessMu.Unlock()
	switch {
	case closed:
		return nil, newError(http.StatusServiceUnavailable, codeUnknown, "the registry is shutting down")
	case full:
		return nil, newError(http.StatusTooManyRequests, codeTooManyRequests, "too many uploads in progress (%d); retry later", s.opts.MaxUploads).
			withHeader("Retry-After", "10")
	}
	up, err := s.rw.NewUpload(alg)
	if err != nil {
		return nil, storeError(err, nil)
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	sess := &uploadSession{id: hex.EncodeToString(b[:]), repo: repo, up: up, last: time.Now()}
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.closed {
		_ = up.Cancel()
		return nil, newError(http.StatusServiceUnavailable, codeUnknown, "the registry is shutting down")
	}
	s.sessions[sess.id] = sess
	sess.timer = time.AfterFunc(s.opts.UploadTimeout, func() { s.expire(sess) })
	return sess, nil
}

// expire cancels sess if it has been idle for UploadTimeout, else checks
// again when it could be.
func (s *Server) expire(sess *uploadSession) {
	s.sessMu.Lock()
	if s.sessions[sess.id] != sess {
		s.sessMu.Unlock()
		return
	}
	idle := time.Since(sess.last)
	if sess.busy > 0 || idle < s.opts.UploadTimeout {
		wait := s.opts.UploadTimeout
		if sess.busy == 0 {
			wait -= idle
		}
		sess.timer.Reset(wait)
		s.sessMu.Unlock()
		return
	}
	delete(s.sessions, sess.id)
	s.sessMu.Unlock()
	sess.cancel()
	s.log.Info("upload expired", "repository", sess.repo, "upload", sess.id, "bytes", sess.up.Size(), "idle", idle.Round(time.Second))
}

// acquire finds the session of rt and marks it in use; with lock, it also
// waits for the requests writing to it.
func (s *Server) acquire(rt route, lock bool) (*uploadSession, *apiError) {
	s.sessMu.Lock()
	sess := s.sessions[rt.ref]
	if sess == nil || sess.repo != rt.name {
		s.sessMu.Unlock()
		return nil, uploadUnknown(rt.ref)
	}
	sess.busy++
	s.sessMu.Unlock()
	if lock {
		sess.mu.Lock()
	}
	if sess.done.Load() {
		s.release(sess, lock)
		return nil, uploadUnknown(rt.ref)
	}
	return sess, nil
}

func (s *Server) release(sess *uploadSession, locked bool) {
	if locked {
		sess.mu.Unlock()
	}
	s.sessMu.Lock()
	sess.busy--
	sess.last = time.Now()
	s.sessMu.Unlock()
}

// forget removes sess from the open sessions.
func (s *Server) forget(sess *uploadSession) {
	s.sessMu.Lock()
	if s.sessions[sess.id] == sess {
		delete(s.sessions, sess.id)
	}
	s.sessMu.Unlock()
	sess.done.Store(true)
	sess.timer.Stop()
}

// startUpload answers POST /v2/<name>/blobs/uploads/:
//   - ?mount=<digest>[&from=<repo>]: 201 when the layout holds the blob
//     (repositories share blobs, so "from" is only validated), else a new
//     session (202), as the spec allows;
//   - ?digest=<digest> with a body: a monolithic upload, 201;
//   - otherwise a new session: 202 with Location, Docker-Upload-UUID and
//     "Range: 0-0". ?digest-algorithm=sha512 hashes the session with
//     sha512 as it is written.
func (s *Server) startUpload(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	ctx := r.Context()
	q := r.URL.Query()
	if m := q.Get("mount"); m != "" {
		d, aerr := parseDigest(m)
		if aerr != nil {
			return aerr
		}
		if from := q.Get("from"); from != "" {
			if aerr := checkName(from); aerr != nil {
				return aerr
			}
		}
		// Touch, not Stat: it finds the blob and restarts its grace period
		// until the manifest that uses it is pushed.
		err := s.rw.Touch(ctx, d)
		if err == nil {
			return blobCreated(w, rt.name, d)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return storeError(err, nil)
		}
	}
	alg := digest.Canonical
	if a := q.Get("digest-algorithm"); a != "" {
		alg = digest.Algorithm(a)
		if alg != digest.SHA256 && alg != digest.SHA512 {
			return newError(http.StatusBadRequest, codeDigestInvalid, "digest algorithm %q is not supported: use sha256 or sha512", a)
		}
	}
	if dq := q.Get("digest"); dq != "" && q.Get("mount") == "" {
		d, aerr := parseDigest(dq)
		if aerr != nil {
			return aerr
		}
		// A POST with a body (or of the empty blob) is the whole upload;
		// one without is a session, as for registries without monolithic
		// POST.
		if r.ContentLength != 0 || d == d.Algorithm().FromBytes(nil) {
			return s.monolithic(w, r, rt, d)
		}
		if q.Get("digest-algorithm") == "" {
			alg = d.Algorithm()
		}
	}
	sess, aerr := s.newSession(rt.name, alg)
	if aerr != nil {
		return aerr
	}
	h := w.Header()
	h.Set("Location", uploadLocation(rt.name, sess.id))
	h.Set("Docker-Upload-UUID", sess.id)
	h.Set("Range", "0-0")
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// monolithic stores the body of a single POST as blob d.
func (s *Server) monolithic(w http.ResponseWriter, r *http.Request, rt route, d digest.Digest) *apiError {
	up, err := s.rw.NewUpload(d.Algorithm())
	if err != nil {
		return storeError(err, nil)
	}
	if _, aerr := copyBody(up, r.Body, -1); aerr != nil {
		_ = up.Cancel()
		return aerr
	}
	if err := up.Commit(r.Context(), d); err != nil {
		return commitError(err, d)
	}
	return blobCreated(w, rt.name, d)
}

// blobCreated answers 201 for blob d in repo.
func blobCreated(w http.ResponseWriter, repo string, d digest.Digest) *apiError {
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/blobs/"+string(d))
	h.Set("Docker-Content-Digest", string(d))
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

func commitError(err error, d digest.Digest) *apiError {
	if errors.Is(err, store.ErrDigestMismatch) || errors.Is(err, store.ErrInvalidDigest) {
		return newError(http.StatusBadRequest, codeDigestInvalid, "%v", err).withDetail(map[string]string{"digest": string(d)})
	}
	return storeError(err, nil)
}

// countingReader remembers the error of the request body, to tell a
// client failure from a failure of the layout.
type countingReader struct {
	r   io.Reader
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// copyBody streams body into up; limit >= 0 copies at most limit bytes.
func copyBody(up *store.Upload, body io.Reader, limit int64) (int64, *apiError) {
	src := &countingReader{r: body}
	var r io.Reader = src
	if limit >= 0 {
		r = io.LimitReader(src, limit)
	}
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(writerOnly{up}, r, buf)
	switch {
	case err == nil:
		return n, nil
	case src.err != nil:
		return n, newError(http.StatusBadRequest, codeBlobUploadInvalid, "reading the request body after %d bytes: %v", n, src.err)
	case errors.Is(err, store.ErrUploadClosed):
		return n, newError(http.StatusNotFound, codeBlobUploadUnknown, "the upload was cancelled while the body was being written")
	}
	return n, internalError(err)
}

// parseContentRange parses the Content-Range of a chunk: "<first>-<last>"
// as the spec writes it, also accepted with a "bytes " or "bytes=" prefix
// and a "/<total>" suffix as some clients send.
func parseContentRange(v string) (first, last int64, ok bool) {
	v = strings.TrimSpace(v)
	if rest, found := strings.CutPrefix(v, "bytes"); found {
		v = strings.TrimLeft(rest, " =")
	}
	if i := strings.IndexByte(v, '/'); i >= 0 {
		v = v[:i]
	}
	a, b, found := strings.Cut(v, "-")
	if !found {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	// last-first+1 must fit an int64: 0-9223372036854775807 would announce
	// a negative length, read as "no length" by copyBody.
	if err1 != nil || err2 != nil || first < 0 || last < first || last-first == math.MaxInt64 {
		return 0, 0, false
	}
	return first, last, true
}

// writeChunk appends the body of r to sess. With a Content-Range, the
// chunk must start where the upload ends, else 416 with the real Range
// and nothing is read (ROBUSTNESS row 24); the body must then hold exactly
// the range.
func (s *Server) writeChunk(r *http.Request, rt route, sess *uploadSession) *apiError {
	size := sess.up.Size()
	limit := int64(-1)
	if cr := r.Header.Get("Content-Range"); cr != "" {
		first, last, ok := parseContentRange(cr)
		if !ok {
			return newError(http.StatusBadRequest, codeBlobUploadInvalid, "malformed Content-Range %q: expected <first>-<last>", cr).
				withHeader("Range", rangeHeader(size)).withHeader("Location", uploadLocation(rt.name, sess.id))
		}
		if first != size {
			return newError(http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid,
				"chunk %d-%d does not start where the upload ends: %d bytes received, the next chunk starts at %d", first, last, size, size).
				withHeader("Range", rangeHeader(size)).withHeader("Location", uploadLocation(rt.name, sess.id)).
				withDetail(map[string]int64{"offset": size})
		}
		limit = last - first + 1
		if r.ContentLength >= 0 && r.ContentLength != limit {
			return newError(http.StatusBadRequest, codeBlobUploadInvalid, "Content-Range %s is %d bytes but Content-Length is %d", cr, limit, r.ContentLength).
				withHeader("Range", rangeHeader(size)).withHeader("Location", uploadLocation(rt.name, sess.id))
		}
	}
	n, aerr := copyBody(sess.up, r.Body, limit)
	if aerr != nil {
		return aerr.withHeader("Range", rangeHeader(sess.up.Size())).withHeader("Location", uploadLocation(rt.name, sess.id))
	}
	if limit >= 0 {
		if n < limit {
			return newError(http.StatusBadRequest, codeBlobUploadInvalid, "the chunk has %d bytes, its Content-Range announced %d", n, limit).
				withHeader("Range", rangeHeader(sess.up.Size())).withHeader("Location", uploadLocation(rt.name, sess.id))
		}
		var one [1]byte
		if m, _ := io.ReadFull(r.Body, one[:]); m > 0 {
			return newError(http.StatusBadRequest, codeBlobUploadInvalid, "the chunk is longer than its Content-Range; only the first %d bytes were kept", limit).
				withHeader("Range", rangeHeader(sess.up.Size())).withHeader("Location", uploadLocation(rt.name, sess.id))
		}
	}
	return nil
}

// patchUpload answers PATCH on a session: a chunk (with Content-Range) or
// a stream (without), 202 with the new Range.
func (s *Server) patchUpload(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	sess, aerr := s.acquire(rt, true)
	if aerr != nil {
		return aerr
	}
	defer s.release(sess, true)
	if aerr := s.writeChunk(r, rt, sess); aerr != nil {
		return aerr
	}
	return uploadAccepted(w, rt, sess, http.StatusAccepted)
}

func uploadAccepted(w http.ResponseWriter, rt route, sess *uploadSession, status int) *apiError {
	h := w.Header()
	h.Set("Location", uploadLocation(rt.name, sess.id))
	h.Set("Range", rangeHeader(sess.up.Size()))
	h.Set("Docker-Upload-UUID", sess.id)
	if status != http.StatusNoContent {
		h.Set("Content-Length", "0")
	}
	w.WriteHeader(status)
	return nil
}

// putUpload answers PUT <session>?digest=: an optional last chunk, then the
// digest check. The session ends whatever the result, except for a missing
// or malformed digest and an out-of-order chunk, which leave it open.
func (s *Server) putUpload(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	dq := r.URL.Query().Get("digest")
	if dq == "" {
		return newError(http.StatusBadRequest, codeDigestInvalid, "the digest query parameter is required to finish an upload")
	}
	d, aerr := parseDigest(dq)
	if aerr != nil {
		return aerr
	}
	sess, aerr := s.acquire(rt, true)
	if aerr != nil {
		return aerr
	}
	defer s.release(sess, true)
	if r.ContentLength != 0 {
		if aerr := s.writeChunk(r, rt, sess); aerr != nil {
			return aerr
		}
	}
	s.forget(sess)
	if err := sess.up.Commit(r.Context(), d); err != nil {
		return commitError(err, d)
	}
	return blobCreated(w, rt.name, d)
}

// uploadStatus answers GET on a session: 204 with its Range.
func (s *Server) uploadStatus(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	sess, aerr := s.acquire(rt, false)
	if aerr != nil {
		return aerr
	}
	defer s.release(sess, false)
	return uploadAccepted(w, rt, sess, http.StatusNoContent)
}

// cancelUpload answers DELETE on a session: its data is dropped, 204.
// A request still writing to it fails.
func (s *Server) cancelUpload(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	sess, aerr := s.acquire(rt, false)
	if aerr != nil {
		return aerr
	}
	defer s.release(sess, false)
	s.forget(sess)
	sess.cancel()
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
	return nil
}
