package store

import (
	"fmt"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	_ "crypto/sha256" // register sha256 with go-digest
	_ "crypto/sha512" // register sha512 with go-digest
)

// hexLen is the length of the hex part of a digest, per supported algorithm.
func hexLen(alg digest.Algorithm) int {
	switch alg {
	case digest.SHA256:
		return 64
	case digest.SHA512:
		return 128
	}
	return 0
}

// supportedAlgs lists the blob directories the package reads, writes and
// collects; others (blobs/sha384 written by some other tool) are left alone.
func supportedAlgs() [2]digest.Algorithm { return [...]digest.Algorithm{digest.SHA256, digest.SHA512} }

// ValidateDigest checks d strictly, before it is used in a path: sha256 with
// 64 or sha512 with 128 lowercase hex digits, nothing else (ROBUSTNESS row 8,
// CVE-2024-3727). The error wraps ErrInvalidDigest and quotes d.
func ValidateDigest(d digest.Digest) error {
	s := string(d)
	for i := 0; i < len(s); i++ {
		if s[i] != ':' {
			continue
		}
		alg := digest.Algorithm(s[:i])
		n := hexLen(alg)
		if n == 0 {
			return fmt.Errorf("%w: %q: algorithm %q is not supported (use sha256 or sha512)", ErrInvalidDigest, s, s[:i])
		}
		if err := checkHex(s[i+1:], n); err != nil {
			return fmt.Errorf("%w: %q: %v", ErrInvalidDigest, s, err)
		}
		return nil
	}
	return fmt.Errorf("%w: %q: expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>", ErrInvalidDigest, s)
}

func checkHex(h string, n int) error {
	if len(h) != n {
		return fmt.Errorf("%d hex digits, expected %d", len(h), n)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("character %q at %d is not lowercase hex", c, i)
		}
	}
	return nil
}

// validateAlg checks that blobs can be written with alg.
func validateAlg(alg digest.Algorithm) error {
	if hexLen(alg) == 0 {
		return fmt.Errorf("%w: algorithm %q is not supported (use sha256 or sha512)", ErrInvalidDigest, alg)
	}
	return nil
}

// blobPath returns the path of a digest that ValidateDigest accepted.
func (s *Store) blobPath(d digest.Digest) string {
	return filepath.Join(s.dir, ocispec.ImageBlobsDir, string(d.Algorithm()), d.Encoded())
}

// blobRelPath is the slash-separated name of a blob inside a layout.
func blobRelPath(d digest.Digest) string {
	return ocispec.ImageBlobsDir + "/" + string(d.Algorithm()) + "/" + d.Encoded()
}
