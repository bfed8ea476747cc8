package mirror

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Actions an Item can take.
const (
	ActionCopy  = "copy"  // the target lacks the image, or has an older one
	ActionSkip  = "skip"  // the target is up to date
	ActionPrune = "prune" // the target tag is no longer selected
)

// Reasons for an Item's action.
const (
	ReasonNew         = "new"                         // not at the target
	ReasonChanged     = "changed"                     // the source tag points elsewhere now
	ReasonPlatforms   = "platforms changed"           // the target has other platforms than asked for
	ReasonSignatures  = "signatures changed"          // a cosign signature, attestation or SBOM tag is new or moved
	ReasonReferrers   = "new referrers"               // the source's referrers API lists one the target lacks
	ReasonRecheck     = "recheck"                     // --recheck: copied whatever the digests say
	ReasonUnchanged   = "unchanged"                   // same digest (or same source digest, for a platform subset)
	ReasonImmutable   = "immutable"                   // matches an immutable pattern and exists: not looked at
	ReasonNotSelected = "not selected"                // prune: the tag rules no longer pick it
	ReasonSignatureOf = "signature of a pruned image" // its cosign tags
	ReasonReferrersOf = "referrers of a pruned image" // its referrers tag-schema index
)

// Item is one image of the plan and what became of it.
type Item struct {
	// Sync is the [[sync]] entry it belongs to, from 1.
	Sync   int    `json:"sync"`
	Tag    string `json:"tag"`
	Action string `json:"action"`
	Reason string `json:"reason"`
	// Source and Target name the image: host/repo:tag or oci:DIR:tag.
	Source string `json:"source,omitempty"`
	Target string `json:"target"`
	// SourceDigest is the source tag's digest, when it was looked at;
	// Digest is what the target tag points at: after a copy, what was
	// written (or would be, in a dry run); for a skip or prune, what is
	// there (empty when it was not looked at).
	SourceDigest digest.Digest `json:"sourceDigest,omitempty"`
	Digest       digest.Digest `json:"digest,omitempty"`

	// For copies: what moved (what would move, in a dry run).
	Manifests    int     `json:"manifests,omitempty"`
	Referrers    int     `json:"referrers,omitempty"`
	BlobsCopied  int     `json:"blobsCopied,omitempty"`
	BlobsSkipped int     `json:"blobsSkipped,omitempty"`
	BlobsMounted int     `json:"blobsMounted,omitempty"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds,omitempty"`

	// Error says why the item failed; Err is the error itself.
	Error string `json:"error,omitempty"`
	Err   error  `json:"-"`
}

func (it *Item) fail(err error) {
	if err != nil && it.Err == nil {
		it.Err, it.Error = err, err.Error()
	}
}

// Failure is a [[sync]] entry that could not be planned at all (its
// source could not be listed, say), or a prune it refused.
type Failure struct {
	Sync   int    `json:"sync"`
	Source string `json:"source"`
	Target string `json:"target"`
	Error  string `json:"error"`
	Err    error  `json:"-"`
}

// Summary counts a Report's items.
type Summary struct {
	Copied  int     `json:"copied"`
	Skipped int     `json:"skipped"`
	Pruned  int     `json:"pruned"`
	Failed  int     `json:"failed"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// Report is what a mirror run did, or in a dry run would do: the
// document `ferry mirror -o json` prints.
type Report struct {
	DryRun   bool       `json:"dryRun"`
	Shard    string     `json:"shard,omitempty"`
	Items    []*Item    `json:"images"`
	Failures []*Failure `json:"failures,omitempty"`
	Summary  Summary    `json:"summary"`
}

// Failed is how many items and entries failed; Total how many there were.
func (r *Report) Failed() int { return r.Summary.Failed }

// Total counts items and failed entries.
func (r *Report) Total() int { return len(r.Items) + len(r.Failures) }

func (r *Report) summarize() {
	s := Summary{Seconds: r.Summary.Seconds}
	for _, it := range r.Items {
		switch {
		case it.Err != nil:
			s.Failed++
		case it.Action == ActionCopy:
			s.Copied++
			s.Bytes += it.Bytes
		case it.Action == ActionSkip:
			s.Skipped++
		case it.Action == ActionPrune:
			s.Pruned++
		}
	}
	s.Failed += len(r.Failures)
	r.Summary = s
}

// Shard is a stable slice of a mirror's images, for spreading one config
// over several runners: image (target, tag) belongs to shard Index (from
// 1) of Count by a hash of the target as written in the config and the
// tag. The zero value is every image.
type Shard struct{ Index, Count int }

// ParseShard parses "I/N", 1 ≤ I ≤ N.
func ParseShard(s string) (Shard, error) {
	i, n, ok := strings.Cut(s, "/")
	a, err1 := strconv.Atoi(i)
	b, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || b < 1 || a < 1 || a > b {
		return Shard{}, fmt.Errorf("shard %q: expected I/N with 1 ≤ I ≤ N, e.g. 2/4", s)
	}
	return Shard{Index: a, Count: b}, nil
}

func (s Shard) String() string {
	if s.Count <= 1 {
		return ""
	}
	return fmt.Sprintf("%d/%d", s.Index, s.Count)
}

// Has reports whether the image (target, tag) is in this shard.
func (s Shard) Has(target, tag string) bool {
	if s.Count <= 1 {
		return true
	}
	h := fnv.New64a()
	h.Write([]byte(target + "\x00" + tag))
	return int(h.Sum64()%uint64(s.Count)) == s.Index-1
}
