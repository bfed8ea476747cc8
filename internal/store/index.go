package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxIndexSize caps index.json of a layout directory. One entry takes a few
// hundred bytes, so this allows for several hundred thousand names.
const maxIndexSize = 256 << 20

// indexFP is a cheap fingerprint of index.json: when it is unchanged, the
// parsed index (and the referrers built from it) can be reused.
type indexFP struct {
	size  int64
	mtime int64
	id    uint64 // inode where available: a rename always changes it
	gen   uint64 // writes made through this Store
}

type indexCache struct {
	ok  bool
	fp  indexFP
	idx *ocispec.Index // shared: never modified
}

// loadIndex returns index.json, parsed, from the cache when its fingerprint
// is unchanged. The result is shared: callers must not modify it.
func (s *Store) loadIndex(ctx context.Context) (*ocispec.Index, indexFP, error) {
	if err := ctx.Err(); err != nil {
		return nil, indexFP{}, err
	}
	gen := s.gen.Load()
	f, err := os.Open(s.indexPath())
	if err != nil {
		return nil, indexFP{}, s.indexErr(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, indexFP{}, s.indexErr(err)
	}
	fp := indexFP{size: fi.Size(), mtime: fi.ModTime().UnixNano(), id: fileID(fi), gen: gen}
	s.cacheMu.Lock()
	if s.cache.ok && s.cache.fp == fp {
		idx := s.cache.idx
		s.cacheMu.Unlock()
		return idx, fp, nil
	}
	s.cacheMu.Unlock()

	idx, err := decodeIndex(f, s.indexPath(), maxIndexSize)
	if err != nil {
		return nil, indexFP{}, err
	}
	s.cacheMu.Lock()
	s.cache = indexCache{ok: true, fp: fp, idx: idx}
	s.cacheMu.Unlock()
	return idx, fp, nil
}

func (s *Store) indexErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s has no %s: the layout is incomplete; recreate it", ErrNotLayout, s.dir, ocispec.ImageIndexFile)
	}
	return fmt.Errorf("reading %s: %w", s.indexPath(), err)
}

// decodeIndex reads and parses an index.json of at most limit bytes.
func decodeIndex(r io.Reader, name string, limit int64) (*ocispec.Index, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrNotLayout, name, limit)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%w: %s is not a valid image index: %v", ErrNotLayout, name, err)
	}
	if idx.SchemaVersion != 0 && idx.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: %s has schemaVersion %d, expected 2", ErrNotLayout, name, idx.SchemaVersion)
	}
	return &idx, nil
}

// marshalIndex encodes idx as index.json, with the fields the spec requires
// filled in. idx itself is not modified.
func marshalIndex(idx *ocispec.Index) ([]byte, error) {
	c := *idx
	c.SchemaVersion = 2
	if c.MediaType == "" {
		c.MediaType = ocispec.MediaTypeImageIndex
	}
	if c.Manifests == nil {
		c.Manifests = []ocispec.Descriptor{}
	}
	return json.Marshal(&c)
}

// cloneDesc returns a deep copy of d.
func cloneDesc(d ocispec.Descriptor) ocispec.Descriptor {
	d.URLs = slices.Clone(d.URLs)
	d.Annotations = maps.Clone(d.Annotations)
	d.Data = slices.Clone(d.Data)
	if d.Platform != nil {
		p := *d.Platform
		p.OSFeatures = slices.Clone(p.OSFeatures)
		d.Platform = &p
	}
	return d
}

// cloneIndex returns a deep copy of idx.
func cloneIndex(idx *ocispec.Index) *ocispec.Index {
	c := *idx
	c.Manifests = make([]ocispec.Descriptor, len(idx.Manifests))
	for i, d := range idx.Manifests {
		c.Manifests[i] = cloneDesc(d)
	}
	c.Annotations = maps.Clone(idx.Annotations)
	if idx.Subject != nil {
		s := cloneDesc(*idx.Subject)
		c.Subject = &s
	}
	return &c
}

// Index returns a snapshot of index.json that the caller may modify freely.
func (s *Store) Index(ctx context.Context) (*ocispec.Index, error) {
	idx, _, err := s.loadIndex(ctx)
	if err != nil {
		return nil, err
	}
	return cloneIndex(idx), nil
}

