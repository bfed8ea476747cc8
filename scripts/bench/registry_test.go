package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func testRegistry(t *testing.T) *benchRegistry {
	t.Helper()
	r, err := startRegistry(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// readAll reads every blob of img from the registry; remote verifies each
// against its digest as it reads.
func readAll(t *testing.T, img v1.Image) int64 {
	t.Helper()
	var total int64
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("reading a layer back: %v", err)
		}
		total += n
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return total + int64(len(raw))
}

func TestGeneratedImageRoundTrips(t *testing.T) {
	r := testRegistry(t)
	ctx := context.Background()
	c := imageCase{Name: "single", Layers: repeat(3, 100*kib)}
	s, err := generate(ctx, c, t.TempDir(), r.Host())
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(r.Host()+"/"+s.Repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d != s.Digest {
		t.Errorf("pushed digest %s, generate reported %s", d, s.Digest)
	}
	n := readAll(t, img)
	stored, err := r.store.Bytes(s.Repo)
	if err != nil {
		t.Fatal(err)
	}
	if stored != n {
		t.Errorf("store holds %d bytes for %s, its blobs are %d", stored, s.Repo, n)
	}
	// Layers are gzip of a tar of the payload: a little more than it.
	layers, _ := img.Layers()
	for _, l := range layers {
		size, _ := l.Size()
		if size < 100*kib || size > 100*kib+4*kib {
			t.Errorf("layer of %d bytes for a 100 KiB payload", size)
		}
		diffID, _ := l.DiffID()
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("layer is not gzip: %v", err)
		}
		if got := fmt.Sprintf("sha256:%x", h.Sum(nil)); got != diffID.String() {
			t.Errorf("layer's uncompressed digest is %s, its diffID %s", got, diffID)
		}
	}

	// The same case generates the same image: runs are comparable.
	again, err := generate(ctx, c, t.TempDir(), r.Host())
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != s.Digest {
		t.Errorf("generating %s twice gave %s and %s", c.Name, s.Digest, again.Digest)
	}
}

func TestGeneratedIndexRoundTrips(t *testing.T) {
	r := testRegistry(t)
	c := imageCase{Name: "multi", Layers: repeat(2, 10*kib), Platforms: 3, Shared: 20 * kib}
	s, err := generate(context.Background(), c, t.TempDir(), r.Host())
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(r.Host()+"/"+s.Repo+":v1", name.Insecure)
	idx, err := remote.Index(ref)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 3 {
		t.Fatalf("index lists %d manifests, want 3", len(im.Manifests))
	}
	var total int64
	seen := map[v1.Hash]bool{}
	for _, d := range im.Manifests {
		if d.Platform == nil || d.ArtifactType != "" {
			t.Errorf("entry %s: platform %v, artifactType %q; want a platform and no artifactType", d.Digest, d.Platform, d.ArtifactType)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, img)
		layers, _ := img.Layers()
		if len(layers) != 3 {
			t.Errorf("%s has %d layers, want 2 of its own and the shared one", d.Digest, len(layers))
		}
		for _, l := range layers {
			dg, _ := l.Digest()
			size, _ := l.Size()
			if !seen[dg] {
				total += size
			}
			seen[dg] = true
		}
		cd, _ := img.ConfigName()
		raw, _ := img.RawConfigFile()
		if !seen[cd] {
			total += int64(len(raw))
		}
		seen[cd] = true
	}
	if stored, _ := r.store.Bytes(s.Repo); stored != total {
		t.Errorf("store holds %d bytes for %s, its unique blobs are %d", stored, s.Repo, total)
	}
}

// do sends one request to the registry and returns the response, closed.
func do(t *testing.T, method, url, contentRange string, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentRange != "" {
		req.Header.Set("Content-Range", contentRange)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func digestOf(s string) string { return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(s))) }

func TestChunkedUpload(t *testing.T) {
	r := testRegistry(t)
	base := "http://" + r.Host()
	resp := do(t, http.MethodPost, base+"/v2/a/b/blobs/uploads/", "", "")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: %s", resp.Status)
	}
	loc := base + resp.Header.Get("Location")
	if resp := do(t, http.MethodPatch, loc, "0-4", "hello"); resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != "0-4" {
		t.Fatalf("PATCH 0-4: %s, Range %q", resp.Status, resp.Header.Get("Range"))
	}
	if resp := do(t, http.MethodPatch, loc, "0-4", "again"); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("PATCH overlapping what was received: %s, want 416", resp.Status)
	}
	if resp := do(t, http.MethodPatch, loc, "", ", "); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("streamed PATCH: %s", resp.Status)
	}
	want := "hello, world"
	resp = do(t, http.MethodPut, loc+"?digest="+digestOf(want), "", "world")
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != digestOf(want) {
		t.Fatalf("PUT: %s, digest %q", resp.Status, resp.Header.Get("Docker-Content-Digest"))
	}
	get, err := http.Get(base + "/v2/a/b/blobs/" + digestOf(want))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(get.Body)
	get.Body.Close()
	if string(got) != want {
		t.Errorf("blob reads back as %q, want %q", got, want)
	}
	if resp := do(t, http.MethodPut, loc+"?digest="+digestOf(want), "", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("PUT to a finished session: %s, want 404", resp.Status)
	}
}

func TestBlobsBelongToTheirRepository(t *testing.T) {
	r := testRegistry(t)
	base := "http://" + r.Host()
	blob := "only in one"
	if resp := do(t, http.MethodPost, base+"/v2/one/blobs/uploads/?digest="+digestOf(blob), "", blob); resp.StatusCode != http.StatusCreated {
		t.Fatalf("monolithic POST: %s", resp.Status)
	}
	if resp := do(t, http.MethodHead, base+"/v2/one/blobs/"+digestOf(blob), "", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD in its repository: %s, want 200", resp.Status)
	}
	if resp := do(t, http.MethodHead, base+"/v2/two/blobs/"+digestOf(blob), "", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD in another repository: %s, want 404", resp.Status)
	}
	if err := r.Drop("one"); err != nil {
		t.Fatal(err)
	}
	if resp := do(t, http.MethodHead, base+"/v2/one/blobs/"+digestOf(blob), "", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD after Drop: %s, want 404", resp.Status)
	}
}

func TestUploadWithWrongDigestIsRefused(t *testing.T) {
	r := testRegistry(t)
	base := "http://" + r.Host()
	wrong := digestOf("something else")
	if resp := do(t, http.MethodPost, base+"/v2/x/blobs/uploads/?digest="+wrong, "", "content"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("monolithic POST with a wrong digest: %s, want 400", resp.Status)
	}
	resp := do(t, http.MethodPost, base+"/v2/x/blobs/uploads/", "", "")
	loc := base + resp.Header.Get("Location")
	if resp := do(t, http.MethodPut, loc+"?digest="+wrong, "", "content"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("PUT with a wrong digest: %s, want 400", resp.Status)
	}
	for _, d := range []string{wrong, digestOf("content")} {
		if resp := do(t, http.MethodHead, base+"/v2/x/blobs/"+d, "", ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("HEAD %s after refused uploads: %s, want 404", d, resp.Status)
		}
	}
}
