package store

import (
	"context"
	"errors"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// referrerInfo is what one manifest contributes to the referrers lookup.
// Manifests are content-addressed, so it never changes once computed.
type referrerInfo struct {
	subject digest.Digest // empty: the manifest has no subject
	desc    ocispec.Descriptor
}

// referrerCache maps subjects to referrers for one version of index.json.
type referrerCache struct {
	mu        sync.Mutex
	ok        bool
	fp        indexFP
	bySubject map[digest.Digest][]ocispec.Descriptor
	known     map[digest.Digest]referrerInfo
}

// Referrers returns the manifests listed in index.json whose "subject" is
// the given digest, in index order, each described as the distribution
// spec's referrers API does: mediaType, digest, size, artifactType (the
// manifest's artifactType, else the config's mediaType for an image) and the
// manifest's annotations. Manifests larger than 4 MiB and entries whose blob
// is missing or unparseable are skipped.
//
// The lookup is cached for as long as index.json is unchanged (size, mtime,
// inode and this Store's write counter), and each manifest is read once for
// the life of the Store, so repeated calls are cheap; a change by another
// process is noticed on the next call.
func (s *Store) Referrers(ctx context.Context, subject digest.Digest) ([]ocispec.Descriptor, error) {
	if err := ValidateDigest(subject); err != nil {
		return nil, err
	}
	idx, fp, err := s.loadIndex(ctx)
	if err != nil {
		return nil, err
	}
	c := &s.refs
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ok || c.fp != fp {
		by, known, err := buildReferrers(ctx, s, idx, c.known)
		if err != nil {
			return nil, err
		}
		c.ok, c.fp, c.bySubject, c.known = true, fp, by, known
	}
	return cloneDescs(c.bySubject[subject]), nil
}

func cloneDescs(ds []ocispec.Descriptor) []ocispec.Descriptor {
	out := make([]ocispec.Descriptor, len(ds))
	for i, d := range ds {
		out[i] = cloneDesc(d)
	}
	return out
}

// buildReferrers reads every manifest of idx not in known and groups the
// manifests by subject. It returns the groups and the infos of idx's
// manifests (to pass as known next time).
func buildReferrers(ctx context.Context, src blobSource, idx *ocispec.Index, known map[digest.Digest]referrerInfo) (map[digest.Digest][]ocispec.Descriptor, map[digest.Digest]referrerInfo, error) {
	by := map[digest.Digest][]ocispec.Descriptor{}
	next := map[digest.Digest]referrerInfo{}
	for _, entry := range idx.Manifests {
		d := entry.Digest
		if _, seen := next[d]; seen {
			continue
		}
		info, ok := known[d]
		if !ok {
			var cache bool
			var err error
			info, cache, err = readReferrerInfo(ctx, src, entry)
			if err != nil {
				return nil, nil, err
			}
			if !cache {
				continue
			}
		}
		next[d] = info
		if info.subject != "" {
			by[info.subject] = append(by[info.subject], info.desc)
		}
	}
	return by, next, nil
}

// readReferrerInfo reads the manifest entry points at. cache is false when
// the result may change (the blob is missing for now); err is only for a
// cancelled ctx.
func readReferrerInfo(ctx context.Context, src blobSource, entry ocispec.Descriptor) (info referrerInfo, cache bool, err error) {
	d := entry.Digest
	if ValidateDigest(d) != nil || entry.Size > maxReferrerManifest {
		return referrerInfo{}, true, nil
	}
	data, err := readSmallBlob(ctx, src, d, maxReferrerManifest)
	switch {
	case ctx.Err() != nil:
		return referrerInfo{}, false, ctx.Err()
	case errors.Is(err, errTooLarge):
		return referrerInfo{}, true, nil
	case err != nil:
		return referrerInfo{}, false, nil
	}
	m, err := parseManifest(data)
	if err != nil || m.Subject == nil || ValidateDigest(m.Subject.Digest) != nil {
		return referrerInfo{}, true, nil
	}
	desc := ocispec.Descriptor{
		MediaType:    m.MediaType,
		Digest:       d,
		Size:         int64(len(data)),
		ArtifactType: m.ArtifactType,
		Annotations:  m.Annotations,
	}
	if desc.MediaType == "" {
		desc.MediaType = entry.MediaType
	}
	if desc.ArtifactType == "" && m.Config != nil && !m.isIndex() {
		desc.ArtifactType = m.Config.MediaType
	}
	return referrerInfo{subject: m.Subject.Digest, desc: desc}, true, nil
}