// Update changes index.json atomically with respect to other goroutines and
// processes. Under an in-process mutex and an inter-process lock file it
// re-reads index.json, calls fn with it and, if fn returns nil and changed
// it, writes the result through temp file + fsync + rename. An error from
// fn is returned as is, and index.json is left untouched.
//
// GC holds the same lock while it marks and sweeps, so blobs that fn finds
// present stay present until Update returns. fn must not call other
// methods of the Store that take the lock (Update, Tag, Untag, AddRoot,
// RemoveRoot, PutManifest, GC): that would deadlock.
func (s *Store) Update(ctx context.Context, fn func(idx *ocispec.Index) error) error {
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return s.updateLocked(ctx, fn)
}

// readIndexFile reads index.json from disk, bypassing the cache.
func (s *Store) readIndexFile() (*ocispec.Index, error) {
	f, err := os.Open(s.indexPath())
	if err != nil {
		return nil, s.indexErr(err)
	}
	defer f.Close()
	return decodeIndex(f, s.indexPath(), maxIndexSize)
}

func (s *Store) updateLocked(ctx context.Context, fn func(idx *ocispec.Index) error) error {
	idx, err := s.readIndexFile()
	if err != nil {
		return err
	}
	before, err := marshalIndex(idx)
	if err != nil {
		return err
	}
	if err := fn(idx); err != nil {
		return err
	}
	after, err := marshalIndex(idx)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", s.indexPath(), err)
	}
	if bytes.Equal(before, after) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("updating %s: %w", s.indexPath(), err)
	}
	if err := s.writeFileAtomic(s.indexPath(), after); err != nil {
		return err
	}
	s.gen.Add(1)
	return nil
}

