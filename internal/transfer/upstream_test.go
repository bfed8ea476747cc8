package transfer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/store"
)

func newTestUpstream(t *testing.T, host string) *Upstream {
	t.Helper()
	r := &Remote{Transport: func(string) (http.RoundTripper, error) { return http.DefaultTransport, nil }}
	u, err := NewUpstream(r, "http://"+host, false)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestNewUpstreamParsesURLs(t *testing.T) {
	r := &Remote{}
	for in, want := range map[string]string{
		"https://registry-1.docker.io": "https://index.docker.io",
		"docker.io":                    "https://index.docker.io",
		"https://ghcr.io/":             "https://ghcr.io",
		"quay.io":                      "https://quay.io",
		"http://127.0.0.1:5000":        "http://127.0.0.1:5000",
		"HTTP://127.0.0.1:5000":        "http://127.0.0.1:5000",
	} {
		u, err := NewUpstream(r, in, false)
		if err != nil {
			t.Errorf("NewUpstream(%q): %v", in, err)
			continue
		}
		if u.String() != want {
			t.Errorf("NewUpstream(%q) = %s, want %s", in, u, want)
		}
	}
	for _, in := range []string{"", "ftp://x", "https://ghcr.io/team", "https://u:p@ghcr.io", "https://", "https://x?y=1"} {
		if _, err := NewUpstream(r, in, false); !errors.Is(err, ErrInvalidReference) || !strings.Contains(err.Error(), "upstream") {
			t.Errorf("NewUpstream(%q): %v, want an invalid reference naming the upstream", in, err)
		}
	}
}

func TestUpstreamFetchesAndReportsNotFound(t *testing.T) {
	var opens atomic.Int32
	host := testRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v2/" {
				opens.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	})
	want := pushImage(t, host+"/team.x/app:v1")
	opens.Store(0) // the push's own handshake
	u := newTestUpstream(t, host)
	ctx := context.Background()

	desc, raw, err := u.Manifest(ctx, "team.x/app", "v1")
	if err != nil || string(desc.Digest) != want || digest.FromBytes(raw) != desc.Digest {
		t.Fatalf("Manifest(v1) = %s, %d bytes, %v; want %s", desc.Digest, len(raw), err, want)
	}
	d, err := u.ManifestDigest(ctx, "team.x/app", "v1")
	if err != nil || string(d) != want {
		t.Fatalf("ManifestDigest(v1) = %s, %v", d, err)
	}
	m, err := ParseManifest(raw, desc.MediaType, "")
	if err != nil {
		t.Fatal(err)
	}
	layer := m.Layers[0]
	size, err := u.BlobSize(ctx, "team.x/app", layer.Digest)
	if err != nil || size != layer.Size {
		t.Fatalf("BlobSize = %d, %v; want %d", size, err, layer.Size)
	}
	rc, n, err := u.Blob(ctx, "team.x/app", layer.Digest)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || n != layer.Size || digest.FromBytes(body) != layer.Digest {
		t.Fatalf("Blob: %d bytes (declared %d) hashing to %s, %v; want %s", len(body), n, digest.FromBytes(body), err, layer.Digest)
	}
	tags, err := u.Tags(ctx, "team.x/app")
	if err != nil || strings.Join(tags, ",") != "v1" {
		t.Fatalf("Tags = %v, %v", tags, err)
	}
	if got := opens.Load(); got != 1 {
		t.Errorf("the repository was opened %d times, want once", got)
	}

	for what, err := range map[string]error{
		"manifest": func() error { _, _, err := u.Manifest(ctx, "team.x/app", "v9"); return err }(),
		"blob":     func() error { _, _, err := u.Blob(ctx, "team.x/app", digest.FromString("x")); return err }(),
		"size":     func() error { _, err := u.BlobSize(ctx, "team.x/app", digest.FromString("x")); return err }(),
	} {
		if !errors.Is(err, store.ErrNotFound) || !errors.Is(err, ErrNotFound) {
			t.Errorf("missing %s: %v, want an error matching store.ErrNotFound and ErrNotFound", what, err)
		}
	}
	if _, _, err := u.Manifest(ctx, "Bad/Name", "v1"); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("invalid repository: %v, want ErrInvalidReference", err)
	}
}
