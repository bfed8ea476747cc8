package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// DefaultJobs is how many blobs move at once unless Options.Jobs says
// otherwise. Registries are usually tens of milliseconds away, so more
// transfers in flight than cores pays off.
const DefaultJobs = 16

// DefaultMaxReferrers caps the referrers read for one manifest
// (ROBUSTNESS rows 13 and 33).
const DefaultMaxReferrers = 1000

// Options tune a copy.
type Options struct {
	// Platforms selects images from an index: none copies the index whole,
	// one copies that platform's image, several a new index of just them.
	Platforms []ocispec.Platform
	// Referrers carries signatures, attestations and SBOMs: referrers
	// (OCI 1.1 API or tag schema) and cosign's sha256-<hex>.sig/.att/.sbom
	// tags, for every manifest copied.
	Referrers bool
	// NoClobber leaves a destination tag that already exists alone.
	NoClobber bool
	// Jobs caps the blobs in flight; 0 means DefaultJobs.
	Jobs int
	// MaxReferrers caps referrers per manifest; 0 means DefaultMaxReferrers.
	MaxReferrers int
	// Events receives progress; nil discards it.
	Events EventFunc
	// PlatformIndex writes a new index even when Platforms selects one
	// image, so that the target records what it was selected from (see
	// AnnotationSourceDigest). ferry mirror sets it.
	PlatformIndex bool
	// DryRun reads the source and asks the target which blobs it has, but
	// writes nothing: the Result says what a copy would move (BlobsCopied
	// and Bytes count the blobs the target lacks).
	DryRun bool
}

// Annotations the engine writes on an index it made by selecting
// platforms from a source index, so that a later run can tell whether the
// source changed from the target alone, without reading the source's
// manifest.
const (
	// AnnotationSourceDigest is the digest of the source index.
	AnnotationSourceDigest = "io.github.ferry-oci.source.digest"
	// AnnotationSourcePlatforms lists the platforms asked for, as
	// os/arch[/variant] separated by commas, in the order given.
	AnnotationSourcePlatforms = "io.github.ferry-oci.source.platforms"
)

// PlatformList formats platforms the way AnnotationSourcePlatforms
// records them.
func PlatformList(platforms []ocispec.Platform) string {
	s := make([]string, len(platforms))
	for i := range platforms {
		s[i] = FormatPlatform(&platforms[i])
	}
	return strings.Join(s, ",")
}

// Request is one image to copy.
type Request struct {
	// Source is the tag or digest to read.
	Source string
	// Tag is the tag to write at the target; "" writes by digest only.
	Tag string
}

// Result is what a copy did.
type Result struct {
	Source string // the source reference as copied
	Target string // the target reference written
	// SourceDigest is what the source reference resolved to; Digest is
	// what was written at the target (they differ when platforms were
	// selected from an index).
	SourceDigest digest.Digest
	Digest       digest.Digest
	MediaType    string
	// Clobber: the target tag existed and NoClobber kept it; Digest is
	// what it points at.
	Kept bool

	Manifests    int // manifests written, referrers included
	Referrers    int // referrer and signature manifests among them
	BlobsCopied  int
	BlobsSkipped int // already at the target
	BlobsMounted int
	Bytes        int64 // bytes moved
	Duration     time.Duration
}

// Engine copies images. One Engine shares its blob budget (Jobs) and its
// record of blobs already moved between every Copy call made on it, which
// may run concurrently: a blob shared by many images moves once.
type Engine struct {
	opts Options
	sem  chan struct{}

	mu      *sync.Mutex         // guards flights and tags, which Derive shares
	flights map[string]*flight  // target+digest → the one transfer of it
	tags    map[string]*tagList // source → its tags, listed once
}

// tagList is one source's tag listing, shared by the copies that need it.
type tagList struct {
	once sync.Once
	tags []string
	err  error
}