// Resolve returns the index.json entry whose
// "org.opencontainers.image.ref.name" annotation is name. If other tools
// left several entries with that name, the last one wins. The empty name
// selects the only entry of an index.json that has exactly one (as skopeo
// does for oci:DIR without a tag); with more, the error wraps ErrAmbiguous.
// A missing name is an error wrapping ErrNotFound that names it and lists
// some names the layout has.
func (s *Store) Resolve(ctx context.Context, name string) (ocispec.Descriptor, error) {
	idx, _, err := s.loadIndex(ctx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return resolveIn(idx, name, "OCI layout "+s.dir)
}

func resolveIn(idx *ocispec.Index, name, where string) (ocispec.Descriptor, error) {
	if name == "" {
		switch len(idx.Manifests) {
		case 1:
			return cloneDesc(idx.Manifests[0]), nil
		case 0:
			return ocispec.Descriptor{}, fmt.Errorf("%w: %s holds no images", ErrNotFound, where)
		default:
			return ocispec.Descriptor{}, fmt.Errorf("%w: %s holds %d images: name one (names: %s)", ErrAmbiguous, where, len(idx.Manifests), someNames(idx))
		}
	}
	for i := len(idx.Manifests) - 1; i >= 0; i-- {
		if idx.Manifests[i].Annotations[ocispec.AnnotationRefName] == name {
			return cloneDesc(idx.Manifests[i]), nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("%w: name %q in %s (names: %s)", ErrNotFound, name, where, someNames(idx))
}

// someNames lists a few names of idx for error messages.
func someNames(idx *ocispec.Index) string {
	names := namesIn(idx)
	if len(names) == 0 {
		return "none"
	}
	const show = 10
	if len(names) > show {
		return fmt.Sprintf("%q and %d more", names[:show], len(names)-show)
	}
	return fmt.Sprintf("%q", names)
}

func namesIn(idx *ocispec.Index) []string {
	var names []string
	for _, d := range idx.Manifests {
		if n, ok := d.Annotations[ocispec.AnnotationRefName]; ok && n != "" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Names returns every "org.opencontainers.image.ref.name" of index.json,
// sorted, without duplicates.
func (s *Store) Names(ctx context.Context) ([]string, error) {
	idx, _, err := s.loadIndex(ctx)
	if err != nil {
		return nil, err
	}
	return namesIn(idx), nil
}

// ValidateName checks a name for index.json: not empty, at most 4096 bytes,
// no whitespace or control characters. The error wraps ErrInvalidName.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: the name is empty", ErrInvalidName)
	}
	if len(name) > 4096 {
		return fmt.Errorf("%w: %.40q... is %d bytes long, the limit is 4096", ErrInvalidName, name, len(name))
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("%w: %q contains whitespace or a control character", ErrInvalidName, name)
		}
	}
	return nil
}

// Tag points name at desc: every entry with that name is replaced by desc
// with the "org.opencontainers.image.ref.name" annotation set to name (its
// other annotations are kept). The manifest must already be in the store
// with desc's size; otherwise the error wraps ErrNotFound or
// ErrSizeMismatch.
func (s *Store) Tag(ctx context.Context, name string, desc ocispec.Descriptor) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := checkRootDesc(name, desc); err != nil {
		return err
	}
	return s.Update(ctx, func(idx *ocispec.Index) error {
		if err := s.checkPresent(ctx, desc, name); err != nil {
			return err
		}
		setTag(idx, name, desc)
		return nil
	})
}

func checkRootDesc(name string, desc ocispec.Descriptor) error {
	what := "untagged entry"
	if name != "" {
		if err := ValidateName(name); err != nil {
			return err
		}
		what = fmt.Sprintf("name %q", name)
	}
	if err := ValidateDigest(desc.Digest); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if desc.MediaType == "" {
		return fmt.Errorf("%w: %s: descriptor of %s has no mediaType", ErrInvalidManifest, what, desc.Digest)
	}
	return nil
}

// checkPresent checks that the manifest desc points at is stored with the
// right size. Called under the lock, so GC cannot remove it afterwards.
func (s *Store) checkPresent(ctx context.Context, desc ocispec.Descriptor, name string) error {
	size, err := s.Stat(ctx, desc.Digest)
	if errors.Is(err, ErrNotFound) {
		if name != "" {
			return fmt.Errorf("%w: name %q: manifest %s is not in OCI layout %s: write the manifest blob first", ErrNotFound, name, desc.Digest, s.dir)
		}
		return fmt.Errorf("%w: manifest %s is not in OCI layout %s: write the manifest blob first", ErrNotFound, desc.Digest, s.dir)
	}
	if err != nil {
		return err
	}
	if size != desc.Size {
		return fmt.Errorf("%w: manifest %s is %d bytes in OCI layout %s, the descriptor says %d", ErrSizeMismatch, desc.Digest, size, s.dir, desc.Size)
	}
	return nil
}

// setTag makes name point at desc in idx, in place of the first entry that
// had the name (or at the end), dropping any other entries with it.
func setTag(idx *ocispec.Index, name string, desc ocispec.Descriptor) {
	e := cloneDesc(desc)
	if e.Annotations == nil {
		e.Annotations = map[string]string{}
	}
	e.Annotations[ocispec.AnnotationRefName] = name
	out := idx.Manifests[:0]
	placed := false
	for _, m := range idx.Manifests {
		if m.Annotations[ocispec.AnnotationRefName] != name {
			out = append(out, m)
		} else if !placed {
			out = append(out, e)
			placed = true
		}
	}
	if !placed {
		out = append(out, e)
	}
	idx.Manifests = out
}

// Untag removes every entry named name. The manifest blob stays until GC.
// The error wraps ErrNotFound when no entry has the name.
func (s *Store) Untag(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	return s.Update(ctx, func(idx *ocispec.Index) error {
		n := len(idx.Manifests)
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(m ocispec.Descriptor) bool {
			return m.Annotations[ocispec.AnnotationRefName] == name
		})
		if len(idx.Manifests) == n {
			return fmt.Errorf("%w: name %q in OCI layout %s (names: %s)", ErrNotFound, name, s.dir, someNames(idx))
		}
		return nil
	})
}

// AddRoot adds desc to index.json as an untagged entry (without a ref.name
// annotation; one in desc is dropped), which keeps the manifest from being
// collected. Nothing changes if an untagged entry with the same digest and
// the same annotations exists. The manifest must already be stored.
func (s *Store) AddRoot(ctx context.Context, desc ocispec.Descriptor) error {
	if err := checkRootDesc("", desc); err != nil {
		return err
	}
	return s.Update(ctx, func(idx *ocispec.Index) error {
		if err := s.checkPresent(ctx, desc, ""); err != nil {
			return err
		}
		addRoot(idx, desc)
		return nil
	})
}

func addRoot(idx *ocispec.Index, desc ocispec.Descriptor) {
	e := cloneDesc(desc)
	delete(e.Annotations, ocispec.AnnotationRefName)
	if len(e.Annotations) == 0 {
		e.Annotations = nil
	}
	for _, m := range idx.Manifests {
		if m.Digest == e.Digest && maps.Equal(m.Annotations, e.Annotations) {
			return
		}
	}
	idx.Manifests = append(idx.Manifests, e)
}

