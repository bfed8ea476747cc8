package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/ferry-oci/ferry/internal/store"
)

// Error codes of the distribution spec
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes).
// UNKNOWN is distribution's code for a server-side failure, which the spec
// leaves open.
const (
	codeBlobUnknown         = "BLOB_UNKNOWN"
	codeBlobUploadInvalid   = "BLOB_UPLOAD_INVALID"
	codeBlobUploadUnknown   = "BLOB_UPLOAD_UNKNOWN"
	codeDigestInvalid       = "DIGEST_INVALID"
	codeManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
	codeManifestInvalid     = "MANIFEST_INVALID"
	codeManifestUnknown     = "MANIFEST_UNKNOWN"
	codeNameInvalid         = "NAME_INVALID"
	codeNameUnknown         = "NAME_UNKNOWN"
	codeSizeInvalid         = "SIZE_INVALID"
	codeUnauthorized        = "UNAUTHORIZED"
	codeDenied              = "DENIED"
	codeUnsupported         = "UNSUPPORTED"
	codeTooManyRequests     = "TOOMANYREQUESTS"
	codeUnknown             = "UNKNOWN"
)

// apiError is one failed request: an HTTP status and the spec's error body.
// Handlers return it; serveHTTP writes it.
type apiError struct {
	status  int
	code    string
	message string
	detail  any
	// header is set on the response before the body (Range after a 416,
	// WWW-Authenticate after a 401, Allow after a 405).
	header http.Header
	// cause is logged, never sent: internal errors keep file paths and
	// system details out of responses.
	cause error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.status, e.code, e.message, e.cause)
	}
	return fmt.Sprintf("%d %s: %s", e.status, e.code, e.message)
}

func (e *apiError) Unwrap() error { return e.cause }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// withHeader adds a response header to e and returns it.
func (e *apiError) withHeader(key, value string) *apiError {
	if e.header == nil {
		e.header = http.Header{}
	}
	e.header.Add(key, value)
	return e
}

// withDetail sets the detail field of e and returns it.
func (e *apiError) withDetail(detail any) *apiError {
	e.detail = detail
	return e
}

// internalError hides err from the client (it is logged).
func internalError(err error) *apiError {
	return &apiError{status: http.StatusInternalServerError, code: codeUnknown, message: "internal server error; the server log has the details", cause: err}
}

// storeError maps an error of internal/store to a response: notFound is
// used for store.ErrNotFound, digest and size errors become DIGEST_INVALID
// and SIZE_INVALID with the store's message (it names the digest, never a
// path), and anything else is internal.
func storeError(err error, notFound *apiError) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, store.ErrInvalidDigest), errors.Is(err, store.ErrDigestMismatch):
		return &apiError{status: http.StatusBadRequest, code: codeDigestInvalid, message: err.Error()}
	case errors.Is(err, store.ErrSizeMismatch):
		return &apiError{status: http.StatusBadRequest, code: codeSizeInvalid, message: err.Error()}
	case errors.Is(err, store.ErrNotFound) && notFound != nil:
		notFound.cause = err
		return notFound
	}
	return internalError(err)
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeError writes e as {"errors":[{"code":…,"message":…,"detail":…}]}.
// A HEAD response gets the status and headers only.
func writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	h := w.Header()
	for k, vs := range e.header {
		h[k] = append(h[k], vs...)
	}
	body, err := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.code, Message: e.message, Detail: e.detail}}})
	if err != nil { // detail that does not encode: drop it
		body, _ = json.Marshal(errorBody{Errors: []errorEntry{{Code: e.code, Message: e.message}}})
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Del("Docker-Content-Digest")
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
