package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// RepositoryAnnotation marks an index.json entry that makes a manifest a
// member of a repository without naming a tag: a manifest pushed by
// digest, or one whose tag was moved or deleted. Its value is the
// repository name. Tags are entries whose
// "org.opencontainers.image.ref.name" is "REPO:TAG".
const RepositoryAnnotation = "io.github.ferry-oci.repository"

// view is an immutable digest of index.json by repository, rebuilt when
// index.json changes.
type view struct {
	repos   []string                                        // sorted
	tags    map[string][]string                             // repo → sorted tags
	tagged  map[string]ocispec.Descriptor                   // "repo:tag" → manifest
	members map[string]map[digest.Digest]ocispec.Descriptor // repo → manifests named with it

	mu    sync.Mutex
	reach map[string]map[digest.Digest]ocispec.Descriptor // repo → children of its indexes, computed on demand
}

// splitRefName splits a ref.name "REPO:TAG" whose parts are a valid
// repository name and tag. Other names (a bare "1.0", "host:5000/x:y",
// "x@sha256:…") are not reachable through the registry.
func splitRefName(s string) (repo, tag string, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return "", "", false
	}
	repo, tag = s[:i], s[i+1:]
	if !store.ValidRepositoryName(repo) || !validTag(tag) {
		return "", "", false
	}
	return repo, tag, true
}

// entryRepo returns the repository an index.json entry makes its manifest
// a member of, and the tag when the entry is a tag.
func entryRepo(e ocispec.Descriptor) (repo, tag string, ok bool) {
	if n, has := e.Annotations[ocispec.AnnotationRefName]; has {
		return splitRefName(n)
	}
	if r := e.Annotations[RepositoryAnnotation]; store.ValidRepositoryName(r) {
		return r, "", true
	}
	return "", "", false
}

func buildView(idx *ocispec.Index) *view {
	v := &view{
		tags:    map[string][]string{},
		tagged:  map[string]ocispec.Descriptor{},
		members: map[string]map[digest.Digest]ocispec.Descriptor{},
		reach:   map[string]map[digest.Digest]ocispec.Descriptor{},
	}
	for _, e := range idx.Manifests {
		repo, tag, ok := entryRepo(e)
		if !ok || store.ValidateDigest(e.Digest) != nil {
			continue
		}
		desc := ocispec.Descriptor{MediaType: e.MediaType, Digest: e.Digest, Size: e.Size, ArtifactType: e.ArtifactType}
		m := v.members[repo]
		if m == nil {
			m = map[digest.Digest]ocispec.Descriptor{}
			v.members[repo] = m
			v.repos = append(v.repos, repo)
		}
		m[e.Digest] = desc
		if tag != "" {
			key := repo + ":" + tag
			if _, dup := v.tagged[key]; !dup {
				v.tags[repo] = append(v.tags[repo], tag)
			}
			v.tagged[key] = desc // the last entry wins, as in store.Resolve
		}
	}
	slices.Sort(v.repos)
	for _, t := range v.tags {
		slices.Sort(t)
	}
	return v
}

// hasRepo reports whether repo has any entry.
func (v *view) hasRepo(repo string) bool {
	_, ok := v.members[repo]
	return ok
}

// isIndexType reports whether mt is a manifest type that lists manifests.
func isIndexType(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerManifestList
}

// manifestIn returns the descriptor of manifest d in repo: an entry of the
// repository, or a child of one of its indexes.
func (s *Server) manifestIn(ctx context.Context, v *view, repo string, d digest.Digest) (ocispec.Descriptor, bool, error) {
	if desc, ok := v.members[repo][d]; ok {
		return desc, true, nil
	}
	if !v.hasRepo(repo) {
		return ocispec.Descriptor{}, false, nil
	}
	reach, err := s.reachable(ctx, v, repo)
	if err != nil {
		return ocispec.Descriptor{}, false, err
	}
	desc, ok := reach[d]
	return desc, ok, nil
}

// maxIndexDepth bounds how deep indexes of indexes are followed.
const maxIndexDepth = 16

// reachable returns the manifests listed by the indexes of repo,
// recursively, computed once per view.
func (s *Server) reachable(ctx context.Context, v *view, repo string) (map[digest.Digest]ocispec.Descriptor, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r, ok := v.reach[repo]; ok {
		return r, nil
	}
	r := map[digest.Digest]ocispec.Descriptor{}
	var queue []ocispec.Descriptor
	for _, d := range v.members[repo] {
		if isIndexType(d.MediaType) {
			queue = append(queue, d)
		}
	}
	seen := map[digest.Digest]bool{}
	for depth := 0; len(queue) > 0 && depth < maxIndexDepth; depth++ {
		var next []ocispec.Descriptor
		for _, d := range queue {
			if seen[d.Digest] {
				continue
			}
			seen[d.Digest] = true
			refs, err := s.refs(ctx, d.Digest)
			if errors.Is(err, store.ErrNotFound) || errors.Is(err, errNotManifest) {
				continue
			}
			if err != nil {
				return nil, err
			}
			for _, c := range refs.children {
				if store.ValidateDigest(c.Digest) != nil {
					continue
				}
				if _, ok := r[c.Digest]; !ok {
					r[c.Digest] = ocispec.Descriptor{MediaType: c.MediaType, Digest: c.Digest, Size: c.Size, ArtifactType: c.ArtifactType}
				}
				if isIndexType(c.MediaType) {
					next = append(next, c)
				}
			}
		}
		queue = next
	}
	v.reach[repo] = r
	return r, nil
}

