package transfer

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/store"
)

// FuzzParseReference: any input either fails cleanly or yields a
// reference whose digest is valid and whose repository obeys the spec's
// grammar, so nothing unvalidated reaches a URL or a path (ROBUSTNESS
// row 8).
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"alpine", "docker.io/library/alpine:3.20", "localhost:5000/a/b@sha256:" + strings.Repeat("a", 64),
		"oci:./dir:tag", "oci-archive:/tmp/x.tar@sha256:" + strings.Repeat("0", 64), "host/repo@sha256:../../x",
		"HOST/Repo:TAG", "oci:", "a@b@c", "[::1]:5000/x:y", "x:" + strings.Repeat("t", 200),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseReference(s, false)
		if err != nil {
			return
		}
		if ref.Digest != "" {
			if _, err := ParseDigest(string(ref.Digest)); err != nil {
				t.Fatalf("%q: accepted digest %q: %v", s, ref.Digest, err)
			}
		}
		switch ref.Kind {
		case KindRegistry:
			if !store.ValidRepositoryName(ref.Repo.RepositoryStr()) {
				t.Fatalf("%q: accepted repository %q", s, ref.Repo.RepositoryStr())
			}
			if ref.Tag == "" && ref.Digest == "" {
				t.Fatalf("%q: registry reference with neither tag nor digest", s)
			}
		default:
			if ref.Path == "" {
				t.Fatalf("%q: layout reference without a path", s)
			}
		}
	})
}

// FuzzParseManifest: whatever the bytes, parsing never panics, and an
// accepted manifest is unambiguous and only holds valid digests
// (ROBUSTNESS rows 7 and 8).
func FuzzParseManifest(f *testing.F) {
	d := "sha256:" + strings.Repeat("a", 64)
	for _, s := range []string{
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + d + `","size":2},"layers":[]}`,
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + d + `","size":1}]}`,
		`{"schemaVersion":2,"manifests":[],"layers":[]}`,
		`{"schemaVersion":1,"fsLayers":[]}`,
		`{"schemaVersion":2,"config":{"digest":"sha256:../../etc"}}`,
		`[]`, `null`, ``, `{"schemaVersion":2,"mediaType":"x"}`,
	} {
		f.Add([]byte(s), "")
		f.Add([]byte(s), "application/vnd.oci.image.manifest.v1+json")
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		m, err := ParseManifest(body, contentType, digest.SHA256)
		if err != nil {
			return
		}
		if m.Descriptor.Digest != digest.FromBytes(body) || m.Descriptor.Size != int64(len(body)) {
			t.Fatalf("descriptor %+v does not describe the body", m.Descriptor)
		}
		if len(m.Manifests) > 0 && (m.Config != nil || len(m.Layers) > 0) {
			t.Fatalf("accepted an ambiguous manifest: %s", body)
		}
		all := m.Children()
		if m.Subject != nil {
			all = append(all, *m.Subject)
		}
		for _, c := range all {
			if _, err := ParseDigest(string(c.Digest)); err != nil {
				t.Fatalf("accepted descriptor digest %q", c.Digest)
			}
		}
	})
}
