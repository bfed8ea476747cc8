package registry

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Tests with go-containerregistry's client, an independent implementation
// of the distribution spec's client side.

func (r *testRegistry) ref(t testing.TB, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.host()+"/"+s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func (r *testRegistry) remoteOpts(extra ...remote.Option) []remote.Option {
	return append([]remote.Option{remote.WithTransport(r.ts.Client().Transport)}, extra...)
}

// sameImage fails unless got has the manifest, config and layer bytes of
// want.
func sameImage(t testing.TB, want, got v1.Image) {
	t.Helper()
	wm, err := want.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	gm, err := got.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wm, gm) {
		t.Fatalf("manifest differs:\n%s\n%s", wm, gm)
	}
	wc, _ := want.RawConfigFile()
	gc, err := got.RawConfigFile()
	if err != nil || !bytes.Equal(wc, gc) {
		t.Fatalf("config differs (%v)", err)
	}
	wl, _ := want.Layers()
	gl, err := got.Layers()
	if err != nil || len(wl) != len(gl) {
		t.Fatalf("layers: %d vs %d (%v)", len(wl), len(gl), err)
	}
	for i := range wl {
		a, b := layerBytes(t, wl[i]), layerBytes(t, gl[i])
		if !bytes.Equal(a, b) {
			t.Fatalf("layer %d differs", i)
		}
	}
}

func layerBytes(t testing.TB, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGGCRImagesAndIndexes(t *testing.T) {
	r := newTestRegistry(t, Options{})
	opts := r.remoteOpts()
	for i := range 3 {
		img, err := random.Image(2048, 3)
		if err != nil {
			t.Fatal(err)
		}
		ref := r.ref(t, fmt.Sprintf("ggcr/images:v%d", i))
		if err := remote.Write(ref, img, opts...); err != nil {
			t.Fatal(err)
		}
		got, err := remote.Image(ref, opts...)
		if err != nil {
			t.Fatal(err)
		}
		sameImage(t, img, got)
		// And by digest.
		d, _ := img.Digest()
		got, err = remote.Image(r.ref(t, "ggcr/images@"+d.String()), opts...)
		if err != nil {
			t.Fatal(err)
		}
		sameImage(t, img, got)
	}

	idx, err := random.Index(1024, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref := r.ref(t, "ggcr/index:multi")
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		t.Fatal(err)
	}
	got, err := remote.Index(ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	wm, _ := idx.RawManifest()
	gm, err := got.RawManifest()
	if err != nil || !bytes.Equal(wm, gm) {
		t.Fatalf("index manifest differs (%v)", err)
	}
	im, _ := idx.IndexManifest()
	for _, desc := range im.Manifests {
		want, _ := idx.Image(desc.Digest)
		child, err := got.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		sameImage(t, want, child)
	}

	tags, err := remote.List(r.ref(t, "ggcr/images:v0").Context(), opts...)
	if err != nil || !slices.Equal(tags, []string{"v0", "v1", "v2"}) {
		t.Errorf("tags %v (%v)", tags, err)
	}
	repos, err := remote.Catalog(t.Context(), ref.Context().Registry, opts...)
	if err != nil || !slices.Equal(repos, []string{"ggcr/images", "ggcr/index"}) {
		t.Errorf("catalog %v (%v)", repos, err)
	}

	// Delete by tag, then by digest.
	if err := remote.Delete(r.ref(t, "ggcr/images:v0"), opts...); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Head(r.ref(t, "ggcr/images:v0"), opts...); err == nil {
		t.Error("deleted tag still resolves")
	}
}

func TestGGCRDockerTypes(t *testing.T) {
	r := newTestRegistry(t, Options{})
	opts := r.remoteOpts()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.DockerManifestSchema2), types.DockerConfigJSON)
	ref := r.ref(t, "docker/app:latest")
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if desc.MediaType != types.DockerManifestSchema2 {
		t.Errorf("media type %s", desc.MediaType)
	}
	got, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, img, got)

	list := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}}), types.DockerManifestList)
	lref := r.ref(t, "docker/app:list")
	if err := remote.WriteIndex(lref, list, opts...); err != nil {
		t.Fatal(err)
	}
	ldesc, err := remote.Get(lref, opts...)
	if err != nil || ldesc.MediaType != types.DockerManifestList {
		t.Fatalf("list: %v %v", ldesc, err)
	}
	arm, err := remote.Image(lref, append(opts, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"}))...)
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, img, arm)
}

