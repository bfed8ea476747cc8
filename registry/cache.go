package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// The pull-through cache (Options.Upstreams).
//
// Cached content is ordinary content of the layout: a tag fetched from an
// upstream is an index.json entry "REPO:TAG" like a pushed one, a manifest
// fetched by digest gets a RepositoryAnnotation entry, and blobs are shared
// by every repository. So a cache hit takes the same path as any request,
// and `ferry serve --root` without --upstream serves what a cache filled.
//
// Before the usual handlers run, the cache makes sure the layout holds what
// the request needs:
//   - a manifest by digest or a blob is fetched once, when it is missing,
//     and never asked for again;
//   - a tag is served as it is for UpstreamTTL after the upstream last
//     confirmed it; then a HEAD request asks the upstream for its digest,
//     and the manifest is fetched only when it changed;
//   - a referrers list is refreshed like a tag, and the referrers the
//     layout lacks are fetched as manifests by digest;
//   - a tag list is asked from the upstream every time.
//
// When the upstream cannot answer, what the layout holds is served with a
// Warning header (staleWarning) and a warning in the log.
//
// Concurrent requests for the same missing content share one fetch
// (flightGroup): the first request fetches, and the others wait until the
// content is stored and then read it from the layout. A blob is streamed
// to the first client while it is written to the layout (see fillBlob);
// the fetch runs on the server's context, so it completes for the others
// even when that client goes away.

// cache is the pull-through state of a Server.
type cache struct {
	s       *Server
	routes  *upstreamRoutes
	ttl     time.Duration // negative: revalidate every time
	timeout time.Duration
	maxSize int64

	// ctx lives as long as the server: fetches outlive the request that
	// started them. Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	flights flightGroup
	fresh   freshness
	evict   *evictor // nil without CacheMaxSize
}

