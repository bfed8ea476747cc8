package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// Options tune a Run.
type Options struct {
	// Remote opens registry repositories. It must not be nil.
	Remote *transfer.Remote
	// Insecure reports whether plain http is allowed for a registry host
	// (--insecure, or insecure = true in its [registry."host"] table).
	Insecure func(host string) bool
	// DryRun plans and measures (reading manifests only of images that
	// would be copied) but writes and deletes nothing.
	DryRun bool
	// Recheck copies every selected image that is not immutable through
	// the engine, whatever the digests say: manifests are read at the
	// source, and whatever the target lacks (referrers included) is
	// copied.
	Recheck bool
	// Shard limits the run to a slice of the images.
	Shard Shard
	// Jobs and Images override the config's when positive.
	Jobs, Images int
	// Events receives the copy engine's progress; nil discards it.
	Events transfer.EventFunc
}

// planJobs is how many [[sync]] entries are planned at once.
const planJobs = 4

// Run mirrors every [[sync]] entry of cfg: it plans each (tag lists, then
// HEAD requests for the tags the target has), copies what differs with
// one engine, whose blob budget every image shares, prunes, and reports.
// A failing image or entry does not stop the others; it is in the Report.
// The error is for what stops the whole run: a cancelled ctx.
func Run(ctx context.Context, cfg *Config, opts Options) (*Report, error) {
	start := time.Now()
	jobs := firstPositive(opts.Jobs, cfg.Jobs, transfer.DefaultJobs)
	images := firstPositive(opts.Images, cfg.Images, DefaultImages)
	base := transfer.NewEngine(transfer.Options{Jobs: jobs})
	m := &run{opts: opts, jobs: jobs, sources: map[string]*source{}}
	defer m.close()

	runs := make([]*syncRun, len(cfg.Syncs))
	g := new(errgroup.Group)
	g.SetLimit(planJobs)
	for i, s := range cfg.Syncs {
		r := &syncRun{m: m, s: s, wantPlatforms: transfer.PlatformList(s.Platforms)}
		r.engine = base.Derive(transfer.Options{
			Platforms:     s.Platforms,
			Referrers:     s.Referrers,
			PlatformIndex: true,
			DryRun:        opts.DryRun,
			Events:        opts.Events,
		})
		runs[i] = r
		g.Go(func() error {
			if err := r.plan(ctx); err != nil {
				r.failure = &Failure{Sync: s.Index, Source: s.From, Target: s.To, Error: err.Error(), Err: err}
			}
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Copy, every entry's images together, a few at once.
	g = new(errgroup.Group)
	g.SetLimit(images)
	for _, r := range runs {
		for _, it := range r.items {
			if it.Action == ActionCopy && it.Err == nil {
				g.Go(func() error {
					r.copy(ctx, it)
					return nil
				})
			}
		}
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	g = new(errgroup.Group)
	g.SetLimit(planJobs)
	for _, r := range runs {
		if len(r.prune) > 0 {
			g.Go(func() error {
				r.doPrune(ctx)
				return nil
			})
		}
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	rep := &Report{DryRun: opts.DryRun, Shard: opts.Shard.String(), Items: []*Item{}}
	for _, r := range runs {
		rep.Items = append(rep.Items, r.items...)
		rep.Items = append(rep.Items, r.prune...)
		if r.failure != nil {
			rep.Failures = append(rep.Failures, r.failure)
		}
	}
	rep.Summary.Seconds = time.Since(start).Seconds()
	rep.summarize()
	return rep, nil
}

func firstPositive(ns ...int) int {
	for _, n := range ns {
		if n > 0 {
			return n
		}
	}
	return 0
}

// run is the state shared by a Run's entries: the sources, opened once
// each however many entries read them.
type run struct {
	opts Options
	jobs int

	mu      sync.Mutex
	sources map[string]*source
	closers []func() error
}

type source struct {
	once sync.Once
	src  transfer.Source
	err  error
}

func (m *run) close() {
	for _, c := range m.closers {
		c()
	}
}

func (m *run) insecure(host string) bool {
	return m.opts.Insecure != nil && m.opts.Insecure(host)
}

// reference resolves a from or to value of the config.
func (m *run) reference(s string) (transfer.Reference, error) {
	if strings.HasPrefix(s, "oci:") || strings.HasPrefix(s, "oci-archive:") {
		return transfer.ParseReference(s, false)
	}
	repo, err := transfer.ParseRepository(s, false)
	if err != nil {
		return transfer.Reference{}, err
	}
	if m.insecure(repo.RegistryStr()) {
		if repo, err = transfer.ParseRepository(s, true); err != nil {
			return transfer.Reference{}, err
		}
	}
	return transfer.Reference{Kind: transfer.KindRegistry, Repo: repo, Original: s}, nil
}

func (m *run) openSource(ctx context.Context, s string) (transfer.Source, error) {
	m.mu.Lock()
	e, ok := m.sources[s]
	if !ok {
		e = &source{}
		m.sources[s] = e
	}
	m.mu.Unlock()
	e.once.Do(func() {
		ref, err := m.reference(s)
		if err != nil {
			e.err = err
			return
		}
		src, closeFn, err := m.opts.Remote.OpenSource(ctx, ref)
		if err != nil {
			e.err = err
			return
		}
		e.src = src
		m.mu.Lock()
		m.closers = append(m.closers, closeFn)
		m.mu.Unlock()
	})
	return e.src, e.err
}

// openTarget opens to for writing, or, in a dry run, for reading only:
// a registry with pull access, a layout that does not exist yet as an
// empty one.
func (m *run) openTarget(ctx context.Context, ref, from transfer.Reference) (transfer.Target, error) {
	to := ref.Original
	if !m.opts.DryRun {
		dst, _, err := m.opts.Remote.OpenTarget(ctx, ref, from)
		return dst, err // oci: layouts need no finishing; oci-archive: is refused by Load
	}
	if ref.Kind == transfer.KindRegistry {
		return m.opts.Remote.Open(ctx, ref.Repo, false)
	}
	if _, err := os.Stat(ref.Path); errors.Is(err, os.ErrNotExist) {
		return emptyTarget(to), nil
	}
	s, closeFn, err := m.opts.Remote.OpenSource(ctx, ref)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.closers = append(m.closers, closeFn)
	m.mu.Unlock()
	dst, ok := s.(transfer.Target)
	if !ok {
		return nil, fmt.Errorf("%s cannot be written to", to)
	}
	return dst, nil
}

// syncRun is one [[sync]] entry in a Run.
type syncRun struct {
	m      *run
	s      *Sync
	engine *transfer.Engine

	src     transfer.Source
	dst     transfer.Target
	srcTags []string
	dstTags []string
	srcHas  map[string]bool
	dstHas  map[string]bool
	// selected is every tag the rules pick, in every shard (prune keeps
	// them all).
	selected      []string
	wantPlatforms string       // transfer.PlatformList(s.Platforms)
	api           atomic.Int32 // apiUnknown, apiPresent, apiAbsent: the source's referrers API
	apiProbe      sync.Mutex   // held by the queries made while api is unknown

	items   []*Item // copies and skips, in the selection's order
	prune   []*Item
	failure *Failure
}

func (r *syncRun) sourceRef(tag string) string { return r.src.String() + ":" + tag }
func (r *syncRun) targetRef(tag string) string { return r.dst.String() + ":" + tag }

// plan lists both sides' tags, selects, and decides for each selected tag
// of this shard whether to copy it, with the fewest requests that can
// tell (docs/mirror-config.md lists them).
func (r *syncRun) plan(ctx context.Context) error {
	from, err := r.m.reference(r.s.From)
	if err != nil {
		return err
	}
	to, err := r.m.reference(r.s.To)
	if err != nil {
		return err
	}
	// The source and its tags, and the target and its tags, at once: each
	// opening may take a few round trips (ping, token), and a registry
	// target needs only the source's name (to mount from it). A layout is
	// created when opened for writing, so it waits for the source.
	var srcErr, dstErr error
	var srcList, dstList time.Duration
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if r.src, srcErr = r.m.openSource(ctx, r.s.From); srcErr != nil {
			return
		}
		start := time.Now()
		if r.srcTags, srcErr = r.src.Tags(ctx, transfer.TagOptions{}); srcErr != nil {
			srcErr = fmt.Errorf("listing the tags of %s: %w", r.src, srcErr)
		}
		srcList = time.Since(start)
	}()
	if to.Kind == transfer.KindRegistry {
		dstList, dstErr = r.openTarget(ctx, to, from)
	}
	wg.Wait()
	if to.Kind != transfer.KindRegistry && srcErr == nil {
		dstList, dstErr = r.openTarget(ctx, to, from)
	}
	if srcErr != nil {
		return srcErr
	}
	if dstErr != nil {
		return dstErr
	}
	r.srcHas, r.dstHas = set(r.srcTags), set(r.dstTags)
	r.selected = r.s.SelectTags(r.srcTags)

	for _, t := range r.selected {
		if r.m.opts.Shard.Has(r.s.shardKey, t) {
			r.items = append(r.items, &Item{Sync: r.s.Index, Tag: t, Source: r.sourceRef(t), Target: r.targetRef(t)})
		}
	}
	// A few workers compare the tags, each one tag at a time, so that
	// their goroutines and connections are reused from tag to tag.
	todo := make(chan *Item)
	var workers sync.WaitGroup
	for range min(compareWidth(max(srcList, dstList), 2*r.m.jobs), len(r.items)) {
		workers.Go(func() {
			for it := range todo {
				r.classify(ctx, it)
			}
		})
	}
feed:
	for _, it := range r.items {
		select {
		case todo <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(todo)
	workers.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return r.planPrune()
}

// Comparing a tag is a round trip or two of small requests (HEADs, and a
// referrers query), not counted as pulls. How many tags are compared at
// once follows the round trip to the registries, as a tag list measured
// it: one more for each compareWorkerRTT of it, from minCompareWidth up
// to twice the blob jobs. Far from the registries, many requests in
// flight hide the round trips. Close to them, the requests cost CPU more
// than waiting, and a few connections do the work of many, with less to
// open and schedule.
const (
	minCompareWidth  = 4
	compareWorkerRTT = 250 * time.Microsecond
)

// compareWidth is how many tags to compare at once when a tag list took
// rtt, and at most limit.
func compareWidth(rtt time.Duration, limit int) int {
	return max(min(int(rtt/compareWorkerRTT), limit), min(minCompareWidth, limit))
}

// openTarget opens the target and lists its tags; a target that does not
// exist yet has none. It returns how long the listing took.
func (r *syncRun) openTarget(ctx context.Context, to, from transfer.Reference) (time.Duration, error) {
	var err error
	if r.dst, err = r.m.openTarget(ctx, to, from); err != nil {
		return 0, err
	}
	reader, ok := r.dst.(transfer.Reader)
	if !ok {
		return 0, fmt.Errorf("%s cannot list its tags", r.dst)
	}
	start := time.Now()
	if r.dstTags, err = reader.Tags(ctx, transfer.TagOptions{}); err != nil && !errors.Is(err, transfer.ErrNotFound) {
		return 0, fmt.Errorf("listing the tags of %s: %w", r.dst, err)
	}
	return time.Since(start), nil
}

// classify decides what to do with one selected tag.
func (r *syncRun) classify(ctx context.Context, it *Item) {
	it.Action = ActionCopy
	switch {
	case !r.dstHas[it.Tag]:
		it.Reason = ReasonNew
		return
	case r.s.Immutable(it.Tag):
		it.Action, it.Reason = ActionSkip, ReasonImmutable
		return
	case r.m.opts.Recheck:
		it.Reason = ReasonRecheck
		return
	}
	reason, subjects, err := r.compare(ctx, it)
	if err == nil && reason == "" && r.s.Referrers {
		reason, err = r.referrersChanged(ctx, subjects)
	}
	switch {
	case err != nil:
		it.fail(err)
	case reason != "":
		it.Reason = reason
	default:
		it.Action, it.Reason = ActionSkip, ReasonUnchanged
	}
}

// compare tells whether the target's tag is what the source's would
// become, from a HEAD at the source and, at the target, a HEAD, or with a
// platform subset a GET of the target's own index (whose annotations say
// which source index and platforms it was made from). It returns the
// manifests whose signatures and referrers to look at when unchanged.
func (r *syncRun) compare(ctx context.Context, it *Item) (reason string, subjects []digest.Digest, err error) {
	// Both sides at once.
	var (
		d       digest.Digest
		srcErr  error
		have    *transfer.Manifest // with a platform subset
		t       digest.Digest      // without
		dstErr  error
		wg      sync.WaitGroup
		subset  = len(r.s.Platforms) > 0
		dstRead = r.dst.(transfer.Reader)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		d, srcErr = r.src.ManifestDigest(ctx, it.Tag)
	}()
	if subset {
		have, dstErr = dstRead.Manifest(ctx, it.Tag)
	} else {
		t, dstErr = r.dst.TagDigest(ctx, it.Tag)
	}
	wg.Wait()
	if srcErr != nil {
		return "", nil, fmt.Errorf("checking %s: %w", it.Source, srcErr)
	}
	it.SourceDigest = d
	if errors.Is(dstErr, transfer.ErrNotFound) {
		return ReasonNew, nil, nil
	}
	if dstErr != nil {
		return "", nil, fmt.Errorf("checking %s: %w", it.Target, dstErr)
	}
	if !subset {
		it.Digest = t
		if t != d {
			return ReasonChanged, nil, nil
		}
		return "", []digest.Digest{d}, nil
	}
	it.Digest = have.Descriptor.Digest
	switch {
	case it.Digest == d && have.IsIndex():
		return ReasonPlatforms, nil, nil // the whole index, not a subset
	case it.Digest == d:
		return "", []digest.Digest{d}, nil // an image: copied as it is
	case !have.IsIndex() || have.Annotations[transfer.AnnotationSourceDigest] != string(d):
		return ReasonChanged, nil, nil
	case have.Annotations[transfer.AnnotationSourcePlatforms] != r.wantPlatforms:
		return ReasonPlatforms, nil, nil
	}
	for _, c := range have.Manifests {
		subjects = append(subjects, c.Digest)
	}
	return "", subjects, nil
}

// referrersChanged looks for signatures and referrers of subjects that
// the target lacks: cosign's tags from the two tag lists and a HEAD on
// each side, and the source's OCI referrers API, when it has one (a GET
// of /v2/NAME/referrers/DIGEST, which is not a manifest request).
func (r *syncRun) referrersChanged(ctx context.Context, subjects []digest.Digest) (string, error) {
	for _, k := range subjects {
		for _, suffix := range transfer.AttachmentSuffixes {
			t := transfer.AttachmentTag(k, suffix)
			if !r.srcHas[t] {
				continue
			}
			if !r.dstHas[t] {
				return ReasonSignatures, nil
			}
			sd, err := r.src.ManifestDigest(ctx, t)
			if err != nil {
				return "", fmt.Errorf("checking %s: %w", r.sourceRef(t), err)
			}
			dd, err := r.dst.TagDigest(ctx, t)
			if err != nil && !errors.Is(err, transfer.ErrNotFound) {
				return "", fmt.Errorf("checking %s: %w", r.targetRef(t), err)
			}
			if sd != dd {
				return ReasonSignatures, nil
			}
		}
		descs, err := r.sourceReferrers(ctx, k)
		if err != nil || len(descs) == 0 {
			return "", err
		}
		lister, ok := r.dst.(transfer.Source)
		if !ok {
			return ReasonReferrers, nil
		}
		have, err := lister.Referrers(ctx, ocispec.Descriptor{Digest: k}, transfer.DefaultMaxReferrers)
		if err != nil && !errors.Is(err, transfer.ErrNotFound) {
			return "", fmt.Errorf("listing the referrers of %s@%s: %w", r.dst, k, err)
		}
		got := map[digest.Digest]bool{}
		for _, d := range have {
			got[d.Digest] = true
		}
		for _, d := range descs {
			if !got[d.Digest] {
				return ReasonReferrers, nil
			}
		}
	}
	return "", nil
}

// What a source's referrers API is known to be.
const (
	apiUnknown = iota
	apiPresent
	apiAbsent
)

// referrersAPI is a registry's referrers API alone (transfer.Repository).
type referrersAPI interface {
	ReferrersAPI(ctx context.Context, subject ocispec.Descriptor, limit int) ([]ocispec.Descriptor, bool, error)
}

// sourceReferrers lists k's referrers at the source without reading a
// manifest: through a registry's referrers API (remembering when it has
// none), or from a layout's index.
func (r *syncRun) sourceReferrers(ctx context.Context, k digest.Digest) ([]ocispec.Descriptor, error) {
	subject := ocispec.Descriptor{Digest: k}
	api, ok := r.src.(referrersAPI)
	if !ok {
		descs, err := r.src.Referrers(ctx, subject, transfer.DefaultMaxReferrers)
		if err != nil {
			return nil, fmt.Errorf("listing the referrers of %s@%s: %w", r.src, k, err)
		}
		return descs, nil
	}
	// The first query tells whether the registry has the API at all; the
	// others wait for its answer rather than each asking in vain.
	if r.api.Load() == apiUnknown {
		r.apiProbe.Lock()
		if r.api.Load() == apiUnknown {
			defer r.apiProbe.Unlock()
		} else {
			r.apiProbe.Unlock()
		}
	}
	if r.api.Load() == apiAbsent {
		return nil, nil
	}
	descs, supported, err := api.ReferrersAPI(ctx, subject, transfer.DefaultMaxReferrers)
	if err != nil {
		return nil, fmt.Errorf("listing the referrers of %s@%s: %w", r.src, k, err)
	}
	if !supported {
		r.api.Store(apiAbsent)
	} else {
		r.api.Store(apiPresent)
	}
	return descs, nil
}

// copy copies one image and records what moved.
func (r *syncRun) copy(ctx context.Context, it *Item) {
	res, err := r.engine.Copy(ctx, r.src, r.dst, transfer.Request{Source: it.Tag, Tag: it.Tag})
	if res.SourceDigest != "" {
		it.SourceDigest = res.SourceDigest
	}
	if err != nil {
		it.fail(err)
		return
	}
	it.Digest = res.Digest
	it.Manifests, it.Referrers = res.Manifests, res.Referrers
	it.BlobsCopied, it.BlobsSkipped, it.BlobsMounted = res.BlobsCopied, res.BlobsSkipped, res.BlobsMounted
	it.Bytes, it.Seconds = res.Bytes, res.Duration.Seconds()
}

// planPrune lists the target's tags that are no longer selected.
// Signatures of pruned images are added by doPrune, once the copies are
// done and what the kept tags point at is known.
func (r *syncRun) planPrune() error {
	if !r.s.Prune {
		return nil
	}
	if len(r.selected) == 0 && len(r.dstTags) > 0 {
		return fmt.Errorf("no tag of %s is selected; refusing to prune every tag of %s (check [sync.tags])", r.src, r.dst)
	}
	keep := set(r.selected)
	for _, t := range r.dstTags {
		if keep[t] || isReferrerTag(t) || !r.m.opts.Shard.Has(r.s.shardKey, t) {
			continue
		}
		r.prune = append(r.prune, &Item{Sync: r.s.Index, Tag: t, Action: ActionPrune, Reason: ReasonNotSelected, Target: r.targetRef(t)})
	}
	return nil
}

// doPrune resolves the tags to prune, adds the signature and referrer
// tags of the images that no kept tag points at, and, unless this is a
// dry run, deletes them.
func (r *syncRun) doPrune(ctx context.Context) {
	tags := r.prune
	for _, it := range tags {
		d, err := r.dst.TagDigest(ctx, it.Tag)
		if err != nil {
			it.fail(fmt.Errorf("checking %s: %w", it.Target, err))
			continue
		}
		it.Digest = d
	}
	var kept map[digest.Digest]string
	keptDigests := func() (map[digest.Digest]string, error) {
		if kept != nil {
			return kept, nil
		}
		k, err := r.keptDigests(ctx)
		kept = k
		return k, err
	}
	for _, it := range tags {
		if it.Err != nil {
			continue
		}
		var sigs []string
		for _, suffix := range append([]string{""}, transfer.AttachmentSuffixes...) {
			t := transfer.AttachmentTag(it.Digest, suffix)
			if r.dstHas[t] {
				sigs = append(sigs, t)
			}
		}
		if len(sigs) == 0 {
			continue
		}
		k, err := keptDigests()
		if err != nil {
			it.fail(err)
			continue
		}
		if _, ok := k[it.Digest]; ok {
			continue // a kept tag points at the same image
		}
		for _, t := range sigs {
			sig := &Item{Sync: r.s.Index, Tag: t, Action: ActionPrune, Reason: ReasonSignatureOf, Target: r.targetRef(t)}
			if !strings.Contains(t, ".") {
				sig.Reason = ReasonReferrersOf
			}
			if sig.Digest, err = r.dst.TagDigest(ctx, t); err != nil {
				sig.fail(fmt.Errorf("checking %s: %w", sig.Target, err))
			}
			r.prune = append(r.prune, sig)
		}
	}
	if r.m.opts.DryRun {
		return
	}
	del, ok := r.dst.(transfer.Deleter)
	for _, it := range r.prune {
		if it.Err != nil {
			continue
		}
		if !ok {
			it.fail(fmt.Errorf("%s cannot delete tags", r.dst))
			continue
		}
		err := del.DeleteTag(ctx, it.Tag)
		if errors.Is(err, transfer.ErrTagDeleteUnsupported) {
			// Only the whole manifest can go, and every tag with it.
			var k map[digest.Digest]string
			if k, err = keptDigests(); err == nil {
				if other, shared := k[it.Digest]; shared {
					err = fmt.Errorf("deleting %s: %w, and kept tag %s points at the same manifest %s", it.Target, transfer.ErrTagDeleteUnsupported, other, it.Digest)
				} else {
					err = del.DeleteManifest(ctx, it.Digest)
				}
			}
		}
		if err != nil && !errors.Is(err, transfer.ErrNotFound) {
			it.fail(err)
		}
	}
}

// keptDigests maps what each tag that stays at the target points at to
// the tag: from this run's checks and copies where it knows, else by
// HEAD at the target. In a dry run an image about to be copied counts as
// kept, and so does what its tag points at now.
func (r *syncRun) keptDigests(ctx context.Context) (map[digest.Digest]string, error) {
	out := map[digest.Digest]string{}
	known := map[string]bool{}
	for _, it := range r.items {
		if it.Err == nil && it.Digest != "" {
			out[it.Digest] = it.Target
			known[it.Tag] = !r.m.opts.DryRun || it.Action != ActionCopy
		}
	}
	pruned := map[string]bool{}
	for _, it := range r.prune {
		pruned[it.Tag] = true
	}
	for _, t := range r.dstTags {
		if pruned[t] || known[t] || isReferrerTag(t) {
			continue
		}
		d, err := r.dst.TagDigest(ctx, t)
		if errors.Is(err, transfer.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("checking kept tag %s: %w", r.targetRef(t), err)
		}
		out[d] = r.targetRef(t)
	}
	return out, nil
}

func set(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}

// emptyTarget is a layout that does not exist yet, for a dry run.
type emptyTarget string

func (e emptyTarget) String() string { return string(e) }
func (e emptyTarget) BlobExists(context.Context, ocispec.Descriptor) (bool, error) {
	return false, nil
}
func (e emptyTarget) ManifestExists(context.Context, ocispec.Descriptor) (bool, error) {
	return false, nil
}
func (e emptyTarget) WriteBlob(context.Context, ocispec.Descriptor, io.Reader) error {
	return fmt.Errorf("%s: a dry run writes nothing", e)
}
func (e emptyTarget) PutManifest(context.Context, *transfer.Manifest, string) error {
	return fmt.Errorf("%s: a dry run writes nothing", e)
}
func (e emptyTarget) TagDigest(_ context.Context, tag string) (digest.Digest, error) {
	return "", fmt.Errorf("%w: %s:%s", transfer.ErrNotFound, e, tag)
}
func (e emptyTarget) Manifest(_ context.Context, id string) (*transfer.Manifest, error) {
	return nil, fmt.Errorf("%w: %s:%s", transfer.ErrNotFound, e, id)
}
func (e emptyTarget) ManifestDigest(ctx context.Context, id string) (digest.Digest, error) {
	return e.TagDigest(ctx, id)
}
func (e emptyTarget) FetchBlob(_ context.Context, d digest.Digest, _, _ int64) ([]byte, error) {
	return nil, fmt.Errorf("%w: %s@%s", transfer.ErrNotFound, e, d)
}
func (e emptyTarget) Tags(context.Context, transfer.TagOptions) ([]string, error) { return nil, nil }