// RemoveRoot removes the entries of index.json with digest d, tagged or
// not: all of them when match is nil, else those match accepts. The blobs
// stay until GC. The error wraps ErrNotFound when nothing was removed.
func (s *Store) RemoveRoot(ctx context.Context, d digest.Digest, match func(ocispec.Descriptor) bool) error {
	if err := ValidateDigest(d); err != nil {
		return err
	}
	return s.Update(ctx, func(idx *ocispec.Index) error {
		n := len(idx.Manifests)
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(m ocispec.Descriptor) bool {
			return m.Digest == d && (match == nil || match(cloneDesc(m)))
		})
		if len(idx.Manifests) == n {
			return fmt.Errorf("%w: no index.json entry for %s in OCI layout %s", ErrNotFound, d, s.dir)
		}
		return nil
	})
}

// PutManifest stores the manifest raw (its digest is the sha256 of raw) and
// records it in index.json: under name, or as an untagged entry when name is
// empty. mediaType may be empty when raw has a mediaType field; when both
// are set they must agree (ROBUSTNESS row 7), and a manifest with both
// "manifests" and "layers" or "config" is refused as ambiguous; such errors
// wrap ErrInvalidManifest. Every blob and child manifest raw references
// (but its subject) must already be stored with the declared size, checked
// under the index lock so that GC cannot remove them meanwhile; a missing one
// is an error wrapping ErrManifestBlobUnknown (and ErrNotFound). Foreign
// layers may be absent.
//
// The returned descriptor (the one recorded, less the ref.name annotation)
// carries mediaType, digest, size and the manifest's artifactType, nothing
// else.
func (s *Store) PutManifest(ctx context.Context, raw []byte, mediaType string, name string) (ocispec.Descriptor, error) {
	d := digest.SHA256.FromBytes(raw)
	m, err := parseManifest(raw)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%w: manifest %s: %v", ErrInvalidManifest, d, err)
	}
	switch {
	case mediaType == "" && m.MediaType == "":
		return ocispec.Descriptor{}, fmt.Errorf("%w: manifest %s has no mediaType field and none was given", ErrInvalidManifest, d)
	case mediaType == "":
		mediaType = m.MediaType
	case m.MediaType != "" && m.MediaType != mediaType:
		return ocispec.Descriptor{}, fmt.Errorf("%w: manifest %s: its mediaType field is %q but it was given as %q", ErrInvalidManifest, d, m.MediaType, mediaType)
	}
	if m.Manifests != nil && (m.Config != nil || m.Layers != nil) {
		return ocispec.Descriptor{}, fmt.Errorf("%w: manifest %s has both manifests and config or layers: it is ambiguous", ErrInvalidManifest, d)
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(raw)), ArtifactType: m.ArtifactType}
	if err := checkRootDesc(name, desc); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := s.WriteBlob(ctx, d, desc.Size, bytes.NewReader(raw)); err != nil {
		return ocispec.Descriptor{}, err
	}
	err = s.Update(ctx, func(idx *ocispec.Index) error {
		if err := s.checkReferences(ctx, d, m); err != nil {
			return err
		}
		if err := s.checkPresent(ctx, desc, name); err != nil {
			return err
		}
		if name != "" {
			setTag(idx, name, desc)
		} else {
			addRoot(idx, desc)
		}
		return nil
	})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}

// checkReferences checks that everything manifest d references is stored.
func (s *Store) checkReferences(ctx context.Context, d digest.Digest, m *manifestDoc) error {
	refs := append(m.blobRefs(), m.Manifests...)
	for _, r := range refs {
		size, err := s.Stat(ctx, r.Digest)
		switch {
		case errors.Is(err, ErrNotFound):
			if isForeign(r) {
				continue
			}
			return fmt.Errorf("%w: manifest %s references %s (%s), which is not in OCI layout %s: store it first", ErrManifestBlobUnknown, d, r.Digest, r.MediaType, s.dir)
		case err != nil:
			return fmt.Errorf("manifest %s: %w", d, err)
		case r.Size >= 0 && size != r.Size:
			return fmt.Errorf("%w: manifest %s references %s with size %d, but OCI layout %s holds %d bytes", ErrSizeMismatch, d, r.Digest, r.Size, s.dir, size)
		}
	}
	return nil
}
