package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// CatalogFile is the name of the catalog beside index.json in a bundle.
const CatalogFile = "ferry-bundle.json"

// MediaTypeCatalog is the mediaType of ferry-bundle.json, version 1.
const MediaTypeCatalog = "application/vnd.ferry.bundle.v1+json"

// AnnotationRepository, on an index.json entry of a referrer, names the
// repository of the image it refers to. It is the annotation `ferry serve`
// reads to make a manifest a member of a repository
// (registry.RepositoryAnnotation), so that a bundle served in place
// answers GET by digest for its referrers.
const AnnotationRepository = "io.github.ferry-oci.repository"

// maxCatalog caps what is read of ferry-bundle.json.
const maxCatalog = 256 << 20

// Catalog is ferry-bundle.json: what a bundle holds. docs/bundle-format.md
// documents every field.
type Catalog struct {
	MediaType    string    `json:"mediaType"`
	FerryVersion string    `json:"ferryVersion"`
	Created      time.Time `json:"created"`
	// PartSize is the size of every part but the last of a split bundle
	// (--split); 0 for a bundle written as one file.
	PartSize int64 `json:"partSize,omitempty"`
	// Differential is set for a bundle made with --since.
	Differential *Differential `json:"differential,omitempty"`
	// Images are the images asked for, in order.
	Images []Image `json:"images"`
	// Blobs lists every blob in the tar (manifests included), once each.
	Blobs []Blob `json:"blobs"`
}

// Differential says what a differential bundle left out.
type Differential struct {
	// Receipts are the SHA-256 digests of the receipt files given to
	// --since, in order.
	Receipts []digest.Digest `json:"receipts"`
	// Omitted are the blobs the bundle's manifests reference but the tar
	// does not hold, because a receipt listed them; Repository is where
	// the receipt says the far side holds each.
	Omitted []Blob `json:"omitted"`
}

// Image is one image of a bundle.
type Image struct {
	// Reference is the full source reference, the image's name in
	// index.json: docker.io/library/nginx:1.25, or
	// REPOSITORY@sha256:… for an image asked for by digest.
	Reference string `json:"reference"`
	// Repository is Reference's repository with its registry host
	// (docker.io for Docker Hub); Tag is its tag, empty for a digest.
	Repository string `json:"repository"`
	Tag        string `json:"tag,omitempty"`
	// Digest and MediaType are the manifest's in the bundle;
	// SourceDigest is what the reference resolved to at the source, which
	// differs when platforms were selected from an index.
	Digest       digest.Digest `json:"digest"`
	MediaType    string        `json:"mediaType"`
	SourceDigest digest.Digest `json:"sourceDigest"`
	// Platforms are os/arch[/variant] of the image, or of each image of
	// an index.
	Platforms []string `json:"platforms,omitempty"`
	// Size is the bytes of the image's manifests, configs and layers,
	// each counted once, referrers not included.
	Size int64 `json:"size"`
	// Referrers are its signatures, attestations, SBOMs and other
	// artifacts, and theirs in turn.
	Referrers []Referrer `json:"referrers,omitempty"`
}

// Referrer is a signature, attestation, SBOM or other artifact that
// travels with an image.
type Referrer struct {
	Digest       digest.Digest `json:"digest"`
	MediaType    string        `json:"mediaType"`
	ArtifactType string        `json:"artifactType,omitempty"`
	// Size is the manifest's.
	Size int64 `json:"size"`
	// Kind is signature, attestation, sbom or artifact.
	Kind string `json:"kind"`
	// Tag is the cosign tag it came with (sha256-<hex>.sig, .att, .sbom);
	// empty for an OCI 1.1 referrer, which has a subject instead.
	Tag     string        `json:"tag,omitempty"`
	Subject digest.Digest `json:"subject,omitempty"`
}

// Blob is a blob with its size, in a catalog or a receipt.
type Blob struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType,omitempty"`
	// Repository is where the far side holds the blob (receipts, and a
	// catalog's omitted blobs); empty for an OCI layout.
	Repository string `json:"repository,omitempty"`
}

// refName is the index.json name of a referrer that came with a cosign
// tag: REPOSITORY:TAG.
func (r Referrer) refName(repo string) string {
	if r.Tag == "" {
		return ""
	}
	return repo + ":" + r.Tag
}

// readCatalog reads and validates ferry-bundle.json from an archive.
func readCatalog(a *store.Archive) (*Catalog, digest.Digest, error) {
	rc, size, err := a.OpenFile(CatalogFile)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, "", fmt.Errorf("%w: %s has no %s: it is an OCI archive, not a ferry bundle (use oci-archive:%s with ferry copy)", ErrNotBundle, a.Path(), CatalogFile, a.Path())
		}
		return nil, "", err
	}
	defer rc.Close()
	if size > maxCatalog {
		return nil, "", fmt.Errorf("%w: %s is %d bytes, the limit is %d", ErrNotBundle, CatalogFile, size, maxCatalog)
	}
	data, err := io.ReadAll(io.LimitReader(rc, maxCatalog+1))
	if err != nil {
		return nil, "", fmt.Errorf("reading %s of %s: %w", CatalogFile, a.Path(), err)
	}
	c, err := parseCatalog(data)
	return c, digest.FromBytes(data), err
}

func parseCatalog(data []byte) (*Catalog, error) {
	var c Catalog
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %s cannot be parsed: %v", ErrNotBundle, CatalogFile, err)
	}
	if c.MediaType != MediaTypeCatalog {
		return nil, fmt.Errorf("%w: %s has mediaType %q, this ferry reads %q: upgrade ferry", ErrNotBundle, CatalogFile, c.MediaType, MediaTypeCatalog)
	}
	for _, im := range c.Images {
		if err := store.ValidateDigest(im.Digest); err != nil {
			return nil, fmt.Errorf("%w: %s: image %q: %v", ErrNotBundle, CatalogFile, im.Reference, err)
		}
		if im.Reference == "" || im.Repository == "" {
			return nil, fmt.Errorf("%w: %s: an image without reference or repository", ErrNotBundle, CatalogFile)
		}
		for _, r := range im.Referrers {
			if err := store.ValidateDigest(r.Digest); err != nil {
				return nil, fmt.Errorf("%w: %s: referrer of %q: %v", ErrNotBundle, CatalogFile, im.Reference, err)
			}
		}
	}
	blobs := c.Blobs
	if c.Differential != nil {
		blobs = append(blobs[:len(blobs):len(blobs)], c.Differential.Omitted...)
	}
	for _, b := range blobs {
		if err := store.ValidateDigest(b.Digest); err != nil {
			return nil, fmt.Errorf("%w: %s: blob: %v", ErrNotBundle, CatalogFile, err)
		}
		if b.Size < 0 {
			return nil, fmt.Errorf("%w: %s: blob %s has size %d", ErrNotBundle, CatalogFile, b.Digest, b.Size)
		}
	}
	return &c, nil
}

// indexEntry is an index.json entry for an image or referrer.
func indexEntry(mediaType string, d digest.Digest, size int64, artifactType, name string, annotations map[string]string) ocispec.Descriptor {
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: size, ArtifactType: artifactType}
	if name != "" || len(annotations) > 0 {
		desc.Annotations = map[string]string{}
		for k, v := range annotations {
			desc.Annotations[k] = v
		}
		if name != "" {
			desc.Annotations[ocispec.AnnotationRefName] = name
		}
	}
	return desc
}
