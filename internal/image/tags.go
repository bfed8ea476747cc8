package image

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// IsSignatureTag reports whether tag is one of cosign's
// sha256-<hex>.sig/.att/.sbom tags.
func IsSignatureTag(tag string) bool { return transfer.IsCosignTag(tag) }

// TagSelector chooses tags. The steps run in order: signatures, include,
// exclude, semver range, sort, last N.
type TagSelector struct {
	Include        []*regexp.Regexp // keep a tag matching any; none means all
	Exclude        []*regexp.Regexp // drop a tag matching any
	Semver         *semver.Constraints
	Sort           string // "name" (default) or "semver"
	Last           int    // keep the last N after sorting; 0 keeps all
	OmitSignatures bool
}

// CompileRegexps compiles each pattern, naming the flag or key in errors.
func CompileRegexps(what string, patterns []string) ([]*regexp.Regexp, error) {
	out := make([]*regexp.Regexp, 0, len(patterns))
	for _, p := range patterns {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %v", what, p, err)
		}
		out = append(out, re)
	}
	return out, nil
}

// Select applies s to tags and returns a new slice.
func (s TagSelector) Select(tags []string) []string {
	type tag struct {
		name string
		v    *semver.Version
	}
	var kept []tag
	for _, t := range tags {
		if s.OmitSignatures && IsSignatureTag(t) {
			continue
		}
		if len(s.Include) > 0 && !slices.ContainsFunc(s.Include, func(re *regexp.Regexp) bool { return re.MatchString(t) }) {
			continue
		}
		if slices.ContainsFunc(s.Exclude, func(re *regexp.Regexp) bool { return re.MatchString(t) }) {
			continue
		}
		v, _ := semver.NewVersion(t)
		if s.Semver != nil && (v == nil || !s.Semver.Check(v)) {
			continue
		}
		kept = append(kept, tag{t, v})
	}
	if s.Sort == "semver" {
		// Tags that are not versions sort first, by name, so --last keeps versions.
		slices.SortStableFunc(kept, func(a, b tag) int {
			switch {
			case a.v == nil && b.v == nil:
				return strings.Compare(a.name, b.name)
			case a.v == nil:
				return -1
			case b.v == nil:
				return 1
			}
			if c := a.v.Compare(b.v); c != 0 {
				return c
			}
			return strings.Compare(a.name, b.name)
		})
	} else {
		slices.SortFunc(kept, func(a, b tag) int { return strings.Compare(a.name, b.name) })
	}
	if s.Last > 0 && len(kept) > s.Last {
		kept = kept[len(kept)-s.Last:]
	}
	out := make([]string, len(kept))
	for i, t := range kept {
		out[i] = t.name
	}
	return out
}
