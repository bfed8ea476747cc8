package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// imageCase is one synthetic image to copy.
type imageCase struct {
	Name string
	// Layers are the payload sizes of each image's own layers.
	Layers []int64
	// Platforms, when more than 0, makes an index of that many images,
	// each with its own Layers, plus one layer of Shared bytes that all
	// of them have (a blob to copy once, not once per platform).
	Platforms int
	Shared    int64
}

// cases returns the images, full size or for a quick check.
func cases(quick bool) []imageCase {
	if quick {
		return []imageCase{
			{Name: "big", Layers: repeat(4, 4*mib)},
			{Name: "small", Layers: repeat(12, 64*kib)},
			{Name: "index", Layers: repeat(1, 256*kib), Platforms: 4, Shared: 256 * kib},
		}
	}
	return []imageCase{
		{Name: "big", Layers: repeat(8, 64*mib)},
		{Name: "small", Layers: repeat(40, 256*kib)},
		{Name: "index", Layers: repeat(3, 4*mib), Platforms: 4, Shared: 4 * mib},
	}
}

// extraCases are images only some suites use: huge for the bundle
// suite's 2 GiB bundle (full runs only), cache and burst for the cache
// suite (generated into its upstream, not the source registry).
func extraCases(quick bool) []imageCase {
	if quick {
		return []imageCase{
			{Name: "cache", Layers: repeat(4, 4*mib)},
			{Name: "burst", Layers: repeat(4, 1*mib)},
		}
	}
	return []imageCase{
		{Name: "huge", Layers: repeat(32, 64*mib)},
		{Name: "cache", Layers: repeat(4, 64*mib)},
		{Name: "burst", Layers: repeat(4, 16*mib)},
	}
}

// findCase is the case called name, at the size -quick asks for.
func findCase(name string, quick bool) (imageCase, bool) {
	for _, c := range append(cases(quick), extraCases(quick)...) {
		if c.Name == name {
			return c, true
		}
	}
	return imageCase{}, false
}

func repeat(n int, size int64) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = size
	}
	return s
}

// Describe says what the case is, for people.
func (c imageCase) Describe() string {
	per := fmt.Sprintf("%d × %s layers", len(c.Layers), formatBytes(c.Layers[0]))
	if len(c.Layers) == 1 {
		per = fmt.Sprintf("one %s layer", formatBytes(c.Layers[0]))
	}
	if c.Platforms == 0 {
		return per
	}
	return fmt.Sprintf("%d platforms, each %s, + one %s layer all share",
		c.Platforms, per, formatBytes(c.Shared))
}

// benchPlatforms are the platforms of the index case, in order.
var benchPlatforms = []v1.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64", Variant: "v8"},
	{OS: "linux", Architecture: "arm", Variant: "v7"},
	{OS: "linux", Architecture: "s390x"},
	{OS: "linux", Architecture: "ppc64le"},
	{OS: "linux", Architecture: "riscv64"},
}

// source is a case as pushed to the source registry.
type source struct {
	imageCase
	Repo   string  // repository in the source registry
	Digest v1.Hash // of the manifest or index, tagged "v1"
	Bytes  int64   // of all its blobs: layers and configs
}

