package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// testRegistry serves go-containerregistry's registry behind wrap and
// returns its host.
func testRegistry(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func pushImage(t *testing.T, ref string) string {
	t.Helper()
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func openRepo(t *testing.T, repo string) *Repository {
	t.Helper()
	r := &Remote{Transport: func(string) (http.RoundTripper, error) { return http.DefaultTransport, nil }}
	rn, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := r.Open(context.Background(), rn, false)
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

func TestManifestByTagAndDigest(t *testing.T) {
	host := testRegistry(t, nil)
	want := pushImage(t, host+"/app:v1")
	r := openRepo(t, host+"/app")
	for _, id := range []string{"v1", want} {
		m, err := r.Manifest(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Descriptor.Digest) != want || len(m.Layers) != 2 || m.IsIndex() {
			t.Fatalf("Manifest(%s) = %s with %d layers, want %s with 2", id, m.Descriptor.Digest, len(m.Layers), want)
		}
	}
	d, err := r.ManifestDigest(context.Background(), "v1")
	if err != nil || string(d) != want {
		t.Fatalf("ManifestDigest = %s, %v; want %s", d, err, want)
	}
	if _, err := r.Manifest(context.Background(), "nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), host+"/app:nope") {
		t.Fatalf("missing tag: err = %v, want ErrNotFound naming the reference", err)
	}
}

// rewriteManifest serves a different body for manifest GETs.
func rewriteManifest(body []byte, contentType, dcd string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
				w.Header().Set("Content-Type", contentType)
				if dcd != "" {
					w.Header().Set("Docker-Content-Digest", dcd)
				}
				w.Write(body)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func TestManifestDigestMismatch(t *testing.T) {
	// Row 1: a body fetched by digest that hashes to something else.
	other := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cfgDigest + `","size":2},"layers":[]}`)
	host := testRegistry(t, rewriteManifest(other, MediaTypeOCIManifest, ""))
	r := openRepo(t, host+"/app")
	_, err := r.Manifest(context.Background(), layerDigest)
	if !errors.Is(err, ErrDigestMismatch) || !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), layerDigest) {
		t.Fatalf("err = %v, want a verification error naming %s", err, layerDigest)
	}

	// By tag, a Docker-Content-Digest header that the body does not match.
	host = testRegistry(t, rewriteManifest(other, MediaTypeOCIManifest, layerDigest))
	r = openRepo(t, host+"/app")
	if _, err := r.Manifest(context.Background(), "v1"); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("tag with lying Docker-Content-Digest: err = %v, want ErrDigestMismatch", err)
	}
}

func TestManifestAmbiguous(t *testing.T) {
	// Row 7: mediaType field and Content-Type disagree.
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cfgDigest + `","size":2},"layers":[]}`)
	host := testRegistry(t, rewriteManifest(body, MediaTypeOCIIndex, ""))
	r := openRepo(t, host+"/app")
	if _, err := r.Manifest(context.Background(), "v1"); !errors.Is(err, ErrInvalidManifest) || !strings.Contains(err.Error(), host+"/app:v1") {
		t.Fatalf("err = %v, want ErrInvalidManifest naming the reference", err)
	}
}

func TestManifestTooLarge(t *testing.T) {
	// Row 6: stop reading past the limit, whether or not Content-Length says so.
	var sent atomic.Int64
	big := bytes.Repeat([]byte(" "), 100<<20)
	host := testRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") {
				w.Header().Set("Content-Type", MediaTypeOCIManifest)
				if r.URL.Query().Get("chunked") == "" {
					w.(http.Flusher).Flush() // no Content-Length
				}
				for i := 0; i < len(big); i += 1 << 20 {
					n, err := w.Write(big[i : i+1<<20])
					sent.Add(int64(n))
					if err != nil {
						return
					}
				}
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	r := openRepo(t, host+"/app")
	_, err := r.Manifest(context.Background(), "v1")
	if !errors.Is(err, ErrManifestTooLarge) || !strings.Contains(err.Error(), "--max-manifest-size") {
		t.Fatalf("err = %v, want ErrManifestTooLarge with a hint", err)
	}
	if sent.Load() >= int64(len(big)) {
		t.Errorf("the client read the whole 100 MiB body")
	}
}

func TestFetchBlobVerifies(t *testing.T) {
	host := testRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/blobs/") {
				w.Write([]byte("{}x"))
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	r := openRepo(t, host+"/app")
	// sha256 of "{}" with the right size, but the server sends an extra byte.
	const d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	if _, err := r.FetchBlob(context.Background(), d, 2, 1<<20); !errors.Is(err, ErrVerification) {
		t.Fatalf("err = %v, want a verification error", err)
	}
	if _, err := r.FetchBlob(context.Background(), d, 3, 1<<20); !errors.Is(err, ErrVerification) {
		t.Fatalf("wrong size and digest: err = %v, want a verification error", err)
	}
}