// sourceTags lists src's tags once per engine: copying many tags of one
// repository looks for cosign's signature tags in a single listing.
func (e *Engine) sourceTags(ctx context.Context, src Source) ([]string, error) {
	e.mu.Lock()
	l, ok := e.tags[src.String()]
	if !ok {
		l = &tagList{}
		e.tags[src.String()] = l
	}
	e.mu.Unlock()
	l.once.Do(func() { l.tags, l.err = src.Tags(ctx, TagOptions{}) })
	return l.tags, l.err
}

// flight is one blob's transfer; waiters block on done. A failed flight
// is forgotten so that a later copy can try again.
type flight struct {
	done chan struct{}
	kind EventKind // BlobDone, BlobSkipped, BlobMounted
	n    int64
	err  error
}

// NewEngine returns an Engine with opts.
func NewEngine(opts Options) *Engine {
	if opts.Jobs <= 0 {
		opts.Jobs = DefaultJobs
	}
	if opts.MaxReferrers <= 0 {
		opts.MaxReferrers = DefaultMaxReferrers
	}
	return &Engine{opts: opts, sem: make(chan struct{}, opts.Jobs), mu: new(sync.Mutex), flights: map[string]*flight{}, tags: map[string]*tagList{}}
}

// Derive returns an Engine that copies with opts but shares e's blob
// budget (e's Jobs; opts.Jobs is ignored), its record of blobs moved and
// its tag listings, so that copies made with different platforms or
// referrer settings still move each blob once and keep within one limit.
func (e *Engine) Derive(opts Options) *Engine {
	opts.Jobs = e.opts.Jobs
	if opts.MaxReferrers <= 0 {
		opts.MaxReferrers = DefaultMaxReferrers
	}
	return &Engine{opts: opts, sem: e.sem, mu: e.mu, flights: e.flights, tags: e.tags}
}

// Copy copies one image from src to dst with opts.
func Copy(ctx context.Context, src Source, dst Target, req Request, opts Options) (Result, error) {
	return NewEngine(opts).Copy(ctx, src, dst, req)
}

// node is a manifest in the graph being copied.
type node struct {
	m        *Manifest
	children []*node // index entries, in order
	tag      string  // the tag to write it under at the target, if any
	root     bool    // top of a graph: an image asked for, or a referrer
}

// copyRun is the state of one Copy call.
type copyRun struct {
	e   *Engine
	src Source
	dst Target

	mu        sync.Mutex
	manifests map[digest.Digest]*node
	blobs     map[digest.Digest]ocispec.Descriptor
	taken     map[digest.Digest]bool // blobs handed to copyBlobs
	res       Result
}

