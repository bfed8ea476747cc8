package store

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// A layout written by go-containerregistry (what crane writes) opens,
// resolves, checks clean, and can be written to and collected.
func TestReadsLayoutWrittenByGGCR(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ggcr")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: "v1"})); err != nil {
		t.Fatal(err)
	}
	multi, err := random.Index(512, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(multi, layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: "multi"})); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	s, err := OpenExisting(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantDigest, _ := img.Digest()
	desc, err := s.Resolve(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != wantDigest.String() {
		t.Errorf("Resolve(v1) = %s, want %s", desc.Digest, wantDigest)
	}
	raw, _ := img.RawManifest()
	if got := readAll(t, s, desc.Digest); !bytes.Equal(got, raw) {
		t.Error("manifest bytes differ")
	}
	if problems, err := s.Check(ctx); err != nil || len(problems) != 0 {
		t.Errorf("Check = %v, %v", problems, err)
	}
	// Open (read-write) accepts it too, and GC keeps everything.
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ageAll(t, s, 24*time.Hour)
	rep, err := s.GC(ctx, GCOptions{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 0 {
		t.Errorf("GC removed %v from a layout where everything is reachable", rep.Removed)
	}
	// ggcr still reads it after we tagged something.
	if err := s.Tag(ctx, "v1-again", desc); err != nil {
		t.Fatal(err)
	}
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := ii.IndexManifest(); err != nil || len(m.Manifests) != 3 {
		t.Fatalf("ggcr sees %v entries, %v", m, err)
	}
}

// go-containerregistry reads an image written through Store, and its
// layers match their digests and the config's diff IDs.
func TestGGCRReadsOurLayout(t *testing.T) {
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, "application/vnd.oci.image.manifest.v1+json")
	img = mutate.ConfigMediaType(img, "application/vnd.oci.image.config.v1+json")
	s := newStore(t)
	ctx := context.Background()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, _ := l.Digest()
		size, _ := l.Size()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WriteBlob(ctx, digest.Digest(d.String()), size, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	cfg, _ := img.RawConfigFile()
	cfgName, _ := img.ConfigName()
	if err := s.WriteBlob(ctx, digest.Digest(cfgName.String()), int64(len(cfg)), bytes.NewReader(cfg)); err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	desc, err := s.PutManifest(ctx, raw, "", "latest")
	if err != nil {
		t.Fatal(err)
	}

	ii, err := layout.ImageIndexFromPath(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	h, _ := img.Digest()
	got, err := ii.Image(h)
	if err != nil {
		t.Fatal(err)
	}
	// Read every layer through ggcr and check it against the digest and
	// the diff ID the config declares.
	gotLayers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(gotLayers) != 3 || len(cf.RootFS.DiffIDs) != 3 {
		t.Fatalf("ggcr sees %d layers, %d diff IDs", len(gotLayers), len(cf.RootFS.DiffIDs))
	}
	for i, l := range gotLayers {
		want, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		d, err := digest.FromReader(rc)
		rc.Close()
		if err != nil || d.String() != want.String() {
			t.Errorf("layer %d read by ggcr hashes to %s (%v), want %s", i, d, err, want)
		}
		urc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		diff, err := digest.FromReader(urc)
		urc.Close()
		if err != nil || diff.String() != cf.RootFS.DiffIDs[i].String() {
			t.Errorf("layer %d uncompressed hashes to %s (%v), config says %s", i, diff, err, cf.RootFS.DiffIDs[i])
		}
	}
	m, _ := ii.IndexManifest()
	if len(m.Manifests) != 1 || m.Manifests[0].Annotations[ocispec.AnnotationRefName] != "latest" || m.Manifests[0].Digest.String() != desc.Digest.String() {
		t.Errorf("ggcr sees index %+v", m.Manifests)
	}
}
