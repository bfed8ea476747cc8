package transfer

import (
	"strings"

	"github.com/opencontainers/go-digest"
)

// AttachmentSuffixes are the suffixes of cosign's tags: signature,
// attestations, SBOM.
var AttachmentSuffixes = []string{".sig", ".att", ".sbom"}

// ParseAttachmentTag parses a tag that attaches content to a manifest by
// naming its digest: cosign's <alg>-<hex>.sig, .att and .sbom (suffix
// ".sig", ...), and the referrers tag schema's <alg>-<hex> (suffix ""),
// for sha256 and sha512. ok is false for any other tag.
func ParseAttachmentTag(tag string) (subject digest.Digest, suffix string, ok bool) {
	alg, rest, found := strings.Cut(tag, "-")
	var n int
	switch {
	case !found:
		return "", "", false
	case alg == "sha256":
		n = 64
	case alg == "sha512":
		n = 128
	default:
		return "", "", false
	}
	if len(rest) < n || strings.IndexFunc(rest[:n], notLowerHex) >= 0 {
		return "", "", false
	}
	suffix = rest[n:]
	if suffix != "" && !isAttachmentSuffix(suffix) {
		return "", "", false
	}
	return digest.Digest(alg + ":" + rest[:n]), suffix, true
}

// AttachmentTag is the tag of subject's attachment with suffix (one of
// AttachmentSuffixes, or "" for the referrers tag schema).
func AttachmentTag(subject digest.Digest, suffix string) string {
	return subject.Algorithm().String() + "-" + subject.Encoded() + suffix
}

// IsCosignTag reports whether tag is one of cosign's signature,
// attestation and SBOM tags.
func IsCosignTag(tag string) bool {
	_, suffix, ok := ParseAttachmentTag(tag)
	return ok && suffix != ""
}

func isAttachmentSuffix(s string) bool {
	for _, a := range AttachmentSuffixes {
		if s == a {
			return true
		}
	}
	return false
}

func notLowerHex(r rune) bool { return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') }
