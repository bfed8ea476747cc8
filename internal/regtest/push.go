package regtest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// indexLayerSize is the size of the one layer of each image PushRandomIndex
// pushes.
const indexLayerSize = 1024

// PushRandom pushes a random image to ref ("host:port/repo:tag") and returns
// its manifest digest ("sha256:…"). The image is what
// go-containerregistry's random.Image makes: a Docker schema 2 manifest with
// layers gzipped layers, each a tar of one file of size random bytes, and a
// config that names no platform. An empty user pushes anonymously; otherwise
// user and pass are sent with HTTP basic auth. The registry must be on the
// loopback interface and speak plain HTTP. Any failure fails the test.
func PushRandom(t testing.TB, ref string, layers int, size int64, user, pass string) string {
	t.Helper()
	r := parseRef(t, ref)
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatalf("regtest: making a random image: %v", err)
	}
	return write(t, r, img, user, pass)
}

// PushRandomIndex pushes an OCI image index to ref with one random OCI image
// per platform ("linux/amd64", "linux/arm64/v8", "windows/amd64:10.0.17763")
// and returns the index digest. Each image has one small layer and a config
// whose os, architecture, variant and os.version match its platform, and
// each index descriptor carries that platform. Credentials are as for
// PushRandom. Any failure fails the test.
func PushRandomIndex(t testing.TB, ref string, platforms []string, user, pass string) string {
	t.Helper()
	r := parseRef(t, ref)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, s := range platforms {
		p, err := v1.ParsePlatform(s)
		if err != nil {
			t.Fatalf("regtest: platform %q: %v", s, err)
		}
		img := randomPlatformImage(t, *p)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: p},
		})
	}
	if err := remote.WriteIndex(r, idx, remoteOptions(t, user, pass)...); err != nil {
		t.Fatalf("regtest: pushing index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("regtest: digest of index %s: %v", ref, err)
	}
	return d.String()
}

// randomPlatformImage returns a one-layer OCI image for platform p.
func randomPlatformImage(t testing.TB, p v1.Platform) v1.Image {
	t.Helper()
	layer, err := random.Layer(indexLayerSize, types.OCILayer)
	if err != nil {
		t.Fatalf("regtest: making a random layer: %v", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		t.Fatalf("regtest: appending a layer: %v", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("regtest: reading a config: %v", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS = p.OS
	cfg.Architecture = p.Architecture
	cfg.Variant = p.Variant
	cfg.OSVersion = p.OSVersion
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatalf("regtest: setting the config for %s: %v", p.String(), err)
	}
	return img
}

// parseRef parses ref and fails the test unless its registry is on this
// machine, so a mistyped reference never sends anything to a real registry.
func parseRef(t testing.TB, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		t.Fatalf("regtest: reference %q: %v", ref, err)
	}
	host := r.Context().RegistryStr()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		t.Fatalf("regtest: reference %q: registry %q is not on the loopback interface", ref, r.Context().RegistryStr())
	}
	return r
}

func remoteOptions(t testing.TB, user, pass string) []remote.Option {
	var auth authn.Authenticator = authn.Anonymous
	if user != "" {
		auth = &authn.Basic{Username: user, Password: pass}
	}
	return []remote.Option{remote.WithAuth(auth), remote.WithContext(t.Context())}
}

// Image describes an image for PushImage.
type Image struct {
	// Layers is the number of random layers, each indexLayerSize bytes of
	// random content in a gzipped tar.
	Layers int
	// Labels go into the config's Config.Labels.
	Labels map[string]string
	// Created is the config's created time; zero leaves it out.
	Created time.Time
}

// PushImage pushes a random OCI image for linux/amd64 described by spec to
// ref and returns its manifest digest. Credentials are as for PushRandom.
// Any failure fails the test.
func PushImage(t testing.TB, ref string, spec Image, user, pass string) string {
	t.Helper()
	r := parseRef(t, ref)
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for range spec.Layers {
		layer, err := random.Layer(indexLayerSize, types.OCILayer)
		if err != nil {
			t.Fatalf("regtest: making a random layer: %v", err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatalf("regtest: appending a layer: %v", err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("regtest: reading a config: %v", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Labels = spec.Labels
	if !spec.Created.IsZero() {
		cfg.Created = v1.Time{Time: spec.Created}
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatalf("regtest: setting the config: %v", err)
	}
	return write(t, r, img, user, pass)
}

// PushSignature pushes a cosign-style signature for the manifest subject
// (a "sha256:…" digest) in repo ("host:port/repo"): an OCI image with one
// simple-signing layer, tagged sha256-<hex>.sig as cosign tags it. The
// signature is not cryptographically valid; it is content to carry. It
// returns the signature manifest's digest.
func PushSignature(t testing.TB, repo, subject, user, pass string) string {
	t.Helper()
	hex := strings.TrimPrefix(subject, "sha256:")
	r := parseRef(t, repo+":sha256-"+hex+".sig")
	payload := fmt.Sprintf(`{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, repo, subject)
	layer := static.NewLayer([]byte(payload), "application/vnd.dev.cosign.simplesigning.v1+json")
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.Append(img, mutate.Addendum{Layer: layer, Annotations: map[string]string{"dev.cosignproject.cosign/signature": "MEUCIQ-not-a-real-signature"}})
	if err != nil {
		t.Fatalf("regtest: making a signature: %v", err)
	}
	return write(t, r, img, user, pass)
}

// PushReferrer pushes an OCI 1.1 artifact manifest whose subject is the
// manifest subject ("sha256:…") in repo, with the given artifactType, by
// digest only, and returns its digest. The registry's referrers API (or
// its absence) decides how it can be found.
func PushReferrer(t testing.TB, repo, subject, artifactType, user, pass string) string {
	t.Helper()
	r := parseRef(t, repo+"@"+subject)
	opts := remoteOptions(t, user, pass)
	desc, err := remote.Head(r, opts...)
	if err != nil {
		t.Fatalf("regtest: looking up %s: %v", r, err)
	}
	layer := static.NewLayer([]byte(`{"sbom":"`+artifactType+`"}`), types.MediaType("application/json"))
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.MediaType(artifactType))
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		t.Fatalf("regtest: making a referrer: %v", err)
	}
	img = mutate.Subject(img, v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}).(v1.Image)
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("regtest: digest of a referrer: %v", err)
	}
	dst := r.Context().Digest(d.String())
	if err := remote.Write(dst, img, opts...); err != nil {
		t.Fatalf("regtest: pushing %s: %v", dst, err)
	}
	return d.String()
}

// write pushes img to r and returns its digest; any failure fails the test.
func write(t testing.TB, r name.Reference, img v1.Image, user, pass string) string {
	t.Helper()
	if err := remote.Write(r, img, remoteOptions(t, user, pass)...); err != nil {
		t.Fatalf("regtest: pushing %s: %v", r, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("regtest: digest of %s: %v", r, err)
	}
	return d.String()
}