// indexStamp identifies a version of index.json: its file identity, size
// and mtime, and the count of this server's own updates.
type indexStamp struct {
	fi  os.FileInfo
	gen uint64
}

func (a indexStamp) same(b indexStamp) bool {
	if a.gen != b.gen || (a.fi == nil) != (b.fi == nil) {
		return false
	}
	if a.fi == nil {
		return true
	}
	return os.SameFile(a.fi, b.fi) && a.fi.Size() == b.fi.Size() && a.fi.ModTime().Equal(b.fi.ModTime())
}

// currentView returns the view of the current index.json, rebuilding it
// when the file changed (another process, or this one).
func (s *Server) currentView(ctx context.Context) (*view, error) {
	stamp := indexStamp{gen: s.gen.Load()}
	if s.dir != "" {
		fi, err := os.Stat(filepath.Join(s.dir, ocispec.ImageIndexFile))
		if err != nil {
			return nil, fmt.Errorf("reading the index of the OCI layout: %w", err)
		}
		stamp.fi = fi
	}
	s.viewMu.Lock()
	if s.view != nil && s.viewStamp.same(stamp) {
		v := s.view
		s.viewMu.Unlock()
		return v, nil
	}
	s.viewMu.Unlock()
	// Stamp first, then read: if index.json changes in between, the next
	// call sees another stamp and reads again.
	idx, err := s.r.Index(ctx)
	if err != nil {
		return nil, err
	}
	v := buildView(idx)
	s.viewMu.Lock()
	s.view, s.viewStamp = v, stamp
	s.viewMu.Unlock()
	return v, nil
}

// manifestRefs is what a stored manifest references.
type manifestRefs struct {
	mediaType string
	children  []ocispec.Descriptor // manifests of an index
	blobs     []ocispec.Descriptor // config, layers, blobs
}

// errNotManifest: a blob that does not parse as a manifest.
var errNotManifest = errors.New("not a manifest")

// maxWalkManifest caps a stored manifest read to follow its references;
// it is larger than MaxManifestSize so that layouts written by other tools
// are read whole.
const maxWalkManifest = 32 << 20

// refsCache remembers what manifests reference. Manifests are content
// addressed, so entries never go stale; the cache is dropped when full.
type refsCache struct {
	mu sync.Mutex
	m  map[digest.Digest]*manifestRefs
}

const maxRefsCache = 16384

// refs returns what manifest d references, reading it at most once while
// the cache holds it.
func (s *Server) refs(ctx context.Context, d digest.Digest) (*manifestRefs, error) {
	s.refsCache.mu.Lock()
	r, ok := s.refsCache.m[d]
	s.refsCache.mu.Unlock()
	if ok {
		return r, nil
	}
	data, err := s.readSmall(ctx, d, maxWalkManifest)
	if err != nil {
		return nil, err
	}
	var doc struct {
		MediaType string               `json:"mediaType"`
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
		Blobs     []ocispec.Descriptor `json:"blobs"`
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%w: %s", errNotManifest, d)
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errNotManifest, d, err)
	}
	r = &manifestRefs{mediaType: doc.MediaType, children: doc.Manifests}
	if doc.Config != nil {
		r.blobs = append(r.blobs, *doc.Config)
	}
	r.blobs = append(r.blobs, doc.Layers...)
	r.blobs = append(r.blobs, doc.Blobs...)
	s.refsCache.mu.Lock()
	if s.refsCache.m == nil || len(s.refsCache.m) >= maxRefsCache {
		s.refsCache.m = map[digest.Digest]*manifestRefs{}
	}
	s.refsCache.m[d] = r
	s.refsCache.mu.Unlock()
	return r, nil
}

// readSmall reads blob d whole if it has at most limit bytes.
func (s *Server) readSmall(ctx context.Context, d digest.Digest, limit int64) ([]byte, error) {
	rc, size, err := s.r.ReadBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > limit {
		return nil, fmt.Errorf("%w: %s has %d bytes, more than %d", errNotManifest, d, size, limit)
	}
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", d, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s has more than %d bytes", errNotManifest, d, limit)
	}
	return data, nil
}

// blobUser returns a manifest reachable from idx that references blob b
// (or b itself when it is a reachable manifest), or "" when none does. It
// follows index children like GC does; a root manifest that is missing or
// not a manifest references nothing.
func (s *Server) blobUser(ctx context.Context, idx *ocispec.Index, b digest.Digest) (user digest.Digest, err error) {
	seen := map[digest.Digest]bool{}
	queue := make([]digest.Digest, 0, len(idx.Manifests))
	for _, e := range idx.Manifests {
		queue = append(queue, e.Digest)
	}
	deadline := time.Now().Add(time.Minute)
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if seen[d] || store.ValidateDigest(d) != nil {
			continue
		}
		seen[d] = true
		if d == b {
			return d, nil
		}
		if err := ctx.Err(); err != nil {
			return "", err
		}
		if time.Now().After(deadline) {
			return "", errors.New("checking whether the blob is in use took too long")
		}
		refs, err := s.refs(ctx, d)
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, errNotManifest) {
			continue
		}
		if err != nil {
			return "", err
		}
		for _, r := range refs.blobs {
			if r.Digest == b {
				return d, nil
			}
		}
		for _, c := range refs.children {
			queue = append(queue, c.Digest)
		}
	}
	return "", nil
}
