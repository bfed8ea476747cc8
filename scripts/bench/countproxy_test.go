package main

import (
	"context"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestRequestKind(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, c := range []struct{ method, path, kind, digest string }{
		{"GET", "/v2/", "ping", ""},
		{"GET", "/v2", "ping", ""},
		{"GET", "/v2/_catalog", "catalog", ""},
		{"GET", "/v2/a/b/tags/list", "tag list", ""},
		{"HEAD", "/v2/a/b/manifests/v1", "manifest HEAD", ""},
		{"GET", "/v2/a/manifests/" + d, "manifest GET", ""},
		{"GET", "/v2/a/blobs/" + d, "blob GET", d},
		{"HEAD", "/v2/a/blobs/" + d, "blob HEAD", d},
		{"POST", "/v2/a/blobs/uploads/", "upload", ""},
		{"PATCH", "/v2/a/blobs/uploads/abc", "upload", ""},
		{"GET", "/v2/a/referrers/" + d, "referrers", ""},
		// A repository may be called "manifests" or "blobs".
		{"GET", "/v2/blobs/manifests/v1", "manifest GET", ""},
		{"GET", "/v2/x/manifests/blobs/" + d, "blob GET", d},
		{"GET", "/metrics", "other", ""},
		{"GET", "/v2/a/manifests/", "other", ""},
	} {
		kind, digest := requestKind(c.method, c.path)
		if kind != c.kind || digest != c.digest {
			t.Errorf("%s %s: %q %q, want %q %q", c.method, c.path, kind, digest, c.kind, c.digest)
		}
	}
}

func TestOncePerBlob(t *testing.T) {
	c := requestCounts{BlobGets: map[string]int{"sha256:a": 1, "sha256:b": 2, "sha256:z": 1}}
	got := c.OncePerBlob([]string{"sha256:a", "sha256:b", "sha256:c"})
	want := "sha256:b fetched 2 times; sha256:c fetched 0 times; sha256:z (not the image's) fetched 1 times"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	c = requestCounts{BlobGets: map[string]int{"sha256:a": 1}}
	if got := c.OncePerBlob([]string{"sha256:a"}); got != "" {
		t.Errorf("one fetch each: %q", got)
	}
}

// TestCountingProxyCountsAPull reads an image through the proxy and
// expects each of its blobs fetched once.
func TestCountingProxyCountsAPull(t *testing.T) {
	r := testRegistry(t)
	ctx := context.Background()
	s, err := generate(ctx, imageCase{Name: "counted", Layers: repeat(2, 64*kib)}, t.TempDir(), r.Host())
	if err != nil {
		t.Fatal(err)
	}
	p, err := startCountingProxy(r.Host())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	blobs, total, err := imageBlobs(ctx, p.Host(), s.Repo, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 3 || total < 128*kib {
		t.Fatalf("%d blobs, %d bytes", len(blobs), total)
	}
	p.Reset()
	ref, _ := name.ParseReference(p.Host()+"/"+s.Repo+":v1", name.Insecure)
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, img)
	c := p.Counts()
	if problem := c.OncePerBlob(blobs); problem != "" {
		t.Errorf("%s (%s)", problem, c)
	}
	if c.Kinds["manifest GET"] != 1 {
		t.Errorf("%s: want one manifest GET", c)
	}
}
