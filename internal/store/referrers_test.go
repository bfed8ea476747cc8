package store

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestReferrers(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	img := putImage(t, s, "v1", "a")
	other := putImage(t, s, "v2", "b")

	got, err := s.Referrers(ctx, img.manifest.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("Referrers before any = %v", got)
	}

	sig := putReferrer(t, s, img.manifest, "application/vnd.example.sig", map[string]string{"org.example.signer": "alice"})
	putReferrer(t, s, other.manifest, "application/vnd.example.sig", nil)
	// An image (no artifactType) referring to img: artifactType is its
	// config's media type.
	cfg := putBlob(t, s, "application/vnd.example.config+json", []byte(`{"k":"v"}`))
	subj := img.manifest
	raw := mustJSON(t, ocispec.Manifest{Versioned: specsVersioned(), MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{}, Subject: &subj})
	sbom, err := s.PutManifest(ctx, raw, "", "")
	if err != nil {
		t.Fatal(err)
	}

	got, err = s.Referrers(ctx, img.manifest.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("Referrers = %d descriptors, want 2: %+v", len(got), got)
	}
	byDigest := map[digest.Digest]ocispec.Descriptor{}
	for _, d := range got {
		byDigest[d.Digest] = d
	}
	g := byDigest[sig.Digest]
	if g.ArtifactType != "application/vnd.example.sig" || g.Size != sig.Size || g.MediaType != ocispec.MediaTypeImageManifest || g.Annotations["org.example.signer"] != "alice" {
		t.Errorf("signature referrer = %+v", g)
	}
	if g := byDigest[sbom.Digest]; g.ArtifactType != "application/vnd.example.config+json" || g.Size != int64(len(raw)) {
		t.Errorf("image referrer = %+v, want artifactType from its config", g)
	}
	// The caller owns the result.
	got[0].Annotations = nil
	again, _ := s.Referrers(ctx, img.manifest.Digest)
	if len(again) != 2 || (again[0].Digest == sig.Digest && again[0].Annotations == nil) {
		t.Error("Referrers returned shared state")
	}

	// Removing the root removes the referrer.
	if err := s.RemoveRoot(ctx, sig.Digest, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Referrers(ctx, img.manifest.Digest); len(got) != 1 || got[0].Digest != sbom.Digest {
		t.Errorf("after RemoveRoot Referrers = %+v", got)
	}
}

func TestReferrersSkipsLargeManifests(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	img := putImage(t, s, "v1", "a")
	subj := img.manifest
	big := ocispec.Manifest{
		Versioned: specsVersioned(), MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "x/big",
		Config: img.config, Layers: []ocispec.Descriptor{}, Subject: &subj,
		Annotations: map[string]string{"pad": string(bytes.Repeat([]byte("p"), 5<<20))},
	}
	if _, err := s.PutManifest(ctx, mustJSON(t, big), "", ""); err != nil {
		t.Fatal(err)
	}
	small := putReferrer(t, s, img.manifest, "x/small", nil)
	got, err := s.Referrers(ctx, img.manifest.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Digest != small.Digest {
		t.Errorf("Referrers = %+v, want only the small one", got)
	}
}

func TestReferrersSeeOtherProcess(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	img := putImage(t, s, "v1", "a")
	if got, err := s.Referrers(ctx, img.manifest.Digest); err != nil || len(got) != 0 {
		t.Fatalf("Referrers = %v, %v", got, err)
	}
	// Fill the cache, then let another process add a referrer.
	cmd := runHelper(t, s.Dir(), "referrer", img.manifest, 0)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	got, err := s.Referrers(ctx, img.manifest.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ArtifactType != "application/vnd.example.sbom" || got[0].Annotations["from"] != "helper" {
		t.Fatalf("after the other process wrote a referrer, Referrers = %+v", got)
	}
	if _, err := s.Stat(ctx, got[0].Digest); err != nil {
		t.Errorf("the referrer's blob: %v", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
