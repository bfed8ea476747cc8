package transfer

import "errors"

// Sentinel errors callers test with errors.Is. The CLI maps ErrVerification
// and everything wrapping it to exit code 4.
var (
	// ErrVerification is the parent of every error that means content did not
	// match what it claims to be.
	ErrVerification = errors.New("verification failed")
	// ErrDigestMismatch: content hashes to a digest other than the expected one.
	ErrDigestMismatch = &wrapped{"digest mismatch", ErrVerification}
	// ErrSizeMismatch: content is longer or shorter than its descriptor says.
	ErrSizeMismatch = &wrapped{"size mismatch", ErrVerification}
	// ErrInvalidManifest: a manifest that is malformed, ambiguous or of an
	// unsupported type.
	ErrInvalidManifest = errors.New("invalid manifest")
	// ErrManifestTooLarge: a manifest beyond the configured size limit.
	ErrManifestTooLarge = errors.New("manifest too large")
	// ErrInvalidReference: a reference, digest or endpoint that cannot be parsed.
	ErrInvalidReference = errors.New("invalid reference")
	// ErrNotFound: the registry has no such repository, tag, manifest or blob.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry refused the credentials, or wants some.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrTooMany: a listing went past its page or item cap, or looped.
	ErrTooMany = errors.New("listing exceeded its limit")
)

// wrapped is a sentinel that is also another sentinel.
type wrapped struct {
	msg    string
	parent error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.parent }
