package transfer

import (
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"

	_ "crypto/sha256" // register sha256 with go-digest
	_ "crypto/sha512" // register sha512 with go-digest
)

// ParseDigest validates s strictly before it is used in a URL or a path:
// a known algorithm (sha256, sha512) and lowercase hex of the exact length
// (ROBUSTNESS row 8, CVE-2024-3727).
func ParseDigest(s string) (digest.Digest, error) {
	d := digest.Digest(s)
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("%w: digest %q: %v (expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>)", ErrInvalidReference, s, err)
	}
	switch d.Algorithm() {
	case digest.SHA256, digest.SHA512:
		return d, nil
	}
	return "", fmt.Errorf("%w: digest %q: algorithm %q is not supported (use sha256 or sha512)", ErrInvalidReference, s, d.Algorithm())
}

// verifier checks that a stream has the expected digest and size as it is
// read. Read returns an error instead of io.EOF when the content is wrong,
// so a caller that copies to EOF never accepts bad bytes.
type verifier struct {
	r        io.Reader
	want     digest.Digest
	size     int64     // -1: unknown
	h        hash.Hash // nil: sizes only (a verified source, see VerifiedSource)
	n        int64
	what     string
	finished bool
	err      error // the verification failure, once there is one
}

// newVerifier wraps r; size < 0 skips the size check.
func newVerifier(r io.Reader, want digest.Digest, size int64, what string) *verifier {
	return &verifier{r: r, want: want, size: size, h: want.Algorithm().Hash(), what: what}
}

// newSizeVerifier wraps r to check its size only, for a blob whose source
// has verified it and whose target hashes it (VerifiedSource).
func newSizeVerifier(r io.Reader, want digest.Digest, size int64, what string) *verifier {
	return &verifier{r: r, want: want, size: size, what: what}
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.size >= 0 && v.n+int64(len(p)) > v.size+1 {
		// Never read more than one byte past the declared size.
		p = p[:v.size+1-v.n]
	}
	n, err := v.r.Read(p)
	if v.h != nil {
		v.h.Write(p[:n])
	}
	v.n += int64(n)
	if v.size >= 0 && v.n > v.size {
		v.err = fmt.Errorf("%w: %s: more than the declared %d bytes", ErrSizeMismatch, v.what, v.size)
		return n, v.err
	}
	if err == io.EOF && !v.finished {
		if v.size >= 0 && v.n != v.size {
			v.err = fmt.Errorf("%w: %s: got %d bytes, expected %d", ErrSizeMismatch, v.what, v.n, v.size)
			return n, v.err
		}
		// Without a hash, the source vouches for the digest, and the
		// target checks it.
		if v.h != nil {
			if got := digest.NewDigest(v.want.Algorithm(), v.h); got != v.want {
				v.err = fmt.Errorf("%w: %s: content hashes to %s", ErrDigestMismatch, v.what, got)
				return n, v.err
			}
		}
		v.finished = true
	}
	return n, err
}
