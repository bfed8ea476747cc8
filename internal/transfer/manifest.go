package transfer

import (
	"encoding/json"
	"fmt"
	"mime"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifest media types ferry reads and writes.
const (
	MediaTypeOCIManifest    = ocispec.MediaTypeImageManifest
	MediaTypeOCIIndex       = ocispec.MediaTypeImageIndex
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerSchema1  = "application/vnd.docker.distribution.manifest.v1+json"
	mediaTypeDockerSigned   = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// DefaultManifestLimit is the largest manifest read unless raised
// (ROBUSTNESS row 6).
const DefaultManifestLimit = 4 << 20

// ManifestAccept is the Accept header for manifest requests.
const ManifestAccept = MediaTypeOCIIndex + ", " + MediaTypeOCIManifest + ", " + MediaTypeDockerList + ", " + MediaTypeDockerManifest

// IsIndex reports whether mediaType is an index or a manifest list.
func IsIndex(mediaType string) bool {
	return mediaType == MediaTypeOCIIndex || mediaType == MediaTypeDockerList
}

// IsManifest reports whether mediaType is one of the manifest types ferry handles.
func IsManifest(mediaType string) bool {
	switch mediaType {
	case MediaTypeOCIIndex, MediaTypeOCIManifest, MediaTypeDockerList, MediaTypeDockerManifest:
		return true
	}
	return false
}

// Manifest is a manifest or index exactly as it was served, with the fields
// ferry needs decoded from it.
type Manifest struct {
	// Descriptor of the bytes: media type, digest and size, plus the
	// artifactType and annotations of the manifest itself.
	Descriptor ocispec.Descriptor
	// Raw is the body, byte for byte.
	Raw []byte

	Config      *ocispec.Descriptor  // images only
	Layers      []ocispec.Descriptor // images only
	Manifests   []ocispec.Descriptor // indexes only
	Subject     *ocispec.Descriptor
	Annotations map[string]string
}

// IsIndex reports whether m is an index or manifest list.
func (m *Manifest) IsIndex() bool { return IsIndex(m.Descriptor.MediaType) }

// Children returns what m references directly: config and layers for an
// image, manifests for an index.
func (m *Manifest) Children() []ocispec.Descriptor {
	if m.IsIndex() {
		return m.Manifests
	}
	out := make([]ocispec.Descriptor, 0, len(m.Layers)+1)
	if m.Config != nil {
		out = append(out, *m.Config)
	}
	return append(out, m.Layers...)
}

// rawManifest has the union of the fields of every manifest type.
type rawManifest struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
	FSLayers      json.RawMessage      `json:"fsLayers"`
}

// ParseManifest decodes and validates body. contentType is the
// Content-Type it was served with ("" when unknown, such as from a file).
// The digest is computed with alg (sha256 when empty).
//
// It rejects schema 1, a body that is both an index and an image, and a
// mediaType field that disagrees with the Content-Type (ROBUSTNESS row 7,
// CVE-2021-41190). Every descriptor's digest is validated (row 8).
func ParseManifest(body []byte, contentType string, alg digest.Algorithm) (*Manifest, error) {
	if alg == "" {
		alg = digest.SHA256
	}
	var raw rawManifest
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("%w: not valid JSON: %v", ErrInvalidManifest, err)
	}
	if ct, _, err := mime.ParseMediaType(contentType); err == nil {
		contentType = ct
	}
	if raw.SchemaVersion == 1 || raw.FSLayers != nil || contentType == mediaTypeDockerSchema1 || contentType == mediaTypeDockerSigned {
		return nil, fmt.Errorf("%w: Docker schema 1 manifests are not supported; push the image again with a current client", ErrInvalidManifest)
	}
	if raw.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: schemaVersion %d, expected 2", ErrInvalidManifest, raw.SchemaVersion)
	}
	isIndex := raw.Manifests != nil
	isImage := raw.Config != nil || raw.Layers != nil
	if isIndex && isImage {
		return nil, fmt.Errorf("%w: ambiguous: it has both \"manifests\" and \"config\"/\"layers\"", ErrInvalidManifest)
	}
	if !isIndex && !isImage {
		return nil, fmt.Errorf("%w: it has neither \"manifests\" nor \"config\"", ErrInvalidManifest)
	}

	mt := raw.MediaType
	if IsManifest(contentType) {
		if mt != "" && mt != contentType {
			return nil, fmt.Errorf("%w: ambiguous: served as %s but its mediaType is %s", ErrInvalidManifest, contentType, mt)
		}
		mt = contentType
	}
	switch {
	case mt == "" && isIndex:
		mt = MediaTypeOCIIndex
	case mt == "" && isImage:
		mt = MediaTypeOCIManifest
	case !IsManifest(mt):
		return nil, fmt.Errorf("%w: unsupported media type %q", ErrInvalidManifest, mt)
	}
	if IsIndex(mt) != isIndex {
		return nil, fmt.Errorf("%w: ambiguous: media type %s does not match its content", ErrInvalidManifest, mt)
	}
	if isImage && raw.Config == nil {
		return nil, fmt.Errorf("%w: image manifest without a config", ErrInvalidManifest)
	}

	check := func(field string, d *ocispec.Descriptor) error {
		if _, err := ParseDigest(string(d.Digest)); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidManifest, field, err)
		}
		if d.Size < 0 {
			return fmt.Errorf("%w: %s: negative size %d", ErrInvalidManifest, field, d.Size)
		}
		return nil
	}
	if raw.Config != nil {
		if err := check("config", raw.Config); err != nil {
			return nil, err
		}
	}
	if raw.Subject != nil {
		if err := check("subject", raw.Subject); err != nil {
			return nil, err
		}
	}
	for i := range raw.Layers {
		if err := check(fmt.Sprintf("layers[%d]", i), &raw.Layers[i]); err != nil {
			return nil, err
		}
	}
	for i := range raw.Manifests {
		if err := check(fmt.Sprintf("manifests[%d]", i), &raw.Manifests[i]); err != nil {
			return nil, err
		}
	}

	m := &Manifest{
		Descriptor: ocispec.Descriptor{
			MediaType:    mt,
			Digest:       alg.FromBytes(body),
			Size:         int64(len(body)),
			ArtifactType: raw.ArtifactType,
		},
		Raw:         body,
		Config:      raw.Config,
		Layers:      raw.Layers,
		Manifests:   raw.Manifests,
		Subject:     raw.Subject,
		Annotations: raw.Annotations,
	}
	if m.Descriptor.ArtifactType == "" && raw.Config != nil && raw.Config.MediaType != ocispec.MediaTypeImageConfig &&
		raw.Config.MediaType != "application/vnd.docker.container.image.v1+json" && raw.Config.MediaType != ocispec.MediaTypeEmptyJSON {
		m.Descriptor.ArtifactType = raw.Config.MediaType
	}
	return m, nil
}