// Copy copies the image req names from src to dst: every manifest, config
// and layer, and with Options.Referrers its signatures, attestations and
// SBOMs. Blobs move before the manifests that need them, children before
// their index, and subjects before their referrers, so the target never
// has a manifest that points at missing content.
func (e *Engine) Copy(ctx context.Context, src Source, dst Target, req Request) (Result, error) {
	start := time.Now()
	r := &copyRun{e: e, src: src, dst: dst, manifests: map[digest.Digest]*node{}, blobs: map[digest.Digest]ocispec.Descriptor{}, taken: map[digest.Digest]bool{}}
	r.res.Source = src.String() + refSep(req.Source) + req.Source
	r.res.Target = dst.String()
	if req.Tag != "" {
		r.res.Target += ":" + req.Tag
	}

	if e.opts.NoClobber && req.Tag != "" {
		d, err := dst.TagDigest(ctx, req.Tag)
		switch {
		case err == nil:
			r.res.Kept, r.res.Digest = true, d
			r.res.Duration = time.Since(start)
			return r.res, nil
		case !errors.Is(err, ErrNotFound):
			return r.res, fmt.Errorf("checking whether %s exists: %w", r.res.Target, err)
		}
	}

	top, err := src.Manifest(ctx, req.Source)
	if err != nil {
		return r.res, err
	}
	r.res.SourceDigest = top.Descriptor.Digest
	top, err = r.selectPlatforms(ctx, top)
	if err != nil {
		return r.res, err
	}
	r.res.Digest, r.res.MediaType = top.Descriptor.Digest, top.Descriptor.MediaType
	if req.Tag == "" {
		r.res.Target += "@" + string(top.Descriptor.Digest)
	}

	root, err := r.walk(ctx, top)
	if err != nil {
		return r.res, err
	}
	root.tag, root.root = req.Tag, true
	// Blobs start moving while referrers are looked for; the referrers'
	// own blobs follow.
	var referrers []*node
	g, gctx := errgroup.WithContext(ctx)
	imageBlobs := r.pendingBlobs()
	g.Go(func() error { return r.copyBlobs(gctx, imageBlobs) })
	if e.opts.Referrers {
		g.Go(func() (err error) {
			referrers, err = r.findReferrers(gctx)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return r.res, err
	}
	if err := r.copyBlobs(ctx, r.pendingBlobs()); err != nil {
		return r.res, err
	}
	if e.opts.DryRun {
		r.res.Manifests = len(r.manifests)
		r.res.Referrers = len(referrers)
		r.res.Duration = time.Since(start)
		return r.res, nil
	}
	if err := r.writeGraph(ctx, root); err != nil {
		return r.res, err
	}
	for _, n := range referrers {
		if err := r.writeGraph(ctx, n); err != nil {
			return r.res, err
		}
		r.res.Referrers++
	}
	r.res.Duration = time.Since(start)
	return r.res, nil
}

// selectPlatforms applies Options.Platforms to an index.
func (r *copyRun) selectPlatforms(ctx context.Context, top *Manifest) (*Manifest, error) {
	want := r.e.opts.Platforms
	if len(want) == 0 || !top.IsIndex() {
		return top, nil
	}
	var picked []ocispec.Descriptor
	for _, p := range want {
		d, err := SelectPlatform(top, p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.res.Source, err)
		}
		if !containsDigest(picked, d.Digest) {
			picked = append(picked, d)
		}
	}
	if len(picked) == 1 && !r.e.opts.PlatformIndex {
		return r.src.Manifest(ctx, string(picked[0].Digest))
	}
	// A new index of just these, keeping every other field of the
	// original, and annotated with where it came from.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(top.Raw, &fields); err != nil {
		return nil, fmt.Errorf("%s: %w", r.res.Source, err)
	}
	list, err := json.Marshal(picked)
	if err != nil {
		return nil, err
	}
	fields["manifests"] = list
	annotations := map[string]string{}
	if a, ok := fields["annotations"]; ok {
		if err := json.Unmarshal(a, &annotations); err != nil || annotations == nil {
			annotations = map[string]string{}
		}
	}
	annotations[AnnotationSourceDigest] = string(top.Descriptor.Digest)
	annotations[AnnotationSourcePlatforms] = PlatformList(want)
	if fields["annotations"], err = json.Marshal(annotations); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return ParseManifest(raw, top.Descriptor.MediaType, top.Descriptor.Digest.Algorithm())
}

func containsDigest(ds []ocispec.Descriptor, d digest.Digest) bool {
	for _, x := range ds {
		if x.Digest == d {
			return true
		}
	}
	return false
}

// walk fetches m's graph, children concurrently, and records every
// manifest and blob in it.
func (r *copyRun) walk(ctx context.Context, m *Manifest) (*node, error) {
	r.mu.Lock()
	if n, ok := r.manifests[m.Descriptor.Digest]; ok {
		r.mu.Unlock()
		return n, nil
	}
	n := &node{m: m}
	r.manifests[m.Descriptor.Digest] = n
	if !m.IsIndex() {
		for _, b := range m.Children() {
			r.blobs[b.Digest] = b
		}
	}
	r.mu.Unlock()
	if !m.IsIndex() {
		return n, nil
	}
	n.children = make([]*node, len(m.Manifests))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.e.opts.Jobs)
	for i, d := range m.Manifests {
		g.Go(func() error {
			child, err := r.src.Manifest(gctx, string(d.Digest))
			if err != nil {
				return err
			}
			if child.Descriptor.Digest != d.Digest {
				return fmt.Errorf("%w: %s lists %s, which resolved to %s", ErrDigestMismatch, m.Descriptor.Digest, d.Digest, child.Descriptor.Digest)
			}
			c, err := r.walk(gctx, child)
			n.children[i] = c
			return err
		})
	}
	return n, g.Wait()
}

