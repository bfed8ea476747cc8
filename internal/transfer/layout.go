package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// Layout is an OCI image layout as an endpoint: a directory (oci:DIR),
// which can be read and written, or a tar file (oci-archive:FILE), read in
// place. Tags are the index's org.opencontainers.image.ref.name
// annotations.
type Layout struct {
	name  string       // oci:DIR or oci-archive:FILE, for messages
	r     store.Reader // what is read
	s     *store.Store // what is written; nil when read-only
	limit int64        // manifest size limit
}

// NewLayout returns an endpoint over a store; name is how messages call it.
func NewLayout(name string, s *store.Store, manifestLimit int64) *Layout {
	return &Layout{name: name, r: s, s: s, limit: limitOr(manifestLimit)}
}

// NewReadOnlyLayout returns an endpoint that only reads r.
func NewReadOnlyLayout(name string, r store.Reader, manifestLimit int64) *Layout {
	return &Layout{name: name, r: r, limit: limitOr(manifestLimit)}
}

func limitOr(n int64) int64 {
	if n <= 0 {
		return DefaultManifestLimit
	}
	return n
}

// String names the layout: oci:DIR or oci-archive:FILE.
func (l *Layout) String() string { return l.name }

// resolve finds the descriptor for a tag or digest. An empty identifier
// means the layout's only image, as skopeo reads oci:DIR.
func (l *Layout) resolve(ctx context.Context, identifier string) (ocispec.Descriptor, error) {
	if identifier == "" {
		idx, err := l.r.Index(ctx)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		var tops []ocispec.Descriptor
		for _, d := range idx.Manifests {
			if IsManifest(d.MediaType) && d.Annotations[ocispec.AnnotationRefName] != "" || len(idx.Manifests) == 1 {
				tops = append(tops, d)
			}
		}
		if len(tops) != 1 {
			names, _ := l.r.Names(ctx)
			return ocispec.Descriptor{}, fmt.Errorf("%w: %s holds %d images; name one with %s:TAG (tags: %s)", ErrInvalidReference, l.name, len(tops), l.name, strings.Join(names, ", "))
		}
		return tops[0], nil
	}
	// A name in a layout may hold colons ("team/app:v1" in a ferry serve
	// root): only a valid digest is looked up as one.
	if d, err := ParseDigest(identifier); err == nil {
		size, err := l.r.Stat(ctx, d)
		if err != nil {
			return ocispec.Descriptor{}, l.notFound(err, "@"+identifier)
		}
		return ocispec.Descriptor{Digest: d, Size: size}, nil
	}
	d, err := l.r.Resolve(ctx, identifier)
	if err != nil {
		return ocispec.Descriptor{}, l.notFound(err, ":"+identifier)
	}
	return d, nil
}

func (l *Layout) notFound(err error, what string) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s%s: not found", ErrNotFound, l.name, what)
	}
	return err
}

// Manifest reads and validates a manifest by tag or digest.
func (l *Layout) Manifest(ctx context.Context, identifier string) (*Manifest, error) {
	desc, err := l.resolve(ctx, identifier)
	if err != nil {
		return nil, err
	}
	what := l.name + "@" + string(desc.Digest)
	if desc.Size > l.limit {
		return nil, fmt.Errorf("%w: manifest %s is %d bytes, over the limit of %d", ErrManifestTooLarge, what, desc.Size, l.limit)
	}
	body, err := l.FetchBlob(ctx, desc.Digest, desc.Size, l.limit)
	if err != nil {
		return nil, err
	}
	m, err := ParseManifest(body, desc.MediaType, desc.Digest.Algorithm())
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", what, err)
	}
	return m, nil
}

// ManifestDigest resolves a tag or digest.
func (l *Layout) ManifestDigest(ctx context.Context, identifier string) (digest.Digest, error) {
	desc, err := l.resolve(ctx, identifier)
	return desc.Digest, err
}

// FetchBlob reads a whole, verified blob of at most limit bytes.
func (l *Layout) FetchBlob(ctx context.Context, d digest.Digest, size, limit int64) ([]byte, error) {
	what := "blob " + l.name + "@" + string(d)
	rc, n, err := l.r.ReadBlob(ctx, d)
	if err != nil {
		return nil, l.notFound(err, "@"+string(d))
	}
	defer rc.Close()
	if n > limit {
		return nil, fmt.Errorf("%s is %d bytes, over the limit of %d", what, n, limit)
	}
	if size < 0 {
		size = n
	}
	return io.ReadAll(newVerifier(rc, d, size, what))
}

