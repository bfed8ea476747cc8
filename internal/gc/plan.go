package gc

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// Endpoint is what a collection reads and deletes from: a registry
// repository or an OCI layout, as internal/transfer opens them.
type Endpoint interface {
	transfer.Source
	transfer.Deleter
}

// What a plan's items are.
const (
	KindImage     = "image"     // a tagged image or index
	KindUntagged  = "untagged"  // an image of a deleted index
	KindSignature = "signature" // cosign's .sig/.att/.sbom, or a referrers tag schema index
	KindReferrer  = "referrer"  // found through the referrers API
)

// Item is one manifest in a plan, deleted or kept, and why.
type Item struct {
	Digest digest.Digest `json:"digest"`
	Tags   []string      `json:"tags,omitempty"`
	Kind   string        `json:"kind"`
	// UntagOnly deletes Tags and leaves the manifest, which a kept tag or
	// a kept index still needs.
	UntagOnly bool       `json:"untagOnly,omitempty"`
	Reason    string     `json:"reason"`
	Created   *time.Time `json:"created,omitempty"`
	// After Apply: whether the delete happened, or why not.
	Deleted bool   `json:"deleted,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Plan is what a collection of one repository deletes and keeps.
type Plan struct {
	Repository string   `json:"repository"`
	DryRun     bool     `json:"dryRun"`
	Delete     []*Item  `json:"delete"`
	Keep       []*Item  `json:"keep"`
	Notes      []string `json:"notes,omitempty"`
	// After Apply.
	Deleted int `json:"deleted"`
	Failed  int `json:"failed"`
	// For an OCI layout, the sweep of its blobs that follows the deletes.
	Layout *LocalReport `json:"layout,omitempty"`
}

// Options tune planning and applying.
type Options struct {
	// Now is the time --older-than counts from (time.Now when zero).
	Now time.Time
	// Jobs is how many requests run at once (8 when 0).
	Jobs int
	// MaxReferrers caps the referrers read per deleted manifest.
	MaxReferrers int
}

func (o Options) jobs() int             { return cmp.Or(o.Jobs, 8) }
func (o Options) now() time.Time        { return cmp.Or(o.Now, time.Now()) }
func (o Options) maxRefs() int          { return cmp.Or(o.MaxReferrers, transfer.DefaultMaxReferrers) }
func (p *Plan) note(f string, a ...any) { p.Notes = append(p.Notes, fmt.Sprintf(f, a...)) }

// planner holds what planning one repository learns.
type planner struct {
	ep    Endpoint
	rules Rules
	opts  Options
	plan  *Plan

	tagDigest map[string]digest.Digest        // every tag that resolved
	tagsOf    map[digest.Digest][]string      // image tags by digest
	mu        sync.Mutex                      // guards manifests
	manifests map[digest.Digest]*manifestInfo // read as needed
}

// manifestInfo is a manifest and, for an image, its created time.
type manifestInfo struct {
	m       *transfer.Manifest
	created *time.Time
	dated   bool // created was looked for
}

// NewPlan reads ep's tags and builds the plan rules give for it. It
// deletes nothing.
func NewPlan(ctx context.Context, ep Endpoint, rules Rules, opts Options) (*Plan, error) {
	if err := rules.Check(); err != nil {
		return nil, err
	}
	p := &planner{ep: ep, rules: rules, opts: opts,
		plan:      &Plan{Repository: ep.String(), Delete: []*Item{}, Keep: []*Item{}},
		tagDigest: map[string]digest.Digest{}, tagsOf: map[digest.Digest][]string{},
		manifests: map[digest.Digest]*manifestInfo{}}
	tags, err := ep.Tags(ctx, transfer.TagOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the tags of %s: %w", ep, err)
	}
	if err := p.resolve(ctx, tags); err != nil {
		return nil, err
	}
	var images, attachments []string
	for _, t := range tags {
		if _, ok := p.tagDigest[t]; !ok {
			continue // deleted since the listing
		}
		if _, _, ok := transfer.ParseAttachmentTag(t); ok {
			attachments = append(attachments, t)
		} else {
			images = append(images, t)
			d := p.tagDigest[t]
			p.tagsOf[d] = append(p.tagsOf[d], t)
		}
	}
	deletable, keepWhy, err := p.selectTags(ctx, images)
	if err != nil {
		return nil, err
	}
	protected, err := p.imageItems(ctx, deletable, keepWhy)
	if err != nil {
		return nil, err
	}
	deleted, err := p.untaggedItems(ctx, protected)
	if err != nil {
		return nil, err
	}
	if err := p.attachmentItems(ctx, attachments, protected, deleted); err != nil {
		return nil, err
	}
	if err := p.referrerItems(ctx, deleted); err != nil {
		return nil, err
	}
	if rules.Untagged && !rules.selectsTags() {
		if _, ok := ep.(*transfer.Layout); !ok {
			p.plan.note("a registry does not list its untagged manifests: --untagged deletes those this collection leaves untagged (the images of a deleted index)")
		}
	}
	return p.plan, nil
}

// resolve finds the digest of every tag, a HEAD request each on a
// registry, some at once.
func (p *planner) resolve(ctx context.Context, tags []string) error {
	digests := make([]digest.Digest, len(tags))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.jobs())
	for i, t := range tags {
		g.Go(func() error {
			d, err := p.ep.ManifestDigest(gctx, t)
			if errors.Is(err, transfer.ErrNotFound) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("resolving %s:%s: %w", p.ep, t, err)
			}
			digests[i] = d
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, t := range tags {
		if digests[i] != "" {
			p.tagDigest[t] = digests[i]
		}
	}
	return nil
}

// manifest reads manifest d once, with the config of an image (for its
// created time) when withConfig is set.
func (p *planner) manifest(ctx context.Context, d digest.Digest, withConfig bool) (*manifestInfo, error) {
	p.mu.Lock()
	info, ok := p.manifests[d]
	p.mu.Unlock()
	if ok && (!withConfig || info.dated) {
		return info, nil
	}
	if !ok {
		m, err := p.ep.Manifest(ctx, string(d))
		if err != nil {
			return nil, fmt.Errorf("reading %s@%s: %w", p.ep, d, err)
		}
		info = &manifestInfo{m: m}
	}
	if withConfig {
		created, err := p.created(ctx, info.m)
		if err != nil {
			return nil, err
		}
		info.created, info.dated = created, true
	}
	p.mu.Lock()
	p.manifests[d] = info
	p.mu.Unlock()
	return info, nil
}

// created is an image's created time; for an index, its first image's.
// It is nil when the config has none.
func (p *planner) created(ctx context.Context, m *transfer.Manifest) (*time.Time, error) {
	if m.IsIndex() {
		if len(m.Manifests) == 0 {
			return nil, nil
		}
		child, err := p.manifest(ctx, m.Manifests[0].Digest, true)
		if err != nil {
			return nil, err
		}
		return child.created, nil
	}
	if m.Config == nil {
		return nil, nil
	}
	raw, err := p.ep.FetchBlob(ctx, m.Config.Digest, m.Config.Size, 4<<20)
	if err != nil {
		return nil, fmt.Errorf("reading the config of %s@%s: %w", p.ep, m.Descriptor.Digest, err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(raw, &cfg); err != nil || cfg.Created == nil || cfg.Created.IsZero() {
		return nil, nil // an artifact, or an image without a date
	}
	return cfg.Created, nil
}

// selectTags applies KeepLast and OlderThan to the image tags: it returns
// the tags to delete, and why, and why each other tag stays.
func (p *planner) selectTags(ctx context.Context, tags []string) (deletable, keepWhy map[string]string, err error) {
	deletable, keepWhy = map[string]string{}, map[string]string{}
	var candidates []string
	for _, t := range tags {
		switch {
		case p.rules.kept(t):
			keepWhy[t] = "matches --keep"
		case !p.rules.selectsTags():
			keepWhy[t] = "no rule deletes tags"
		default:
			candidates = append(candidates, t)
		}
	}
	if len(candidates) == 0 {
		return deletable, keepWhy, nil
	}
	bySemver := p.rules.KeepLast > 0 && allVersions(candidates)
	created := map[string]*time.Time{}
	if p.rules.OlderThan > 0 || (p.rules.KeepLast > 0 && !bySemver) {
		if created, err = p.createdTimes(ctx, candidates); err != nil {
			return nil, nil, err
		}
	}
	if p.rules.KeepLast > 0 {
		sortNewestFirst(candidates, bySemver, created)
	}
	now := p.opts.now()
	for i, t := range candidates {
		var why string
		if p.rules.KeepLast > 0 {
			if i < p.rules.KeepLast {
				keepWhy[t] = fmt.Sprintf("one of the newest %d", p.rules.KeepLast)
				continue
			}
			order := "by created time"
			if bySemver {
				order = "by version"
			}
			why = fmt.Sprintf("not one of the newest %d (%s)", p.rules.KeepLast, order)
		}
		if p.rules.OlderThan > 0 {
			c := created[t]
			switch {
			case c == nil:
				keepWhy[t] = "its image has no created time: --older-than cannot judge it"
				continue
			case now.Sub(*c) < p.rules.OlderThan:
				keepWhy[t] = fmt.Sprintf("created %s ago, within --older-than %s", age(now.Sub(*c)), age(p.rules.OlderThan))
				continue
			}
			why = joinReason(why, fmt.Sprintf("created %s ago, past --older-than %s", age(now.Sub(*c)), age(p.rules.OlderThan)))
		}
		deletable[t] = why
	}
	return deletable, keepWhy, nil
}

// createdTimes reads the created time of each tag's image.
func (p *planner) createdTimes(ctx context.Context, tags []string) (map[string]*time.Time, error) {
	out := make([]*time.Time, len(tags))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.jobs())
	for i, t := range tags {
		g.Go(func() error {
			info, err := p.manifest(gctx, p.tagDigest[t], true)
			if err != nil {
				return err
			}
			out[i] = info.created
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	m := make(map[string]*time.Time, len(tags))
	for i, t := range tags {
		m[t] = out[i]
	}
	return m, nil
}

// imageItems turns tag decisions into manifest decisions: a manifest is
// deleted when all its tags are and no kept index references it, else
// only its deletable tags go. It returns every manifest that stays
// (tagged, or referenced by a kept index).
func (p *planner) imageItems(ctx context.Context, deletable, keepWhy map[string]string) (map[digest.Digest]bool, error) {
	protected := map[digest.Digest]bool{}
	for d, tags := range p.tagsOf {
		if slices.ContainsFunc(tags, func(t string) bool { return deletable[t] == "" }) {
			protected[d] = true
		}
	}
	// The images of kept indexes stay too.
	if len(deletable) > 0 {
		for _, d := range slices.Collect(maps.Keys(protected)) {
			if err := p.protectChildren(ctx, d, protected); err != nil {
				return nil, err
			}
		}
	}
	for _, d := range sortedDigests(p.tagsOf) {
		tags := slices.Sorted(slices.Values(p.tagsOf[d]))
		var del, keep []string
		for _, t := range tags {
			if deletable[t] != "" {
				del = append(del, t)
			} else {
				keep = append(keep, t)
			}
		}
		created := p.knownCreated(d)
		if len(keep) > 0 {
			p.plan.Keep = append(p.plan.Keep, &Item{Digest: d, Tags: keep, Kind: KindImage, Reason: keepWhy[keep[0]], Created: created})
		}
		if len(del) == 0 {
			continue
		}
		it := &Item{Digest: d, Tags: del, Kind: KindImage, Reason: deletable[del[0]], Created: created}
		switch {
		case len(keep) > 0:
			it.UntagOnly = true
			it.Reason += fmt.Sprintf("; the manifest stays for %s", tagList(keep))
		case protected[d]:
			it.UntagOnly = true
			it.Reason += "; the manifest stays: a kept index references it"
		}
		p.plan.Delete = append(p.plan.Delete, it)
	}
	return protected, nil
}

// protectChildren adds the manifests index d references, and theirs.
func (p *planner) protectChildren(ctx context.Context, d digest.Digest, protected map[digest.Digest]bool) error {
	info, err := p.manifest(ctx, d, false)
	if err != nil {
		return err
	}
	for _, c := range info.m.Manifests {
		if !protected[c.Digest] {
			protected[c.Digest] = true
			if transfer.IsIndex(c.MediaType) {
				if err := p.protectChildren(ctx, c.Digest, protected); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// untaggedItems plans the images of deleted indexes that nothing kept
// references, with --untagged, and returns every manifest the plan
// deletes.
func (p *planner) untaggedItems(ctx context.Context, protected map[digest.Digest]bool) (map[digest.Digest]bool, error) {
	deleted := map[digest.Digest]bool{}
	var indexes []digest.Digest
	for _, it := range p.plan.Delete {
		if !it.UntagOnly {
			deleted[it.Digest] = true
			indexes = append(indexes, it.Digest)
		}
	}
	left := 0
	for len(indexes) > 0 {
		d := indexes[0]
		indexes = indexes[1:]
		info, err := p.manifest(ctx, d, false)
		if err != nil {
			return nil, err
		}
		for _, c := range info.m.Manifests {
			if protected[c.Digest] || deleted[c.Digest] || p.tagsOf[c.Digest] != nil {
				continue
			}
			if !p.rules.Untagged {
				left++
				continue
			}
			deleted[c.Digest] = true
			p.plan.Delete = append(p.plan.Delete, &Item{Digest: c.Digest, Kind: KindUntagged,
				Reason: fmt.Sprintf("untagged once index %s is deleted, and nothing kept references it", short(d))})
			if transfer.IsIndex(c.MediaType) {
				indexes = append(indexes, c.Digest)
			}
		}
	}
	if left > 0 {
		p.plan.note("%d images of deleted indexes stay, untagged: --untagged deletes them", left)
	}
	return deleted, nil
}

// attachmentItems decides on the signature, attestation, SBOM and
// referrers-schema tags: those of kept manifests stay; with --orphans,
// those of deleted or missing manifests go.
func (p *planner) attachmentItems(ctx context.Context, tags []string, protected, deleted map[digest.Digest]bool) error {
	byDigest := map[digest.Digest][]string{}
	subjectOf := map[digest.Digest]digest.Digest{}
	for _, t := range tags {
		subject, _, _ := transfer.ParseAttachmentTag(t)
		d := p.tagDigest[t]
		byDigest[d] = append(byDigest[d], t)
		subjectOf[d] = subject
	}
	// A subject that is neither tagged nor an image of a kept index may
	// still be in the repository: ask.
	missing := map[digest.Digest]bool{}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.jobs())
	for _, s := range subjectOf {
		if protected[s] || deleted[s] {
			continue
		}
		g.Go(func() error {
			_, err := p.ep.ManifestDigest(gctx, string(s))
			if errors.Is(err, transfer.ErrNotFound) {
				mu.Lock()
				missing[s] = true
				mu.Unlock()
				return nil
			}
			if err != nil {
				return fmt.Errorf("looking for %s@%s: %w", p.ep, s, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	orphans := 0
	for _, d := range sortedDigests(byDigest) {
		s := subjectOf[d]
		it := &Item{Digest: d, Tags: slices.Sorted(slices.Values(byDigest[d])), Kind: KindSignature}
		switch {
		case protected[s]:
			it.Reason = fmt.Sprintf("belongs to %s, which stays", short(s))
		case deleted[s] && p.rules.Orphans:
			it.Reason = fmt.Sprintf("belongs to %s, which is deleted", short(s))
		case missing[s] && p.rules.Orphans:
			it.Reason = fmt.Sprintf("orphaned: %s is gone", short(s))
		case deleted[s] || missing[s]:
			it.Reason = fmt.Sprintf("orphaned once %s is gone: --orphans deletes it", short(s))
			orphans++
		default:
			it.Reason = fmt.Sprintf("belongs to %s, which stays (untagged)", short(s))
		}
		if p.rules.Orphans && (deleted[s] || missing[s]) {
			deleted[d] = true
			p.plan.Delete = append(p.plan.Delete, it)
		} else {
			p.plan.Keep = append(p.plan.Keep, it)
		}
	}
	if orphans > 0 {
		p.plan.note("%d signatures, attestations or SBOMs stay without their image: --orphans deletes them", orphans)
	}
	return nil
}

// referrerItems, with --orphans, plans the manifests the referrers API
// (or a layout's index) lists for each deleted manifest.
func (p *planner) referrerItems(ctx context.Context, deleted map[digest.Digest]bool) error {
	if !p.rules.Orphans {
		return nil
	}
	subjects := sortedDigests(deleted)
	found := make([][]ocispec.Descriptor, len(subjects))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.jobs())
	for i, s := range subjects {
		g.Go(func() error {
			descs, err := p.ep.Referrers(gctx, ocispec.Descriptor{Digest: s}, p.opts.maxRefs())
			if err != nil && !errors.Is(err, transfer.ErrNotFound) {
				return fmt.Errorf("listing the referrers of %s@%s: %w", p.ep, s, err)
			}
			found[i] = descs
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, s := range subjects {
		for _, r := range found[i] {
			if deleted[r.Digest] || p.tagsOf[r.Digest] != nil {
				continue
			}
			deleted[r.Digest] = true
			p.plan.Delete = append(p.plan.Delete, &Item{Digest: r.Digest, Kind: KindReferrer,
				Reason: fmt.Sprintf("refers to %s, which is deleted", short(s))})
		}
	}
	return nil
}

// knownCreated is d's created time if planning read it.
func (p *planner) knownCreated(d digest.Digest) *time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if info := p.manifests[d]; info != nil {
		return info.created
	}
	return nil
}

// allVersions reports whether every tag is a semantic version.
func allVersions(tags []string) bool {
	for _, t := range tags {
		if _, err := semver.NewVersion(t); err != nil {
			return false
		}
	}
	return true
}

// sortNewestFirst orders tags by version, or by created time (unknown
// times last), newest first; ties by name, last first.
func sortNewestFirst(tags []string, bySemver bool, created map[string]*time.Time) {
	slices.SortStableFunc(tags, func(a, b string) int {
		var c int
		if bySemver {
			c = semver.MustParse(b).Compare(semver.MustParse(a))
		} else {
			ta, tb := created[a], created[b]
			switch {
			case ta == nil && tb == nil:
			case ta == nil:
				c = 1
			case tb == nil:
				c = -1
			default:
				c = tb.Compare(*ta)
			}
		}
		return cmp.Or(c, cmp.Compare(b, a))
	})
}