// findReferrers finds the referrers of every manifest in the graph, and
// theirs in turn, walks them, and returns them subjects first.
func (r *copyRun) findReferrers(ctx context.Context) ([]*node, error) {
	// cosign's tags, from one tag listing per source and engine.
	tags, err := r.e.sourceTags(ctx, r.src)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("looking for signatures: %w", err)
	}
	byDigest := map[digest.Digest][]string{}
	for _, t := range tags {
		if d, suffix, ok := ParseAttachmentTag(t); ok && suffix != "" {
			byDigest[d] = append(byDigest[d], t)
		}
	}

	var out []*node
	seen := map[digest.Digest]bool{}
	frontier := r.graphDigests()
	for depth := 0; len(frontier) > 0 && depth < 4; depth++ {
		var next []ocispec.Descriptor
		var mu sync.Mutex
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(r.e.opts.Jobs)
		for _, subject := range frontier {
			g.Go(func() error {
				found, err := r.referrersOf(gctx, subject, byDigest[subject.Digest])
				mu.Lock()
				defer mu.Unlock()
				for _, n := range found {
					if seen[n.m.Descriptor.Digest] {
						continue
					}
					seen[n.m.Descriptor.Digest] = true
					out = append(out, n)
					next = append(next, n.m.Descriptor)
				}
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		frontier = next
	}
	return out, nil
}

// graphDigests lists every manifest walked so far, in a stable order.
func (r *copyRun) graphDigests() []ocispec.Descriptor {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ocispec.Descriptor, 0, len(r.manifests))
	for _, n := range r.manifests {
		out = append(out, n.m.Descriptor)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out
}

// referrersOf walks the referrers of subject and its cosign tags.
func (r *copyRun) referrersOf(ctx context.Context, subject ocispec.Descriptor, tags []string) ([]*node, error) {
	descs, err := r.src.Referrers(ctx, subject, r.e.opts.MaxReferrers)
	if err != nil {
		return nil, err
	}
	var out []*node
	for _, d := range descs {
		m, err := r.src.Manifest(ctx, string(d.Digest))
		if err != nil {
			return nil, fmt.Errorf("reading referrer %s of %s: %w", d.Digest, subject.Digest, err)
		}
		n, err := r.walk(ctx, m)
		if err != nil {
			return nil, err
		}
		n.root = true
		out = append(out, n)
	}
	for _, t := range tags {
		m, err := r.src.Manifest(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("reading signature tag %s: %w", t, err)
		}
		n, err := r.walk(ctx, m)
		if err != nil {
			return nil, err
		}
		n.root, n.tag = true, t
		out = append(out, n)
	}
	return out, nil
}

// pendingBlobs takes the blobs walked so far that copyBlobs has not been
// given yet, largest first.
func (r *copyRun) pendingBlobs() []ocispec.Descriptor {
	r.mu.Lock()
	defer r.mu.Unlock()
	blobs := make([]ocispec.Descriptor, 0, len(r.blobs))
	for d, b := range r.blobs {
		if r.taken[d] {
			continue
		}
		r.taken[d] = true
		if len(b.URLs) > 0 {
			continue // a foreign layer: never fetched (ROBUSTNESS row 12)
		}
		blobs = append(blobs, b)
	}
	sort.Slice(blobs, func(i, j int) bool {
		if blobs[i].Size != blobs[j].Size {
			return blobs[i].Size > blobs[j].Size
		}
		return blobs[i].Digest < blobs[j].Digest
	})
	return blobs
}

// copyBlobs moves blobs, Jobs at a time across the engine.
func (r *copyRun) copyBlobs(ctx context.Context, blobs []ocispec.Descriptor) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, b := range blobs {
		g.Go(func() error {
			kind, n, err := r.e.blob(gctx, r.src, r.dst, b)
			if err != nil {
				return err
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			switch kind {
			case BlobDone:
				r.res.BlobsCopied++
				r.res.Bytes += n
			case BlobSkipped:
				r.res.BlobsSkipped++
			case BlobMounted:
				r.res.BlobsMounted++
			}
			return nil
		})
	}
	return g.Wait()
}

// writeGraph writes n's children, concurrently, and then n.
func (r *copyRun) writeGraph(ctx context.Context, n *node) error {
	if len(n.children) > 0 {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(r.e.opts.Jobs)
		for _, c := range n.children {
			g.Go(func() error { return r.writeGraph(gctx, c) })
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return r.writeManifest(ctx, n)
}

func (r *copyRun) writeManifest(ctx context.Context, n *node) error {
	ref := r.dst.String()
	if n.tag != "" {
		ref += ":" + n.tag
	} else {
		ref += "@" + string(n.m.Descriptor.Digest)
	}
	var err error
	if rt, ok := r.dst.(rootTarget); ok {
		err = rt.PutRoot(ctx, n.m, n.tag, n.root)
	} else {
		err = r.dst.PutManifest(ctx, n.m, n.tag)
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.res.Manifests++
	r.mu.Unlock()
	r.e.emit(Event{Kind: ManifestWritten, Digest: n.m.Descriptor.Digest, MediaType: n.m.Descriptor.MediaType, Size: n.m.Descriptor.Size, Ref: ref})
	return nil
}

// rootTarget is a Target that records which manifests are roots (an OCI
// layout lists them in index.json) rather than children of an index.
type rootTarget interface {
	PutRoot(ctx context.Context, m *Manifest, tag string, root bool) error
}

func (e *Engine) emit(ev Event) {
	if e.opts.Events != nil {
		if ev.Time.IsZero() {
			ev.Time = time.Now()
		}
		e.opts.Events(ev)
	}
}

// flightKey names a blob at a target.
func flightKey(dst Target, d digest.Digest) string {
	return dst.String() + "\x00" + string(d)
}

// blob moves one blob, once per target however many copies ask for it.
func (e *Engine) blob(ctx context.Context, src Source, dst Target, desc ocispec.Descriptor) (EventKind, int64, error) {
	key := flightKey(dst, desc.Digest)
	e.mu.Lock()
	if f, ok := e.flights[key]; ok {
		e.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
		if f.err != nil {
			return 0, 0, f.err
		}
		return BlobSkipped, 0, nil // moved by another copy of this run
	}
	f := &flight{done: make(chan struct{})}
	e.flights[key] = f
	e.mu.Unlock()

	f.kind, f.n, f.err = e.moveBlob(ctx, src, dst, desc)
	if f.err != nil {
		e.mu.Lock()
		delete(e.flights, key)
		e.mu.Unlock()
	}
	close(f.done)
	return f.kind, f.n, f.err
}

// moveBlob skips, mounts or streams one blob, within the Jobs budget.
func (e *Engine) moveBlob(ctx context.Context, src Source, dst Target, desc ocispec.Descriptor) (EventKind, int64, error) {
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	defer func() { <-e.sem }()

	ev := Event{Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size}
	send := func(k EventKind, bytes int64, err error) {
		ev.Kind, ev.Bytes, ev.Err, ev.Time = k, bytes, err, time.Now()
		e.emit(ev)
	}
	exists, err := dst.BlobExists(ctx, desc)
	if err != nil {
		return 0, 0, err
	}
	if exists {
		send(BlobSkipped, desc.Size, nil)
		return BlobSkipped, 0, nil
	}
	if e.opts.DryRun {
		return BlobDone, desc.Size, nil // would be copied (or mounted)
	}
	if m, ok := dst.(Mounter); ok {
		mounted, err := m.Mount(ctx, desc, src)
		if err != nil {
			return 0, 0, err
		}
		if mounted {
			send(BlobMounted, desc.Size, nil)
			return BlobMounted, 0, nil
		}
	}
	send(BlobStarted, 0, nil)
	n, err := e.stream(ctx, src, dst, desc, send)
	if err != nil {
		send(BlobFailed, n, err)
		return 0, 0, err
	}
	send(BlobDone, desc.Size, nil)
	return BlobDone, desc.Size, nil
}

// blobAttempts is how many times a blob's upload is started over: once
// more after a digest or size mismatch (ROBUSTNESS row 2), and after a
// failed upload session (row 5).
const blobAttempts = 3

// stream copies the blob's bytes from src into dst, verifying digest and
// size as they pass, resuming the download with Range after a reset, and
// starting the upload over (with a fresh body) after it fails.
func (e *Engine) stream(ctx context.Context, src Source, dst Target, desc ocispec.Descriptor, send func(EventKind, int64, error)) (int64, error) {
	what := "blob " + string(desc.Digest) + " from " + src.String() + " to " + dst.String()
	verify := newVerifier
	if vs, ok := src.(VerifiedSource); ok && vs.BlobsVerified() {
		if _, ok := dst.(DigestCheckingTarget); ok {
			verify = newSizeVerifier
		}
	}
	var lastErr error
	mismatches := 0
	for attempt := 1; attempt <= blobAttempts; attempt++ {
		if attempt > 1 {
			send(BlobRetry, 0, lastErr)
			if err := sleepCtx(ctx, time.Duration(attempt-1)*200*time.Millisecond); err != nil {
				return 0, err
			}
		}
		body := newResumingReader(ctx, func(off int64) (readCloser, error) { return src.OpenBlob(ctx, desc, off) }, func(off int64, err error) {
			send(BlobRetry, off, err)
		})
		body.prefetch()
		v := verify(body, desc.Digest, desc.Size, what)
		counter := &progressReader{r: v, report: func(n int64) { send(BlobProgress, n, nil) }}
		err := dst.WriteBlob(ctx, desc, counter)
		body.Close()
		if verr := counter.r.err; verr != nil {
			// The target may have noticed too; ours names the source.
			err = verr
		}
		if err == nil {
			if !counter.verified() {
				// The target stopped reading early but said it stored the
				// blob: it must have had it already. Trust, but check.
				if ok, herr := dst.BlobExists(ctx, desc); herr != nil || !ok {
					return counter.n, fmt.Errorf("%w: %s: the target accepted %d of %d bytes", ErrSizeMismatch, what, counter.n, desc.Size)
				}
			}
			return desc.Size, nil
		}
		if ctx.Err() != nil {
			return counter.n, ctx.Err()
		}
		lastErr = err
		if errors.Is(err, ErrVerification) {
			mismatches++
			if mismatches > 1 {
				break
			}
		} else if !retryableCopyError(err) {
			break
		}
	}
	return 0, fmt.Errorf("copying %s: %w", what, lastErr)
}

// retryableCopyError reports failures worth starting the blob over for.
func retryableCopyError(err error) bool {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.StatusCode == 404 || he.StatusCode == 408 || he.StatusCode == 429 || he.StatusCode >= 500
	}
	return !errors.Is(err, ErrUnauthorized) && !errors.Is(err, ErrInvalidReference) && !errors.Is(err, ErrNotFound)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// String for a Request, for messages.
func (q Request) String() string {
	s := q.Source
	if q.Tag != "" {
		s += " → " + q.Tag
	}
	return strings.TrimSpace(s)
}
