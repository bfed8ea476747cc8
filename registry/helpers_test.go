package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// testRegistry is a Server over a fresh layout, behind an httptest server.
type testRegistry struct {
	t   testing.TB
	srv *Server
	st  *store.Store
	ts  *httptest.Server
	dir string
	// user and pass are sent with every request when set.
	user, pass string
}

func newTestRegistry(t testing.TB, opts Options) *testRegistry {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return newTestRegistryOn(t, st, opts)
}

func newTestRegistryOn(t testing.TB, st *store.Store, opts Options) *testRegistry {
	t.Helper()
	srv, err := New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.Close()
		_ = srv.Close()
	})
	return &testRegistry{t: t, srv: srv, st: st, ts: ts, dir: st.Dir()}
}

// host is the registry's host:port, for go-containerregistry references.
func (r *testRegistry) host() string { return strings.TrimPrefix(r.ts.URL, "http://") }

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *testRegistry) do(method, path string, body []byte, headers ...string) response {
	r.t.Helper()
	resp, err := r.send(method, path, body, headers...)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp
}

// send is do for goroutines: it returns the error instead of failing.
func (r *testRegistry) send(method, path string, body []byte, headers ...string) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, r.ts.URL+path, rd)
	if err != nil {
		return response{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	if r.user != "" {
		req.SetBasicAuth(r.user, r.pass)
	}
	resp, err := r.ts.Client().Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading body: %w", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// wantStatus fails unless resp has the status.
func wantStatus(t testing.TB, resp response, status int) {
	t.Helper()
	if resp.status != status {
		t.Fatalf("status %d, want %d; body %s", resp.status, status, resp.body)
	}
}

// wantError fails unless resp is status with the spec's error body
// {"errors":[{"code":code,…}]}.
func wantError(t testing.TB, resp response, status int, code string) {
	t.Helper()
	if resp.status != status {
		t.Fatalf("status %d, want %d (%s); body %s", resp.status, status, code, resp.body)
	}
	if len(resp.body) == 0 { // HEAD
		return
	}
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q, want application/json", ct)
	}
	var body struct {
		Errors []struct {
			Code    string          `json:"code"`
			Message string          `json:"message"`
			Detail  json.RawMessage `json:"detail"`
		} `json:"errors"`
	}
	dec := json.NewDecoder(bytes.NewReader(resp.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("error body %s is not the spec's format: %v", resp.body, err)
	}
	if len(body.Errors) != 1 || body.Errors[0].Code != code || body.Errors[0].Message == "" {
		t.Fatalf("error body %s, want one error with code %s and a message", resp.body, code)
	}
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// pushBlob uploads data to repo with a single POST and returns its digest.
func (r *testRegistry) pushBlob(repo string, data []byte) digest.Digest {
	r.t.Helper()
	return r.pushBlobAlg(repo, data, digest.SHA256)
}

func (r *testRegistry) pushBlobAlg(repo string, data []byte, alg digest.Algorithm) digest.Digest {
	r.t.Helper()
	d := alg.FromBytes(data)
	resp := r.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+string(d), data, "Content-Type", "application/octet-stream")
	wantStatus(r.t, resp, http.StatusCreated)
	return d
}

// image is a manifest and what it references, built by newImage.
type image struct {
	manifest []byte
	digest   digest.Digest
	config   ocispec.Descriptor
	layers   []ocispec.Descriptor
	blobs    map[digest.Digest][]byte
}

func (img image) desc() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: img.digest, Size: int64(len(img.manifest))}
}

type imageOpt func(*ocispec.Manifest)

func withSubject(d ocispec.Descriptor) imageOpt {
	return func(m *ocispec.Manifest) { m.Subject = &d }
}

func withArtifactType(at string) imageOpt {
	return func(m *ocispec.Manifest) { m.ArtifactType = at }
}

func withAnnotations(a map[string]string) imageOpt {
	return func(m *ocispec.Manifest) { m.Annotations = a }
}

// newImage builds an OCI image manifest with random layers; nothing is
// pushed.
func newImage(t testing.TB, layers int, opts ...imageOpt) image {
	t.Helper()
	img := image{blobs: map[digest.Digest][]byte{}}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"nonce":%q}`, randomBytes(t, 8)))
	img.config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	img.blobs[img.config.Digest] = cfg
	for range layers {
		l := randomBytes(t, 1000)
		d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(l), Size: int64(len(l))}
		img.layers = append(img.layers, d)
		img.blobs[d.Digest] = l
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: img.config, Layers: img.layers}
	m.SchemaVersion = 2
	if m.Layers == nil {
		m.Layers = []ocispec.Descriptor{}
	}
	for _, o := range opts {
		o(&m)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	img.manifest = raw
	img.digest = digest.FromBytes(raw)
	return img
}

// pushImage uploads the blobs of img and its manifest under ref.
func (r *testRegistry) pushImage(repo, ref string, img image) response {
	r.t.Helper()
	for _, b := range img.blobs {
		r.pushBlob(repo, b)
	}
	return r.putManifest(repo, ref, ocispec.MediaTypeImageManifest, img.manifest)
}

func (r *testRegistry) putManifest(repo, ref, mediaType string, raw []byte) response {
	r.t.Helper()
	return r.do("PUT", "/v2/"+repo+"/manifests/"+ref, raw, "Content-Type", mediaType)
}

// newIndex builds an OCI index of the given manifests.
func newIndex(t testing.TB, children ...ocispec.Descriptor) ([]byte, digest.Digest) {
	t.Helper()
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: children}
	idx.SchemaVersion = 2
	if idx.Manifests == nil {
		idx.Manifests = []ocispec.Descriptor{}
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	return raw, digest.FromBytes(raw)
}

// tags lists the tags of repo through the API.
func (r *testRegistry) tags(repo string) []string {
	r.t.Helper()
	resp := r.do("GET", "/v2/"+repo+"/tags/list", nil)
	if resp.status == http.StatusNotFound {
		return nil
	}
	wantStatus(r.t, resp, http.StatusOK)
	var tl struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(resp.body, &tl); err != nil {
		r.t.Fatal(err)
	}
	return tl.Tags
}

// blobFiles lists the files under blobs/ of the layout, as alg/hex.
func blobFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	root := filepath.Join(dir, "blobs")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

// tempFiles counts the files in the store's temp directory (.ferry/tmp),
// where uploads live until they are committed.
func tempFiles(t testing.TB, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, ".ferry", "tmp"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return len(entries)
}

func hasBlob(t testing.TB, st *store.Store, d digest.Digest) bool {
	t.Helper()
	_, err := st.Stat(context.Background(), d)
	return err == nil
}
