package signing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// SignatureTag is cosign's tag for the signatures of the manifest d:
// "sha256-<hex>.sig".
func SignatureTag(d digest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded() + ".sig"
}

// maxConfig caps the config blob of a signature image read when a
// signature is appended to it.
const maxConfig = 4 << 20

// maxAppend caps the layers of a signature image that signing appends to,
// as cosign does.
const maxAppend = 1000

// sigImage is a signature image being built: cosign's
// "sha256-<hex>.sig", an image whose layers are the signed payloads.
type sigImage struct {
	manifest  map[string]json.RawMessage // the manifest's fields, unknown ones kept
	mediaType string
	config    []byte
	configMT  string
	layers    []ocispec.Descriptor
}

// newSigImage starts an empty signature image with OCI media types, as
// cosign v2 writes by default.
func newSigImage() (*sigImage, error) {
	cfg, err := json.Marshal(&v1.ConfigFile{RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		return nil, err
	}
	return &sigImage{
		manifest:  map[string]json.RawMessage{"schemaVersion": json.RawMessage("2")},
		mediaType: ocispec.MediaTypeImageManifest,
		config:    cfg,
		configMT:  ocispec.MediaTypeImageConfig,
	}, nil
}

// loadSigImage reads an existing signature image to append to.
func loadSigImage(ctx context.Context, r transfer.Reader, m *transfer.Manifest) (*sigImage, error) {
	if m.IsIndex() || m.Config == nil {
		return nil, fmt.Errorf("it is an index, not a signature image")
	}
	if len(m.Layers) >= maxAppend {
		return nil, fmt.Errorf("it already holds %d signatures, the most ferry adds to", len(m.Layers))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(m.Raw, &fields); err != nil {
		return nil, err
	}
	cfg, err := r.FetchBlob(ctx, m.Config.Digest, m.Config.Size, maxConfig)
	if err != nil {
		return nil, fmt.Errorf("reading its config: %w", err)
	}
	return &sigImage{
		manifest:  fields,
		mediaType: m.Descriptor.MediaType,
		config:    cfg,
		configMT:  m.Config.MediaType,
		layers:    slices.Clone(m.Layers),
	}, nil
}

// isImageConfig reports whether mt is a config that records diff IDs and
// history (which then get an entry per layer, as go-containerregistry's
// mutate.Append adds them for cosign).
func isImageConfig(mt string) bool {
	return mt == ocispec.MediaTypeImageConfig || mt == "application/vnd.docker.container.image.v1+json"
}

// add appends a signature layer for payload.
func (s *sigImage) add(payload []byte, annotations map[string]string) error {
	d := digest.FromBytes(payload)
	if isImageConfig(s.configMT) {
		var cfg v1.ConfigFile
		if err := json.Unmarshal(s.config, &cfg); err != nil {
			return fmt.Errorf("its config is not valid JSON: %w", err)
		}
		h, err := v1.NewHash(string(d))
		if err != nil {
			return err
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, h)
		cfg.History = append(cfg.History, v1.History{})
		if s.config, err = json.Marshal(&cfg); err != nil {
			return err
		}
	}
	s.layers = append(s.layers, ocispec.Descriptor{
		MediaType:   MediaTypeSimpleSigning,
		Digest:      d,
		Size:        int64(len(payload)),
		Annotations: annotations,
	})
	return nil
}

// configDesc describes the config blob.
func (s *sigImage) configDesc() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: s.configMT, Digest: digest.FromBytes(s.config), Size: int64(len(s.config))}
}

// build returns the manifest.
func (s *sigImage) build() (*transfer.Manifest, error) {
	fields := maps.Clone(s.manifest)
	var err error
	set := func(k string, v any) {
		if err == nil {
			fields[k], err = json.Marshal(v)
		}
	}
	set("mediaType", s.mediaType)
	set("config", s.configDesc())
	set("layers", s.layers)
	if err != nil {
		return nil, err
	}
	// The fields in the order cosign writes them; unknown ones after.
	var b bytes.Buffer
	b.WriteByte('{')
	order := []string{"schemaVersion", "mediaType", "artifactType", "config", "layers", "subject", "annotations"}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if !slices.Contains(order, k) {
			order = append(order, k)
		}
	}
	first := true
	for _, k := range order {
		v, ok := fields[k]
		if !ok {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return transfer.ParseManifest(b.Bytes(), s.mediaType, digest.SHA256)
}

// write stores the payload, the config and the manifest under tag. The
// blobs go first, so the tag never points at missing content.
func (s *sigImage) write(ctx context.Context, dst transfer.Target, payload []byte, tag string) (*transfer.Manifest, error) {
	m, err := s.build()
	if err != nil {
		return nil, err
	}
	for _, blob := range []struct {
		desc ocispec.Descriptor
		data []byte
	}{
		{ocispec.Descriptor{MediaType: MediaTypeSimpleSigning, Digest: digest.FromBytes(payload), Size: int64(len(payload))}, payload},
		{s.configDesc(), s.config},
	} {
		ok, err := dst.BlobExists(ctx, blob.desc)
		if err != nil {
			return nil, err
		}
		if ok {
			continue
		}
		if err := dst.WriteBlob(ctx, blob.desc, bytes.NewReader(blob.data)); err != nil {
			return nil, err
		}
	}
	if err := dst.PutManifest(ctx, m, tag); err != nil {
		return nil, err
	}
	return m, nil
}

// readSigManifest reads the signature image of d; nil, nil when there is none.
func readSigManifest(ctx context.Context, r transfer.Reader, d digest.Digest) (*transfer.Manifest, error) {
	m, err := r.Manifest(ctx, SignatureTag(d))
	if errors.Is(err, transfer.ErrNotFound) {
		return nil, nil
	}
	return m, err
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
