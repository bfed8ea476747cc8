package gc

import (
	"fmt"
	"regexp"
	"time"
)

// Rules say which tags, manifests and signatures a collection deletes.
// The zero value deletes nothing.
type Rules struct {
	// KeepLast keeps the newest N tags, by semantic version when every
	// candidate tag is one, else by the image's created time, and makes
	// the others candidates for deletion. 0: no such rule.
	KeepLast int
	// Keep protects the tags matching any of these, whatever the other
	// rules say. They are not counted by KeepLast.
	Keep []*regexp.Regexp
	// OlderThan makes tags whose image was created longer ago candidates.
	// With KeepLast, a tag is deleted only when both rules agree. 0: no
	// such rule.
	OlderThan time.Duration
	// Untagged deletes the manifests this collection leaves untagged: the
	// images of a deleted index that nothing kept references.
	Untagged bool
	// Orphans deletes signatures, attestations, SBOMs and referrers whose
	// subject is gone or deleted by this collection.
	Orphans bool
}

// Empty reports whether r deletes nothing: Keep alone is no rule.
func (r Rules) Empty() bool {
	return r.KeepLast == 0 && r.OlderThan == 0 && !r.Untagged && !r.Orphans
}

// selectsTags reports whether r deletes tags at all.
func (r Rules) selectsTags() bool { return r.KeepLast > 0 || r.OlderThan > 0 }

// Check refuses rules that cannot mean anything.
func (r Rules) Check() error {
	if r.KeepLast < 0 {
		return fmt.Errorf("keep-last %d: expected a number of tags, 1 or more", r.KeepLast)
	}
	if r.OlderThan < 0 {
		return fmt.Errorf("older-than %s: expected a positive duration", r.OlderThan)
	}
	return nil
}

// kept reports whether tag matches one of the Keep patterns.
func (r Rules) kept(tag string) bool {
	for _, re := range r.Keep {
		if re.MatchString(tag) {
			return true
		}
	}
	return false
}