// Tags lists the names in the layout's index.
func (l *Layout) Tags(ctx context.Context, opts TagOptions) ([]string, error) {
	names, err := l.r.Names(ctx)
	if err != nil {
		return nil, err
	}
	if opts.MaxTags > 0 && len(names) > opts.MaxTags {
		return nil, fmt.Errorf("%w: %s has more than %d tags", ErrTooMany, l.name, opts.MaxTags)
	}
	sort.Strings(names)
	return names, nil
}

// OpenBlob opens a blob at offset.
func (l *Layout) OpenBlob(ctx context.Context, desc ocispec.Descriptor, offset int64) (io.ReadCloser, error) {
	rc, _, err := l.r.ReadBlob(ctx, desc.Digest)
	if err != nil {
		return nil, l.notFound(err, "@"+string(desc.Digest))
	}
	if offset > 0 {
		if _, err := rc.Seek(offset, io.SeekStart); err != nil {
			rc.Close()
			return nil, fmt.Errorf("reading blob %s@%s at %d: %w", l.name, desc.Digest, offset, err)
		}
	}
	return rc, nil
}

// Referrers lists the manifests in the layout whose subject is subject.
func (l *Layout) Referrers(ctx context.Context, subject ocispec.Descriptor, limit int) ([]ocispec.Descriptor, error) {
	ds, err := l.r.Referrers(ctx, subject.Digest)
	if err != nil {
		return nil, err
	}
	if len(ds) > limit {
		return nil, fmt.Errorf("%w: %s@%s has more than %d referrers", ErrTooMany, l.name, subject.Digest, limit)
	}
	return ds, nil
}

func (l *Layout) writable() error {
	if l.s == nil {
		return fmt.Errorf("%s is read-only", l.name)
	}
	return nil
}

// BlobExists reports whether the layout has the blob.
func (l *Layout) BlobExists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	_, err := l.r.Stat(ctx, desc.Digest)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ManifestExists reports whether the layout has the manifest.
func (l *Layout) ManifestExists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	return l.BlobExists(ctx, desc)
}

// ChecksDigests marks a Layout as a DigestCheckingTarget: the store
// hashes every blob as it writes it.
func (l *Layout) ChecksDigests() {}

// WriteBlob stores a blob; the store verifies it again as it writes.
func (l *Layout) WriteBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	if err := l.writable(); err != nil {
		return err
	}
	return l.s.WriteBlob(ctx, desc.Digest, desc.Size, r)
}

// PutManifest stores m, tagged when tag is set, and listed in index.json
// when tagged or when it has a subject.
func (l *Layout) PutManifest(ctx context.Context, m *Manifest, tag string) error {
	return l.PutRoot(ctx, m, tag, tag != "" || m.Subject != nil)
}

// PutRoot stores m, and lists it in index.json when root is set: under tag
// when there is one.
func (l *Layout) PutRoot(ctx context.Context, m *Manifest, tag string, root bool) error {
	if err := l.writable(); err != nil {
		return err
	}
	if err := l.s.WriteBlob(ctx, m.Descriptor.Digest, m.Descriptor.Size, strings.NewReader(string(m.Raw))); err != nil {
		return err
	}
	desc := ocispec.Descriptor{
		MediaType:    m.Descriptor.MediaType,
		Digest:       m.Descriptor.Digest,
		Size:         m.Descriptor.Size,
		ArtifactType: m.Descriptor.ArtifactType,
	}
	switch {
	case tag != "":
		return l.s.Tag(ctx, tag, desc)
	case root:
		return l.s.AddRoot(ctx, desc)
	}
	return nil
}

// TagDigest resolves tag.
func (l *Layout) TagDigest(ctx context.Context, tag string) (digest.Digest, error) {
	d, err := l.r.Resolve(ctx, tag)
	if err != nil {
		return "", l.notFound(err, ":"+tag)
	}
	return d.Digest, nil
}