// TestGGCRReferrers pushes artifacts with a subject; the registry answers
// with OCI-Subject, so go-containerregistry must not fall back to the tag
// scheme (it is disabled here, so a missing header fails the push).
func TestGGCRReferrers(t *testing.T) {
	r := newTestRegistry(t, Options{})
	opts := r.remoteOpts(remote.WithReferrersTagFallback(false))
	base, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	baseRef := r.ref(t, "signed/app:1.0")
	if err := remote.Write(baseRef, base, opts...); err != nil {
		t.Fatal(err)
	}
	baseDesc, err := remote.Get(baseRef, opts...)
	if err != nil {
		t.Fatal(err)
	}
	subject := baseDesc.Descriptor

	var wantDigests []v1.Hash
	for i, at := range []string{"application/vnd.example.sig", "application/vnd.example.sbom"} {
		layer := static.NewLayer([]byte(fmt.Sprintf("artifact %d", i)), types.MediaType(at))
		a, err := mutate.AppendLayers(empty.Image, layer)
		if err != nil {
			t.Fatal(err)
		}
		a = mutate.ConfigMediaType(mutate.MediaType(a, types.OCIManifestSchema1), "application/vnd.oci.empty.v1+json")
		a = mutate.Annotations(a, map[string]string{"org.example.kind": at}).(v1.Image)
		art := mutate.Subject(a, subject).(v1.Image)
		d, err := art.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r.ref(t, "signed/app@"+d.String()), art, opts...); err != nil {
			t.Fatalf("pushing a referrer: %v", err)
		}
		wantDigests = append(wantDigests, d)
	}
	subjRef, err := name.NewDigest(r.host()+"/signed/app@"+subject.Digest.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Referrers(subjRef, opts...)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []v1.Hash
	for _, m := range im.Manifests {
		got = append(got, m.Digest)
		if m.Annotations["org.example.kind"] == "" || m.ArtifactType != "application/vnd.oci.empty.v1+json" {
			t.Errorf("referrer descriptor %+v", m)
		}
	}
	if len(got) != 2 || !slices.Contains(got, wantDigests[0]) || !slices.Contains(got, wantDigests[1]) {
		t.Errorf("referrers %v, want %v", got, wantDigests)
	}
	// No fallback tag was created.
	tags, err := remote.List(baseRef.Context(), opts...)
	if err != nil || !slices.Equal(tags, []string{"1.0"}) {
		t.Errorf("tags %v (%v)", tags, err)
	}
}

// TestGGCRSharedBlobsAndPagination pushes an image pulled from one
// repository into others: repositories share blobs, so the client finds
// every layer with HEAD and uploads nothing; then it lists tags through
// several pages.
func TestGGCRSharedBlobsAndPagination(t *testing.T) {
	var mu sync.Mutex
	counts := map[string]int{}
	r := newTestRegistry(t, Options{MaxPageSize: 2})
	inner := r.ts.Config.Handler
	r.ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := &recorder{ResponseWriter: w, status: 200}
		inner.ServeHTTP(rec, req)
		key := req.Method
		if req.URL.Query().Has("mount") {
			key += fmt.Sprintf(" mount %d", rec.status)
		} else if req.Method == http.MethodPatch {
			key += " upload"
		}
		mu.Lock()
		counts[key]++
		mu.Unlock()
	})
	opts := r.remoteOpts()
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r.ref(t, "src/app:1"), img, opts...); err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(r.ref(t, "src/app:1"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	clear(counts)
	mu.Unlock()
	for i := range 5 {
		if err := remote.Write(r.ref(t, fmt.Sprintf("dst/app:%d", i)), pulled, opts...); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	if counts["PATCH upload"] != 0 || counts["POST"] != 0 || counts["HEAD"] == 0 {
		t.Errorf("requests %v: blobs should be found, never uploaded", counts)
	}
	mu.Unlock()
	tags, err := remote.List(r.ref(t, "dst/app:1").Context(), opts...)
	if err != nil || !slices.Equal(tags, []string{"0", "1", "2", "3", "4"}) {
		t.Errorf("paginated tags %v (%v)", tags, err)
	}
	got, err := remote.Image(r.ref(t, "dst/app:4"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, img, got)
}
