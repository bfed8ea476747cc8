package transfer

import (
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ParsePlatform parses "os/arch[/variant]", e.g. "linux/arm64/v8".
func ParsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
		return ocispec.Platform{}, fmt.Errorf("%w: platform %q: expected os/arch[/variant], e.g. linux/amd64 or linux/arm/v7", ErrInvalidReference, s)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// FormatPlatform writes p as os/arch[/variant].
func FormatPlatform(p *ocispec.Platform) string {
	if p == nil {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// MatchPlatform reports whether have satisfies want. An empty variant in
// want matches any variant; arm64 without a variant is arm64/v8.
func MatchPlatform(want, have ocispec.Platform) bool {
	if want.OS != have.OS || want.Architecture != have.Architecture {
		return false
	}
	if want.Variant == "" {
		return true
	}
	return normVariant(have) == normVariant(want)
}

func normVariant(p ocispec.Platform) string {
	if p.Architecture == "arm64" && p.Variant == "" {
		return "v8"
	}
	return p.Variant
}

// SelectPlatform picks the descriptor in an index for want. A variant-less
// want prefers the entry with no variant or arm64's v8, then the first match.
func SelectPlatform(index *Manifest, want ocispec.Platform) (ocispec.Descriptor, error) {
	var matches []ocispec.Descriptor
	for _, d := range index.Manifests {
		if d.Platform != nil && MatchPlatform(want, *d.Platform) {
			matches = append(matches, d)
		}
	}
	if len(matches) == 0 {
		var have []string
		for _, d := range index.Manifests {
			if d.Platform != nil && d.Platform.OS != "unknown" {
				have = append(have, FormatPlatform(d.Platform))
			}
		}
		return ocispec.Descriptor{}, fmt.Errorf("%w: no manifest for platform %s in index %s (it has: %s)", ErrNotFound, FormatPlatform(&want), index.Descriptor.Digest, strings.Join(have, ", "))
	}
	for _, d := range matches {
		if want.Variant == "" && (d.Platform.Variant == "" || normVariant(*d.Platform) == "v8") {
			return d, nil
		}
	}
	return matches[0], nil
}
