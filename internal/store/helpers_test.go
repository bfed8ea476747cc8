package store

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func specsVersioned() specs.Versioned { return specs.Versioned{SchemaVersion: 2} }

func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "layout"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// putBlob stores data as a sha256 blob and returns its descriptor.
func putBlob(t testing.TB, s *Store, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(data)
	if err := s.WriteBlob(context.Background(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// layerTar returns a gzipped tar with one file, a valid image layer.
func layerTar(t testing.TB, name, content string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	io.WriteString(tw, content)
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// testImage is an image written into a store.
type testImage struct {
	manifest ocispec.Descriptor
	raw      []byte
	config   ocispec.Descriptor
	layers   []ocispec.Descriptor
}

// putImage writes a small valid image (config, layers, manifest) and tags
// it as name (untagged when name is empty).
func putImage(t testing.TB, s *Store, name string, layerContents ...string) testImage {
	t.Helper()
	var img testImage
	var diffIDs []digest.Digest
	for i, c := range layerContents {
		data := layerTar(t, "file"+string(rune('a'+i)), c)
		img.layers = append(img.layers, putBlob(t, s, ocispec.MediaTypeImageLayerGzip, data))
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		diff, err := digest.FromReader(zr)
		if err != nil {
			t.Fatal(err)
		}
		diffIDs = append(diffIDs, diff)
	}
	cfg := ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	cfgRaw, _ := json.Marshal(cfg)
	img.config = putBlob(t, s, ocispec.MediaTypeImageConfig, cfgRaw)
	if img.layers == nil {
		img.layers = []ocispec.Descriptor{}
	}
	m := ocispec.Manifest{
		Versioned: specsVersioned(),
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    img.config,
		Layers:    img.layers,
	}
	img.raw, _ = json.Marshal(m)
	desc, err := s.PutManifest(context.Background(), img.raw, ocispec.MediaTypeImageManifest, name)
	if err != nil {
		t.Fatal(err)
	}
	img.manifest = desc
	return img
}

// putReferrer writes an artifact manifest whose subject is subject.
func putReferrer(t *testing.T, s *Store, subject ocispec.Descriptor, artifactType string, annotations map[string]string) ocispec.Descriptor {
	t.Helper()
	return putReferrerCtx(t, context.Background(), s, subject, artifactType, annotations)
}

func putReferrerCtx(t testing.TB, ctx context.Context, s *Store, subject ocispec.Descriptor, artifactType string, annotations map[string]string) ocispec.Descriptor {
	raw := referrerManifest(t, s, subject, artifactType, annotations)
	desc, err := s.PutManifest(ctx, raw, ocispec.MediaTypeImageManifest, "")
	if err != nil {
		t.Fatal(err)
	}
	return desc
}

// referrerManifest writes the blobs of an artifact and returns its manifest.
func referrerManifest(t testing.TB, s *Store, subject ocispec.Descriptor, artifactType string, annotations map[string]string) []byte {
	ctx := context.Background()
	empty := []byte("{}")
	ed := digest.FromBytes(empty)
	if err := s.WriteBlob(ctx, ed, 2, bytes.NewReader(empty)); err != nil {
		t.Fatal(err)
	}
	payload := []byte("signature of " + subject.Digest.String() + " " + artifactType)
	pd := digest.FromBytes(payload)
	if err := s.WriteBlob(ctx, pd, int64(len(payload)), bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	subj := ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	m := ocispec.Manifest{
		Versioned:    specsVersioned(),
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: ed, Size: 2},
		Layers:       []ocispec.Descriptor{{MediaType: "application/octet-stream", Digest: pd, Size: int64(len(payload))}},
		Subject:      &subj,
		Annotations:  annotations,
	}
	raw, _ := json.Marshal(m)
	return raw
}

// putIndex writes an image index of the given manifests.
func putIndex(t *testing.T, s *Store, name string, children ...ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	idx := ocispec.Index{Versioned: specsVersioned(), MediaType: ocispec.MediaTypeImageIndex, Manifests: children}
	raw, _ := json.Marshal(idx)
	desc, err := s.PutManifest(context.Background(), raw, "", name)
	if err != nil {
		t.Fatal(err)
	}
	return desc
}

// readAll returns the content of blob d.
func readAll(t *testing.T, r Reader, d digest.Digest) []byte {
	t.Helper()
	rc, size, err := r.ReadBlob(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != size {
		t.Fatalf("ReadBlob(%s): size %d, read %d bytes", d, size, len(data))
	}
	return data
}

// tempFiles lists the temp directory of a layout.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, tmpDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func assertNoTemp(t *testing.T, s *Store) {
	t.Helper()
	if tmp := tempFiles(t, s.Dir()); len(tmp) > 0 {
		t.Errorf("temp files left behind: %v", tmp)
	}
}

func assertAbsent(t *testing.T, s *Store, d digest.Digest) {
	t.Helper()
	p := filepath.Join(s.Dir(), "blobs", string(d.Algorithm()), d.Encoded())
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists (err=%v), want nothing at the digest path", p, err)
	}
	if _, err := s.Stat(context.Background(), d); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(%s) = %v, want ErrNotFound", d, err)
	}
}

// age sets the mtime of blob d to the given age.
func age(t *testing.T, s *Store, d digest.Digest, by time.Duration) {
	t.Helper()
	old := time.Now().Add(-by)
	if err := os.Chtimes(s.blobPath(d), old, old); err != nil {
		t.Fatal(err)
	}
}

// ageAll ages every blob of the store.
func ageAll(t *testing.T, s *Store, by time.Duration) {
	t.Helper()
	blobs, _, err := s.listBlobs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blobs {
		age(t, s, b.digest, by)
	}
}

func hasDigest(ds []digest.Digest, d digest.Digest) bool {
	for _, x := range ds {
		if x == d {
			return true
		}
	}
	return false
}