// tagPages serves tags/list in pages of two with Link headers made by link.
func tagPages(tags []string, link func(page int) string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, "/tags/list") {
				next.ServeHTTP(w, r)
				return
			}
			page := 0
			fmt.Sscanf(r.URL.Query().Get("page"), "%d", &page)
			end := min(page*2+2, len(tags))
			if l := link(page); l != "" && end < len(tags) || l != "" && strings.Contains(l, "loop") {
				w.Header().Set("Link", l)
			}
			fmt.Fprintf(w, `{"name":"app","tags":["%s"]}`, strings.Join(tags[page*2:end], `","`))
		})
	}
}

func TestTagsPagination(t *testing.T) {
	tags := []string{"a", "b", "c", "d", "e"}
	host := testRegistry(t, tagPages(tags, func(p int) string {
		return fmt.Sprintf(`</v2/app/tags/list?page=%d>; rel="next"`, p+1)
	}))
	got, err := openRepo(t, host+"/app").Tags(context.Background(), TagOptions{})
	if err != nil || strings.Join(got, ",") != "a,b,c,d,e" {
		t.Fatalf("Tags = %v, %v; want all five across three pages", got, err)
	}
	if _, err := openRepo(t, host+"/app").Tags(context.Background(), TagOptions{MaxTags: 3}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("MaxTags 3: err = %v, want ErrTooMany", err)
	}
	if _, err := openRepo(t, host+"/app").Tags(context.Background(), TagOptions{MaxPages: 2}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("MaxPages 2: err = %v, want ErrTooMany", err)
	}
}

func TestTagsLinkLoop(t *testing.T) {
	// Row 13: a registry that keeps sending the same cursor.
	host := testRegistry(t, tagPages([]string{"a", "b", "c"}, func(int) string {
		return `</v2/app/tags/list?page=0&loop=1>; rel="next"`
	}))
	_, err := openRepo(t, host+"/app").Tags(context.Background(), TagOptions{})
	if !errors.Is(err, ErrTooMany) || !strings.Contains(err.Error(), "repeated") {
		t.Fatalf("err = %v, want ErrTooMany for a repeated cursor", err)
	}
}

func TestTagsLinkToOtherHost(t *testing.T) {
	host := testRegistry(t, tagPages([]string{"a", "b", "c"}, func(int) string {
		return `<http://127.0.0.2:1/v2/app/tags/list?page=1>; rel="next"`
	}))
	_, err := openRepo(t, host+"/app").Tags(context.Background(), TagOptions{})
	if err == nil || !strings.Contains(err.Error(), "another host") {
		t.Fatalf("err = %v, want a refusal to follow the Link", err)
	}
}

// TestJSONAnswersKeepTheConnection: reading tag lists and referrers
// leaves the connection fit for the next request, also when the registry
// sends them chunked (no Content-Length), as registries behind proxies
// do: net/http drops a connection whose body was closed before its end,
// and a JSON decoder stops at the end of the value, before a final chunk
// that comes in a later packet.
func TestJSONAnswersKeepTheConnection(t *testing.T) {
	var conns atomic.Int32
	reg := registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/tags/list") && !strings.Contains(r.URL.Path, "/referrers/") {
			reg.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, r)
		w.Header().Set("Content-Type", rec.Header().Get("Content-Type"))
		w.WriteHeader(rec.Code)
		body := rec.Body.Bytes()
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush() // from here on, chunked
		w.Write(body[len(body)/2:])
		w.Write([]byte("\n"))
		w.(http.Flusher).Flush()
		time.Sleep(20 * time.Millisecond) // the last chunk comes apart
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	d := pushImage(t, host+"/app:v1")
	pushImage(t, host+"/app:v2")

	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	r := &Remote{Transport: func(string) (http.RoundTripper, error) { return base, nil }}
	rn, err := name.NewRepository(host + "/app")
	if err != nil {
		t.Fatal(err)
	}
	repo, err := r.Open(t.Context(), rn, false)
	if err != nil {
		t.Fatal(err)
	}
	before := conns.Load()
	for range 3 {
		tags, err := repo.Tags(t.Context(), TagOptions{})
		if err != nil || len(tags) != 2 {
			t.Fatalf("Tags: %v, %v; want v1 and v2", tags, err)
		}
		refs, ok, err := repo.ReferrersAPI(t.Context(), ocispec.Descriptor{Digest: digest.Digest(d)}, 10)
		if err != nil || !ok || len(refs) != 0 {
			t.Fatalf("ReferrersAPI: %v, %v, %v; want the API's empty answer", refs, ok, err)
		}
	}
	if n := conns.Load() - before; n > 1 {
		t.Errorf("6 requests one after the other opened %d connections, want at most 1", n)
	}
}