// generate writes the case's layers under dir, pushes the image to host,
// and removes the layer files again. Layers are gzip streams of a tar of
// pseudo-random bytes: stored, not compressed (random bytes do not compress,
// and nobody should pay for trying), but a valid gzip stream so that no tool
// decides to compress them. The bytes come from a ChaCha8 stream seeded by
// the case and layer, so the digests are the same on every run.
func generate(ctx context.Context, c imageCase, dir, host string) (source, error) {
	src := source{imageCase: c, Repo: "bench/" + c.Name}
	ref, err := name.ParseReference(host+"/"+src.Repo+":v1", name.Insecure)
	if err != nil {
		return src, err
	}
	work, err := os.MkdirTemp(dir, "gen-"+c.Name+"-")
	if err != nil {
		return src, err
	}
	defer os.RemoveAll(work)

	var shared *fileLayer
	if c.Platforms > 0 {
		if shared, err = makeLayer(work, c.Name+"-shared", c.Shared); err != nil {
			return src, err
		}
	}
	image := func(platform int, p v1.Platform) (v1.Image, error) {
		var layers []v1.Layer
		if shared != nil {
			layers = append(layers, shared)
		}
		for i, size := range c.Layers {
			l, err := makeLayer(work, fmt.Sprintf("%s-%d-%d", c.Name, platform, i), size)
			if err != nil {
				return nil, err
			}
			layers = append(layers, l)
		}
		img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		img, err := mutate.AppendLayers(img, layers...)
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
		cf.Config.Labels = map[string]string{"org.opencontainers.image.title": "ferry benchmark: " + c.Name}
		return mutate.ConfigFile(img, cf)
	}

	opts := []remote.Option{remote.WithContext(ctx), remote.WithJobs(4)}
	if c.Platforms == 0 {
		img, err := image(0, benchPlatforms[0])
		if err != nil {
			return src, fmt.Errorf("generating %s: %w", c.Name, err)
		}
		if err := remote.Write(ref, img, opts...); err != nil {
			return src, fmt.Errorf("pushing %s: %w", ref, err)
		}
		src.Digest, err = img.Digest()
		if err != nil {
			return src, err
		}
	} else {
		if c.Platforms > len(benchPlatforms) {
			return src, fmt.Errorf("%s: at most %d platforms", c.Name, len(benchPlatforms))
		}
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		for i := 0; i < c.Platforms; i++ {
			p := benchPlatforms[i]
			img, err := image(i, p)
			if err != nil {
				return src, fmt.Errorf("generating %s: %w", c.Name, err)
			}
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
				Add:        plainImage{img},
				Descriptor: v1.Descriptor{Platform: &p},
			})
		}
		if err := remote.WriteIndex(ref, idx, opts...); err != nil {
			return src, fmt.Errorf("pushing %s: %w", ref, err)
		}
		src.Digest, err = idx.Digest()
		if err != nil {
			return src, err
		}
	}
	return src, nil
}

// plainImage is listed in an index without an artifactType. mutate gives
// every entry its config's media type as artifactType, which image indexes
// do not carry, and which older tools (skopeo 1.9) drop when they rewrite
// the index, changing its digest.
type plainImage struct{ v1.Image }

func (plainImage) ArtifactType() (string, error) { return "", nil }

// fileLayer is a v1.Layer whose compressed bytes are a file.
type fileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

var _ v1.Layer = (*fileLayer)(nil)

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return types.OCILayer, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return gunzipFile(l.path) }

type gunzip struct {
	*gzip.Reader
	f *os.File
}

func (g gunzip) Close() error {
	g.Reader.Close()
	return g.f.Close()
}

func gunzipFile(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return gunzip{zr, f}, nil
}

// makeLayer writes DIR/NAME.tar.gz: one file of payload pseudo-random bytes.
func makeLayer(dir, name string, payload int64) (*fileLayer, error) {
	path := filepath.Join(dir, name+".tar.gz")
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	gzSum, tarSum := sha256.New(), sha256.New()
	gzOut := &countWriter{w: io.MultiWriter(f, gzSum)}
	zw, err := gzip.NewWriterLevel(gzOut, gzip.NoCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(io.MultiWriter(zw, tarSum))
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     "bench/" + name,
		Mode:     0o644,
		Size:     payload,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	seed := sha256.Sum256([]byte("ferry-bench/" + name))
	if _, err := io.CopyN(tw, rand.NewChaCha8(seed), payload); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return &fileLayer{
		path:   path,
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(gzSum.Sum(nil))},
		diffID: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(tarSum.Sum(nil))},
		size:   gzOut.n,
	}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
