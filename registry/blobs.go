package registry

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

func blobUnknown(d digest.Digest) *apiError {
	return newError(http.StatusNotFound, codeBlobUnknown, "blob %s is not in this registry", d).withDetail(map[string]string{"digest": string(d)})
}

// getBlob answers GET and HEAD /v2/<name>/blobs/<digest>. Blobs are shared
// by all repositories (see RepositoryAnnotation). The blob is streamed from
// the layout, with single byte ranges (RFC 9110 section 14).
//
// A HEAD on a writable layout also refreshes the blob's modification time:
// clients HEAD a blob, skip uploading it when it exists and push the
// manifest next, and the refreshed time lets GC's grace period cover that
// window as it covers a fresh upload (ROBUSTNESS row 29).
func (s *Server) getBlob(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	d, aerr := parseDigest(rt.ref)
	if aerr != nil {
		return aerr
	}
	ctx := r.Context()
	if r.Method == http.MethodHead {
		size, err := s.r.Stat(ctx, d)
		if errors.Is(err, store.ErrNotFound) && s.cache != nil {
			return s.cache.headBlob(w, r, rt, d)
		}
		if err != nil {
			return storeError(err, blobUnknown(d))
		}
		if s.rw != nil && !s.opts.ReadOnly {
			if err := s.rw.Touch(ctx, d); err != nil && !errors.Is(err, store.ErrNotFound) {
				s.log.DebugContext(ctx, "refreshing blob time", "digest", d, "error", err)
			}
		}
		return serveContent(w, r, nil, size, d)
	}
	rc, size, err := s.r.ReadBlob(ctx, d)
	if errors.Is(err, store.ErrNotFound) && s.cache != nil {
		return s.cache.serveBlob(w, r, rt, d)
	}
	if err != nil {
		return storeError(err, blobUnknown(d))
	}
	defer rc.Close()
	return serveContent(w, r, rc, size, d)
}

// serveContent writes blob d of size bytes from rc (nil for HEAD), honouring
// a single-range Range header: 206 with Content-Range, 416 with
// "Content-Range: bytes */size" when unsatisfiable, the whole blob for
// multiple ranges or other units. The content never changes for a digest,
// so If-Range always matches and the digest is a strong ETag.
func serveContent(w http.ResponseWriter, r *http.Request, rc io.ReadSeeker, size int64, d digest.Digest) *apiError {
	h := w.Header()
	etag := `"` + string(d) + `"`
	h.Set("Docker-Content-Digest", string(d))
	h.Set("ETag", etag)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Cache-Control", "max-age=31536000")
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h.Set("Content-Type", "application/octet-stream")
	start, length, partial, ok := parseRange(r.Header.Get("Range"), size)
	if !ok {
		return newError(http.StatusRequestedRangeNotSatisfiable, codeUnsupported,
			"range %q cannot be satisfied: blob %s has %d bytes", r.Header.Get("Range"), d, size).
			withHeader("Content-Range", fmt.Sprintf("bytes */%d", size))
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size))
	}
	if rc == nil || r.Method == http.MethodHead {
		w.WriteHeader(status)
		return nil
	}
	if start > 0 {
		if _, err := rc.Seek(start, io.SeekStart); err != nil {
			return internalError(fmt.Errorf("seeking in blob %s: %w", d, err))
		}
	}
	if fb, ok := rc.(store.FileBacked); ok && length >= sendfileMin {
		// A blob inside a file (an archive, a bundle's part) goes out with
		// sendfile too, as one in the layout does.
		if f, ok := fb.File(); ok {
			defer f.Close()
			rc = f
		}
	}
	w.WriteHeader(status)
	// Errors past this point cannot change the response: the client sees a
	// short body, which its length and digest checks catch.
	_, _ = io.CopyN(w, rc, length)
	return nil
}

// sendfileMin is the smallest blob of an archive sent from a file opened
// for it: below it, opening the file costs more than copying the bytes.
const sendfileMin = 64 << 10

func etagMatches(header, etag string) bool {
	for v := range strings.SplitSeq(header, ",") {
		v = strings.TrimPrefix(strings.TrimSpace(v), "W/")
		if v == etag || v == "*" {
			return true
		}
	}
	return false
}

// parseRange interprets a Range header for a blob of size bytes. It
// returns the part to send, whether it is partial, and ok=false when the
// range is unsatisfiable (a first byte past the end, a last byte before
// the first, an empty suffix). A missing header, other units or several
// ranges select the whole blob, as RFC 9110 allows.
func parseRange(header string, size int64) (start, length int64, partial, ok bool) {
	spec, found := strings.CutPrefix(strings.TrimSpace(header), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, size, false, true
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" { // suffix: the last n bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 || size == 0 {
			return 0, 0, false, false
		}
		n = min(n, size)
		return size - n, n, true, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 || a >= size {
		return 0, 0, false, false
	}
	b := size - 1
	if last != "" {
		b, err = strconv.ParseInt(last, 10, 64)
		if err != nil || b < a {
			return 0, 0, false, false
		}
		b = min(b, size-1)
	}
	return a, b - a + 1, true, true
}

// deleteBlob answers DELETE /v2/<name>/blobs/<digest>: 202 when the blob
// was removed, 404 BLOB_UNKNOWN when it is absent. Blobs are shared by all
// repositories, so a blob that a manifest still uses (in any repository)
// is not removed: that is 405 UNSUPPORTED naming the manifest; delete the
// manifests first, or let garbage collection remove unused blobs. The
// check and the removal run under the index lock, so no manifest that
// uses the blob can be pushed in between.
func (s *Server) deleteBlob(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	d, aerr := parseDigest(rt.ref)
	if aerr != nil {
		return aerr
	}
	ctx := r.Context()
	err := s.rw.Update(ctx, func(idx *ocispec.Index) error {
		if _, err := s.rw.Stat(ctx, d); err != nil {
			return err
		}
		user, err := s.blobUser(ctx, idx, d)
		if err != nil {
			return err
		}
		if user == d {
			return newError(http.StatusMethodNotAllowed, codeUnsupported,
				"blob %s is a manifest listed in the registry: delete it with DELETE /v2/<name>/manifests/%s", d, d)
		}
		if user != "" {
			return newError(http.StatusMethodNotAllowed, codeUnsupported,
				"blob %s is used by manifest %s: delete the manifests that use it first (unused blobs are also removed by garbage collection)", d, user)
		}
		return s.rw.DeleteBlob(ctx, d)
	})
	if err != nil {
		return storeError(err, blobUnknown(d))
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
