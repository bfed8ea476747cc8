// Package image reads images from any endpoint: it resolves references,
// selects platforms from an index, and lists and selects tags.
package image

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// ConfigLimit caps the size of an image config read for inspection.
const ConfigLimit = 16 << 20

// Report is what `ferry inspect` shows: a stable document for -o json and
// --format templates.
type Report struct {
	Reference    string               `json:"reference"`
	Digest       string               `json:"digest"`
	MediaType    string               `json:"mediaType"`
	Size         int64                `json:"size"`
	ArtifactType string               `json:"artifactType,omitempty"`
	Index        *ocispec.Descriptor  `json:"index,omitempty"`     // the index a platform was selected from
	Manifests    []ocispec.Descriptor `json:"manifests,omitempty"` // of an index
	Platform     *ocispec.Platform    `json:"platform,omitempty"`
	Created      *time.Time           `json:"created,omitempty"`
	Config       *ocispec.Descriptor  `json:"config,omitempty"`
	Layers       []ocispec.Descriptor `json:"layers,omitempty"`
	Labels       map[string]string    `json:"labels,omitempty"`
	Annotations  map[string]string    `json:"annotations,omitempty"`
	Subject      *ocispec.Descriptor  `json:"subject,omitempty"`

	// Raw is the manifest as served and RawConfig the config blob; neither
	// is part of the JSON document.
	Raw       []byte `json:"-"`
	RawConfig []byte `json:"-"`
}

// InspectOptions select what Inspect reads.
type InspectOptions struct {
	// Platform picks one image from an index; nil inspects the index.
	Platform *ocispec.Platform
	// Config fetches the image config (created time, labels, platform).
	Config bool
}

// Inspect reads the manifest that identifier names at r and, for an image,
// its config.
func Inspect(ctx context.Context, r transfer.Reader, ref transfer.Reference, opts InspectOptions) (*Report, error) {
	m, err := r.Manifest(ctx, ref.Identifier())
	if err != nil {
		return nil, err
	}
	rep := &Report{Reference: ref.String()}
	if m.IsIndex() && opts.Platform != nil {
		d, err := transfer.SelectPlatform(m, *opts.Platform)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		idx := m.Descriptor
		rep.Index = &idx
		if m, err = r.Manifest(ctx, string(d.Digest)); err != nil {
			return nil, err
		}
		if m.Descriptor.Digest != d.Digest {
			return nil, fmt.Errorf("%w: %s: index entry %s resolved to %s", transfer.ErrDigestMismatch, ref, d.Digest, m.Descriptor.Digest)
		}
	}
	rep.Digest = string(m.Descriptor.Digest)
	rep.MediaType = m.Descriptor.MediaType
	rep.Size = m.Descriptor.Size
	rep.ArtifactType = m.Descriptor.ArtifactType
	rep.Annotations = m.Annotations
	rep.Subject = m.Subject
	rep.Raw = m.Raw
	if m.IsIndex() {
		rep.Manifests = m.Manifests
		return rep, nil
	}
	rep.Config = m.Config
	rep.Layers = m.Layers
	if !opts.Config || !isImageConfig(m.Config.MediaType) {
		return rep, nil
	}
	raw, err := r.FetchBlob(ctx, m.Config.Digest, m.Config.Size, ConfigLimit)
	if err != nil {
		return nil, fmt.Errorf("reading the config of %s: %w", ref, err)
	}
	rep.RawConfig = raw
	var cfg ocispec.Image
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("%w: the config of %s is not valid JSON: %v", transfer.ErrInvalidManifest, ref, err)
	}
	rep.Created = cfg.Created
	if cfg.OS != "" || cfg.Architecture != "" {
		p := cfg.Platform
		rep.Platform = &p
	}
	rep.Labels = cfg.Config.Labels
	return rep, nil
}

func isImageConfig(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageConfig || mediaType == "application/vnd.docker.container.image.v1+json"
}
