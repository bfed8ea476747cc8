package signing

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/store"
	"github.com/ferry-oci/ferry/internal/transfer"
)

// The test-only key pair in testdata/keys (see its README).
const (
	testKeyFile  = "../../testdata/keys/test.key"
	testPubFile  = "../../testdata/keys/test.pub"
	testPassword = "ferry-test-only"
)

// testSigner loads testdata/keys/test.key once: decrypting it costs a
// scrypt run.
var testSigner = sync.OnceValues(func() (*Signer, error) {
	pem, err := os.ReadFile(testKeyFile)
	if err != nil {
		return nil, err
	}
	return LoadSigner(testKeyFile, pem, func() ([]byte, error) { return []byte(testPassword), nil })
})

func mustTestSigner(t testing.TB) *Signer {
	t.Helper()
	s, err := testSigner()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newSigner makes a signer for a fresh P-256 key, without a key file.
func newSigner(t testing.TB) *Signer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadDefaultSignerVerifier(priv, options.WithED25519ph())
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{sv: sv, pub: priv.Public()}
}

func keyOpts(s *Signer) VerifyOptions {
	return VerifyOptions{Key: s.PublicKey(), KeyName: "test.pub"}
}

// remote is a registry client for the test registries (plain http).
func remote() *transfer.Remote {
	return &transfer.Remote{Transport: func(string) (http.RoundTripper, error) { return http.DefaultTransport, nil }}
}

func parseRef(t testing.TB, s string) transfer.Reference {
	t.Helper()
	ref, err := transfer.ParseReference(s, true)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// openEndpoint opens ref for signing; finish(true) runs at cleanup.
func openEndpoint(t testing.TB, ref transfer.Reference) Endpoint {
	t.Helper()
	ep, finish, err := OpenForSigning(context.Background(), remote(), ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := finish(true); err != nil {
			t.Error(err)
		}
	})
	return ep
}

// openSource opens ref for reading.
func openSource(t testing.TB, ref transfer.Reference) transfer.Source {
	t.Helper()
	src, closeSrc, err := remote().OpenSource(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeSrc() })
	return src
}

// registryImage pushes a random image to a fresh repository of a new
// registry and returns the reference "host/repo:v1" and its digest.
func registryImage(t testing.TB, reg, repo string) (string, digest.Digest) {
	t.Helper()
	ref := reg + "/" + repo + ":v1"
	return ref, digest.Digest(regtest.PushImage(t, ref, regtest.Image{Layers: 1}, "", ""))
}

// layoutImage writes a small image to a new OCI layout under tag and
// returns the layout's directory and the image's digest.
func layoutImage(t testing.TB, tag string) (string, digest.Digest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := transfer.NewLayout("oci:"+dir, s, 0)
	m := putImage(t, l, tag, "layer for "+tag)
	return dir, m.Descriptor.Digest
}

// putImage writes a one-layer image to dst, tagged tag when it is set.
func putImage(t testing.TB, dst transfer.Target, tag, content string) *transfer.Manifest {
	t.Helper()
	ctx := context.Background()
	layer := []byte(content)
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + string(digest.FromBytes(layer)) + `"]}}`)
	for _, b := range [][]byte{layer, cfg} {
		if err := dst.WriteBlob(ctx, ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}, strings.NewReader(string(b))); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := json.Marshal(ocispec.Manifest{
		Versioned: specsVersioned,
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := transfer.ParseManifest(raw, ocispec.MediaTypeImageManifest, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.PutManifest(ctx, m, tag); err != nil {
		t.Fatal(err)
	}
	return m
}

// putIndex writes an index of ms to dst under tag.
func putIndex(t testing.TB, dst transfer.Target, tag string, ms ...*transfer.Manifest) *transfer.Manifest {
	t.Helper()
	idx := ocispec.Index{Versioned: specsVersioned, MediaType: ocispec.MediaTypeImageIndex}
	for i, m := range ms {
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{
			MediaType: m.Descriptor.MediaType, Digest: m.Descriptor.Digest, Size: m.Descriptor.Size,
			Platform: &ocispec.Platform{OS: "linux", Architecture: []string{"amd64", "arm64"}[i%2]},
		})
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := transfer.ParseManifest(raw, ocispec.MediaTypeImageIndex, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.PutManifest(context.Background(), m, tag); err != nil {
		t.Fatal(err)
	}
	return m
}

// putSignature adds a signature layer with payload, signed by s (or with
// sig as the raw annotation when s is nil), to d's signature image.
func putSignature(t testing.TB, ep Endpoint, d digest.Digest, payload []byte, s *Signer, ann map[string]string) *transfer.Manifest {
	t.Helper()
	ctx := context.Background()
	img, err := newSigImage()
	if err != nil {
		t.Fatal(err)
	}
	if existing, err := readSigManifest(ctx, ep, d); err != nil {
		t.Fatal(err)
	} else if existing != nil {
		if img, err = loadSigImage(ctx, ep, existing); err != nil {
			t.Fatal(err)
		}
	}
	if ann == nil {
		ann = map[string]string{}
	}
	if s != nil {
		sig, err := s.sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		ann[AnnotationSignature] = b64(sig)
	}
	if err := img.add(payload, ann); err != nil {
		t.Fatal(err)
	}
	m, err := img.write(ctx, ep, payload, SignatureTag(d))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// wantVerificationError checks that err is a *VerificationError for image
// whose message has every one of parts.
func wantVerificationError(t testing.TB, err error, parts ...string) {
	t.Helper()
	var verr *VerificationError
	if err == nil || !asVerificationError(err, &verr) {
		t.Fatalf("got %v, want a verification error", err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}