// newCache starts the pull-through cache of s, and its evictor when
// CacheMaxSize is set.
func newCache(s *Server) (*cache, error) {
	o := s.opts
	switch {
	case o.UpstreamTimeout < 0:
		return nil, fmt.Errorf("registry: UpstreamTimeout %v is negative", o.UpstreamTimeout)
	case o.CacheMaxSize < 0:
		return nil, fmt.Errorf("registry: CacheMaxSize %d is negative", o.CacheMaxSize)
	}
	routes, err := newUpstreamRoutes(o.Upstreams)
	if err != nil {
		return nil, err
	}
	c := &cache{s: s, routes: routes, ttl: o.UpstreamTTL, timeout: o.UpstreamTimeout, maxSize: o.CacheMaxSize}
	if c.ttl == 0 {
		c.ttl = DefaultUpstreamTTL
	}
	if c.timeout == 0 {
		c.timeout = DefaultUpstreamTimeout
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.maxSize > 0 {
		c.evict = startEvictor(c)
	}
	return c, nil
}

// close stops the fetches in flight and the evictor.
func (c *cache) close() {
	c.cancel()
	if c.evict != nil {
		c.evict.wait()
	}
}

// cached reports whether repo is a cache of an upstream.
func (c *cache) cached(repo string) bool {
	_, _, ok := c.routes.route(repo)
	return ok
}

// pushToCache is the answer to a push into a cached repository: 405, with
// the methods the route still allows.
func pushToCache(rt route) *apiError {
	allow := slices.DeleteFunc(allowedMethods(rt.kind), func(m string) bool {
		action, _ := routeAction(rt, m)
		return action == ActionPush
	})
	return newError(http.StatusMethodNotAllowed, codeUnsupported, "repository %s is a cache of an upstream registry: push to the upstream instead", rt.name).
		withHeader("Allow", strings.Join(allow, ", "))
}

// prepareManifest makes sure the layout holds the manifest that GET or HEAD
// /v2/<name>/manifests/<reference> asks for, when name is cached. A stale
// answer gets the Warning header in h. The error is the response when the
// manifest can be neither found nor fetched.
func (c *cache) prepareManifest(ctx context.Context, h http.Header, rt route) *apiError {
	up, upRepo, ok := c.routes.route(rt.name)
	if !ok {
		return nil
	}
	tag, d, aerr := parseReference(rt.ref, manifestUnknown(rt.name, rt.ref))
	if aerr != nil {
		return aerr
	}
	if d != "" {
		return c.prepareDigest(ctx, up, upRepo, rt.name, d)
	}
	return c.prepareTag(ctx, h, up, upRepo, rt.name, tag)
}

// heldManifest reports whether manifest d is in repo and its blob is
// stored, and whether it is a member of repo through an index.json entry
// or a cached index that lists it.
func (c *cache) heldManifest(ctx context.Context, repo string, d digest.Digest) (held, member bool, err error) {
	v, err := c.s.currentView(ctx)
	if err != nil {
		return false, false, err
	}
	_, member, err = c.s.manifestIn(ctx, v, repo, d)
	if err != nil || !member {
		return false, member, err
	}
	held, err = c.blobHeld(ctx, d)
	return held, member, err
}

// blobHeld reports whether the layout stores blob d.
func (c *cache) blobHeld(ctx context.Context, d digest.Digest) (bool, error) {
	_, err := c.s.rw.Stat(ctx, d)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// prepareDigest fetches manifest d of repo unless the layout holds it.
func (c *cache) prepareDigest(ctx context.Context, up Upstream, upRepo, repo string, d digest.Digest) *apiError {
	held, _, err := c.heldManifest(ctx, repo, d)
	if err != nil {
		return internalError(err)
	}
	if held {
		c.used(ctx, d)
		return nil
	}
	err = c.flights.do(ctx, "manifest "+repo+"@"+string(d), func() error {
		held, member, err := c.heldManifest(c.ctx, repo, d)
		if err != nil || held {
			return err // another request stored it meanwhile
		}
		fctx, cancel := context.WithTimeout(c.ctx, manifestFetchTimeout)
		defer cancel()
		desc, raw, err := up.Manifest(fctx, upRepo, string(d))
		if err != nil {
			return err
		}
		desc.Digest = d // what must be stored, whatever the upstream says
		// A child of a cached index is already a member of repo.
		return c.storeManifest(fctx, up, repo, "", !member, desc, raw)
	})
	if err != nil {
		return c.fetchError(ctx, up, err, manifestUnknown(repo, string(d)))
	}
	return nil
}

// heldTag returns what tag key ("REPO:TAG") points at, and whether the
// layout holds that manifest.
func (c *cache) heldTag(ctx context.Context, key string) (ocispec.Descriptor, bool, error) {
	v, err := c.s.currentView(ctx)
	if err != nil {
		return ocispec.Descriptor{}, false, err
	}
	desc, ok := v.tagged[key]
	if !ok {
		return desc, false, nil
	}
	held, err := c.blobHeld(ctx, desc.Digest)
	return desc, held, err
}

// prepareTag makes sure the layout holds tag of repo, confirmed by the
// upstream within the TTL. When the upstream cannot answer, a held tag is
// served stale.
func (c *cache) prepareTag(ctx context.Context, h http.Header, up Upstream, upRepo, repo, tag string) *apiError {
	key := repo + ":" + tag
	desc, held, err := c.heldTag(ctx, key)
	if err != nil {
		return internalError(err)
	}
	if held && c.fresh.fresh(key, c.ttl) {
		c.used(ctx, desc.Digest)
		return nil
	}
	err = c.flights.do(ctx, "tag "+key, func() error { return c.refreshTag(up, upRepo, repo, tag) })
	switch {
	case err == nil:
		return nil
	case held && !isUpstreamNotFound(err) && ctx.Err() == nil:
		h.Set("Warning", staleWarning)
		c.s.log.WarnContext(ctx, "serving a cached tag that the upstream could not confirm", "repository", repo, "tag", tag, "digest", desc.Digest, "upstream", up.String(), "error", err)
		return nil
	}
	return c.fetchError(ctx, up, err, manifestUnknown(repo, tag))
}

// refreshTag asks the upstream what tag points at, with a HEAD request
// when the layout holds the tag, and fetches the manifest when it is new.
func (c *cache) refreshTag(up Upstream, upRepo, repo, tag string) error {
	key := repo + ":" + tag
	desc, held, err := c.heldTag(c.ctx, key)
	if err != nil {
		return err
	}
	if held && c.fresh.fresh(key, c.ttl) {
		return nil // confirmed by a request that finished meanwhile
	}
	ref := tag
	if held {
		hctx, cancel := context.WithTimeout(c.ctx, c.timeout)
		d, err := up.ManifestDigest(hctx, upRepo, tag)
		cancel()
		if err != nil {
			return err
		}
		if d == desc.Digest {
			c.fresh.mark(key)
			return nil
		}
		ref = string(d)
	}
	fctx, cancel := context.WithTimeout(c.ctx, manifestFetchTimeout)
	defer cancel()
	got, raw, err := up.Manifest(fctx, upRepo, ref)
	if err != nil {
		return err
	}
	if ref != tag {
		got.Digest = digest.Digest(ref)
	}
	if err := c.storeManifest(fctx, up, repo, tag, false, got, raw); err != nil {
		return err
	}
	c.fresh.mark(key)
	return nil
}

// storeManifest validates raw, fetched from up, as the registry validates
// a push, stores it as blob desc.Digest (verified: an upstream that sent
// other bytes than it named gets nothing stored) and records it in repo:
// under tag, or as a member when member is set.
func (c *cache) storeManifest(ctx context.Context, up Upstream, repo, tag string, member bool, desc ocispec.Descriptor, raw []byte) error {
	if err := store.ValidateDigest(desc.Digest); err != nil {
		return fmt.Errorf("the upstream named manifest %s:%s by an invalid digest: %w", repo, tag, err)
	}
	doc, mt, aerr := validateManifest(raw, desc.MediaType)
	if aerr != nil {
		return fmt.Errorf("the upstream sent an invalid manifest %s: %s", desc.Digest, aerr.message)
	}
	stored := ocispec.Descriptor{MediaType: mt, Digest: desc.Digest, Size: int64(len(raw)), ArtifactType: doc.ArtifactType}
	if err := c.s.rw.WriteBlob(ctx, stored.Digest, stored.Size, bytes.NewReader(raw)); err != nil {
		return err
	}
	err := c.s.rw.Update(ctx, func(idx *ocispec.Index) error {
		// A GC may have swept the blob since it was written; WriteBlob
		// takes no lock, so write it again under the lock.
		if err := c.s.rw.WriteBlob(ctx, stored.Digest, stored.Size, bytes.NewReader(raw)); err != nil {
			return err
		}
		switch {
		case tag != "":
			setTag(idx, repo+":"+tag, stored)
		case member:
			addMember(idx, repo, stored)
		}
		return nil
	})
	c.s.gen.Add(1)
	if err != nil {
		return err
	}
	c.grew(stored.Size)
	c.s.log.InfoContext(ctx, "cached a manifest", "repository", repo, "tag", tag, "digest", stored.Digest, "bytes", stored.Size, "upstream", up.String())
	return nil
}

// prepareReferrers refreshes the referrers of subject in repo from the
// upstream when the last refresh is older than the TTL: referrers the
// layout lacks are fetched and become members of repo. When the upstream
// cannot answer, h gets the Warning header and the layout's referrers are
// served.
func (c *cache) prepareReferrers(ctx context.Context, h http.Header, repo string, subject digest.Digest) {
	up, upRepo, ok := c.routes.route(repo)
	if !ok {
		return
	}
	key := "referrers " + repo + "@" + string(subject)
	if c.fresh.fresh(key, c.ttl) {
		return
	}
	err := c.flights.do(ctx, key, func() error { return c.refreshReferrers(up, upRepo, repo, subject, key) })
	if err != nil && ctx.Err() == nil {
		h.Set("Warning", staleWarning)
		c.s.log.WarnContext(ctx, "serving cached referrers that the upstream could not confirm", "repository", repo, "subject", subject, "upstream", up.String(), "error", err)
	}
}

func (c *cache) refreshReferrers(up Upstream, upRepo, repo string, subject digest.Digest, key string) error {
	if c.fresh.fresh(key, c.ttl) {
		return nil
	}
	lctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	descs, err := up.Referrers(lctx, upRepo, subject)
	cancel()
	if isUpstreamNotFound(err) {
		descs, err = nil, nil // no such repository or subject there: no referrers
	}
	if err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(c.ctx, manifestFetchTimeout)
	defer cancel()
	for _, d := range descs {
		if store.ValidateDigest(d.Digest) != nil {
			continue
		}
		held, member, err := c.heldManifest(fctx, repo, d.Digest)
		if err != nil {
			return err
		}
		if held {
			continue
		}
		desc, raw, err := up.Manifest(fctx, upRepo, string(d.Digest))
		if err != nil {
			return err
		}
		desc.Digest = d.Digest
		if err := c.storeManifest(fctx, up, repo, "", !member, desc, raw); err != nil {
			return err
		}
	}
	c.fresh.mark(key)
	return nil
}

// tags lists the tags of repo as its upstream has them. listed is false
// when repo is not cached, or when the upstream could not answer: then h
// has the Warning header and the layout's tags are the answer.
func (c *cache) tags(ctx context.Context, h http.Header, repo string) (tags []string, listed bool, aerr *apiError) {
	up, upRepo, ok := c.routes.route(repo)
	if !ok {
		return nil, false, nil
	}
	lctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	tags, err := up.Tags(lctx, upRepo)
	switch {
	case err == nil:
		tags = slices.Clone(tags)
		slices.Sort(tags)
		return slices.Compact(tags), true, nil
	case isUpstreamNotFound(err):
		return nil, false, newError(http.StatusNotFound, codeNameUnknown, "repository %s is not known to the upstream %s", repo, up).
			withDetail(map[string]string{"name": repo})
	case ctx.Err() == nil:
		h.Set("Warning", staleWarning)
		c.s.log.WarnContext(ctx, "listing the cached tags: the upstream could not answer", "repository", repo, "upstream", up.String(), "error", err)
	}
	return nil, false, nil
}

// used records that manifest d was served, for the least-recently-used
// order of eviction: its blob's modification time is the last use.
func (c *cache) used(ctx context.Context, d digest.Digest) {
	if c.evict == nil {
		return
	}
	if err := c.s.rw.Touch(ctx, d); err != nil && !errors.Is(err, store.ErrNotFound) {
		c.s.log.DebugContext(ctx, "recording the use of a cached manifest", "digest", d, "error", err)
	}
}

// grew counts n bytes stored by the cache.
func (c *cache) grew(n int64) {
	if c.evict != nil && n > 0 {
		c.evict.grew(n)
	}
}

// fetchError is the response for content the upstream did not deliver:
// notFound when the upstream does not have it, 502 otherwise. The cause
// is logged, not sent.
func (c *cache) fetchError(ctx context.Context, up Upstream, err error, notFound *apiError) *apiError {
	switch {
	case isUpstreamNotFound(err):
		notFound.cause = err
		return notFound
	case ctx.Err() != nil:
		return &apiError{status: http.StatusServiceUnavailable, code: codeUnknown, message: "the request was cancelled", cause: ctx.Err()}
	case errors.Is(err, store.ErrDigestMismatch), errors.Is(err, store.ErrSizeMismatch):
		return &apiError{status: http.StatusBadGateway, code: codeUnknown,
			message: fmt.Sprintf("the upstream %s sent content that does not match its digest; nothing was cached", up), cause: err}
	}
	return &apiError{status: http.StatusBadGateway, code: codeUnknown,
		message: fmt.Sprintf("the upstream %s could not answer; the server log has the details", up), cause: err}
}

// flightGroup runs one fetch per key at a time. A caller that arrives while
// a fetch of its key runs waits for it (or for its own context) and gets
// its error; callers then read what it stored from the layout.
type flightGroup struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	err  error
}

// errFetchAborted is what waiting callers get when a fetch ended without
// returning (its goroutine panicked).
var errFetchAborted = errors.New("the fetch from the upstream was aborted")

// do runs fn unless a call with the same key runs, and returns the error
// of the one that ran. fn runs on the caller's goroutine.
func (g *flightGroup) do(ctx context.Context, key string, fn func() error) error {
	g.mu.Lock()
	if f, ok := g.m[key]; ok {
		g.mu.Unlock()
		select {
		case <-f.done:
			return f.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if g.m == nil {
		g.m = map[string]*flight{}
	}
	f := &flight{done: make(chan struct{}), err: errFetchAborted}
	g.m[key] = f
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.m, key)
		g.mu.Unlock()
		close(f.done)
	}()
	f.err = fn()
	return f.err
}

// freshness remembers when the upstream last confirmed a cached tag or
// referrers list. It lives in memory: after a restart, everything is
// confirmed again on first use.
type freshness struct {
	mu sync.Mutex
	m  map[string]time.Time
}

// maxFreshness bounds the entries remembered; past it, everything is
// forgotten (and confirmed again on next use).
const maxFreshness = 100_000

// fresh reports whether key was confirmed less than ttl ago.
func (f *freshness) fresh(key string, ttl time.Duration) bool {
	if ttl < 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.m[key]
	return ok && time.Since(t) < ttl
}

// mark records that key was confirmed now.
func (f *freshness) mark(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil || len(f.m) >= maxFreshness {
		f.m = map[string]time.Time{}
	}
	f.m[key] = time.Now()
}
