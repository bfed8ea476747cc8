package bundle

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// ServeReader returns the bundle as a read-only layout for `ferry serve`
// (registry.NewReadOnly), read in place: its index.json names each image
// as an import into the root of a registry would, without the source's
// registry host — docker.io/library/nginx:1.25 is served as
// library/nginx:1.25 — so that a node pulls HOST/library/nginx:1.25 from
// the served bundle as it would after `ferry bundle import --to HOST`.
// Signature tags follow their images; an image bundled by digest, and
// each referrer, is a member of its repository (AnnotationRepository).
// Two images that would be served under one name are an error naming
// both. Blobs are not hashed here: clients verify what they pull, and
// `ferry bundle verify` checks the whole bundle.
func (b *Bundle) ServeReader() (store.Reader, error) {
	idx, err := b.Archive.Index(context.Background())
	if err != nil {
		return nil, err
	}
	path := func(repo string) string {
		_, p, _ := strings.Cut(repo, "/")
		return p
	}
	names := map[string]string{}          // full name → served name
	repos := map[digest.Digest][]string{} // manifest → served repositories
	for _, im := range b.Catalog.Images {
		if im.Tag != "" {
			names[im.Reference] = path(im.Repository) + ":" + im.Tag
		} else {
			repos[im.Digest] = append(repos[im.Digest], path(im.Repository))
		}
		for _, r := range im.Referrers {
			if n := r.refName(im.Repository); n != "" {
				names[n] = path(im.Repository) + ":" + r.Tag
			}
		}
	}
	served := map[string]string{} // served name → full name
	out := &servedReader{Archive: b.Archive, idx: &ocispec.Index{Versioned: idx.Versioned, MediaType: idx.MediaType}}
	for _, e := range idx.Manifests {
		e.Annotations = cloneMap(e.Annotations)
		full := e.Annotations[ocispec.AnnotationRefName]
		delete(e.Annotations, ocispec.AnnotationRefName)
		switch n, ok := names[full]; {
		case ok:
			if prev, dup := served[n]; dup && prev != full {
				return nil, fmt.Errorf("%s and %s would both be served as %s", prev, full, n)
			}
			served[n] = full
			e.Annotations[ocispec.AnnotationRefName] = n
			out.idx.Manifests = append(out.idx.Manifests, e)
		case full == "":
			if r := e.Annotations[AnnotationRepository]; r != "" {
				e.Annotations[AnnotationRepository] = path(r)
				out.idx.Manifests = append(out.idx.Manifests, e)
			}
		default:
			for _, r := range repos[e.Digest] {
				m := e
				m.Annotations = cloneMap(e.Annotations)
				m.Annotations[AnnotationRepository] = r
				out.idx.Manifests = append(out.idx.Manifests, m)
			}
		}
	}
	return out, nil
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// servedReader is the archive with index.json renamed for serving.
type servedReader struct {
	*store.Archive
	idx *ocispec.Index
}

func (s *servedReader) Index(ctx context.Context) (*ocispec.Index, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := *s.idx
	c.Manifests = make([]ocispec.Descriptor, len(s.idx.Manifests))
	for i, d := range s.idx.Manifests {
		d.Annotations = cloneMap(d.Annotations)
		c.Manifests[i] = d
	}
	return &c, nil
}

func (s *servedReader) Resolve(ctx context.Context, name string) (ocispec.Descriptor, error) {
	if err := ctx.Err(); err != nil {
		return ocispec.Descriptor{}, err
	}
	for i := len(s.idx.Manifests) - 1; i >= 0; i-- {
		if d := s.idx.Manifests[i]; d.Annotations[ocispec.AnnotationRefName] == name {
			d.Annotations = cloneMap(d.Annotations)
			return d, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("%w: name %q in bundle %s", store.ErrNotFound, name, s.Path())
}

func (s *servedReader) Names(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var names []string
	for _, d := range s.idx.Manifests {
		if n := d.Annotations[ocispec.AnnotationRefName]; n != "" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}
