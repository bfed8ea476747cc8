package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// Tests of /work/shared/ROBUSTNESS.md, rows 23–31 (serve).

// ROBUSTNESS row 23: a blob upload with the wrong digest, whatever the
// method (post only, post+put, chunked, chunked with the last chunk on the
// PUT, streamed, a mount that falls back to an upload), is 400
// DIGEST_INVALID and nothing is stored: no blob under the claimed digest
// nor under the real one, no temp file left.
func TestRow23WrongDigestStoresNothing(t *testing.T) {
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		r := newTestRegistry(t, Options{})
		data := randomBytes(t, 3000)
		real := alg.FromBytes(data)
		claimed := alg.FromBytes(append(bytes.Clone(data), "oh no"...))
		q := "?digest=" + string(claimed)
		session := func() string {
			resp := r.do("POST", "/v2/app/blobs/uploads/", nil)
			wantStatus(t, resp, http.StatusAccepted)
			return resp.header.Get("Location")
		}
		for name, push := range map[string]func() response{
			"post only": func() response {
				return r.do("POST", "/v2/app/blobs/uploads/"+q, data)
			},
			"post+put": func() response {
				return r.do("PUT", session()+q, data)
			},
			"chunked": func() response {
				loc := session()
				wantStatus(t, r.do("PATCH", loc, data[:1000], "Content-Range", "0-999"), http.StatusAccepted)
				wantStatus(t, r.do("PATCH", loc, data[1000:], "Content-Range", "1000-2999"), http.StatusAccepted)
				return r.do("PUT", loc+q, nil)
			},
			"chunked, last chunk on PUT": func() response {
				loc := session()
				wantStatus(t, r.do("PATCH", loc, data[:1000], "Content-Range", "0-999"), http.StatusAccepted)
				return r.do("PUT", loc+q, data[1000:], "Content-Range", "1000-2999")
			},
			"streamed": func() response {
				loc := session()
				wantStatus(t, r.do("PATCH", loc, data), http.StatusAccepted)
				return r.do("PUT", loc+q, nil)
			},
			"mount": func() response {
				resp := r.do("POST", "/v2/app/blobs/uploads/?mount="+string(claimed)+"&from=other", nil)
				wantStatus(t, resp, http.StatusAccepted) // not held: an upload instead
				return r.do("PUT", resp.header.Get("Location")+q, data)
			},
		} {
			t.Run(string(alg)+" "+name, func(t *testing.T) {
				wantError(t, push(), http.StatusBadRequest, codeDigestInvalid)
				for _, d := range []digest.Digest{claimed, real} {
					wantError(t, r.do("HEAD", "/v2/app/blobs/"+string(d), nil), http.StatusNotFound, codeBlobUnknown)
				}
				if files := blobFiles(t, r.dir); len(files) != 0 {
					t.Errorf("blobs stored: %v", files)
				}
				if n := tempFiles(t, r.dir); n != 0 {
					t.Errorf("%d temp files left", n)
				}
			})
		}
	}

	// Content that does not match a blob the registry already holds is
	// refused too, and the held blob is untouched.
	r := newTestRegistry(t, Options{})
	good := randomBytes(t, 100)
	d := r.pushBlob("app", good)
	wantError(t, r.do("POST", "/v2/app/blobs/uploads/?digest="+string(d), randomBytes(t, 100)), http.StatusBadRequest, codeDigestInvalid)
	if got := r.do("GET", "/v2/app/blobs/"+string(d), nil); !bytes.Equal(got.body, good) {
		t.Error("the held blob changed")
	}
}

// ROBUSTNESS row 24: a chunk that overlaps what was received, leaves a gap,
// or (on the closing PUT) starts elsewhere is 416 with the session's real
// Range; nothing of it is written; GET on the session reports the real
// Range; the upload then finishes normally.
func TestRow24ChunkOutOfOrder(t *testing.T) {
	r := newTestRegistry(t, Options{})
	data := randomBytes(t, 3000)
	d := digest.FromBytes(data)
	loc := r.do("POST", "/v2/app/blobs/uploads/", nil).header.Get("Location")
	wantStatus(t, r.do("PATCH", loc, data[:1000], "Content-Range", "0-999"), http.StatusAccepted)
	for _, tc := range []struct {
		method, rng string
		body        []byte
	}{
		{"PATCH", "500-1499", data[500:1500]},   // overlap
		{"PATCH", "1500-2499", data[1500:2500]}, // gap
		{"PATCH", "0-999", data[:1000]},         // the first chunk again
		{"PUT", "2000-2999", data[2000:]},       // final chunk out of order
	} {
		path := loc
		if tc.method == "PUT" {
			path += "?digest=" + string(d)
		}
		resp := r.do(tc.method, path, tc.body, "Content-Range", tc.rng)
		wantError(t, resp, http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid)
		if resp.header.Get("Range") != "0-999" || resp.header.Get("Location") != loc {
			t.Errorf("%s %s: Range %q Location %q", tc.method, tc.rng, resp.header.Get("Range"), resp.header.Get("Location"))
		}
		status := r.do("GET", loc, nil)
		wantStatus(t, status, http.StatusNoContent)
		if status.header.Get("Range") != "0-999" {
			t.Errorf("after %s %s: GET reports Range %q", tc.method, tc.rng, status.header.Get("Range"))
		}
	}
	wantStatus(t, r.do("PATCH", loc, data[1000:2000], "Content-Range", "1000-1999"), http.StatusAccepted)
	wantStatus(t, r.do("PUT", loc+"?digest="+string(d), data[2000:], "Content-Range", "2000-2999"), http.StatusCreated)
	if got := r.do("GET", "/v2/app/blobs/"+string(d), nil); !bytes.Equal(got.body, data) {
		t.Fatal("blob differs after recovering from 416s")
	}
}

// ROBUSTNESS row 25: PUT manifests/sha256:baddigest, or a body that does
// not hash to the digest in the URL, is 400 DIGEST_INVALID and stores
// nothing.
func TestRow25ManifestDigestMismatch(t *testing.T) {
	r := newTestRegistry(t, Options{})
	img := newImage(t, 1)
	for _, b := range img.blobs {
		r.pushBlob("app", b)
	}
	before := blobFiles(t, r.dir)
	wantError(t, r.putManifest("app", "sha256:baddigest", ocispec.MediaTypeImageManifest, img.manifest), http.StatusBadRequest, codeDigestInvalid)
	other := digest.FromBytes(append(bytes.Clone(img.manifest), ' '))
	resp := r.putManifest("app", string(other), ocispec.MediaTypeImageManifest, img.manifest)
	wantError(t, resp, http.StatusBadRequest, codeDigestInvalid)
	if !strings.Contains(string(resp.body), string(img.digest)) {
		t.Errorf("the error does not name the real digest: %s", resp.body)
	}
	wantError(t, r.putManifest("app", string(digest.SHA512.FromBytes([]byte("x"))), ocispec.MediaTypeImageManifest, img.manifest), http.StatusBadRequest, codeDigestInvalid)
	if after := blobFiles(t, r.dir); !slices.Equal(before, after) {
		t.Errorf("blobs changed: %v -> %v", before, after)
	}
	wantError(t, r.do("GET", "/v2/app/manifests/"+string(img.digest), nil), http.StatusNotFound, codeManifestUnknown)
	if r.tags("app") != nil {
		t.Error("the repository exists after refused pushes")
	}
}

// ROBUSTNESS row 26 (CVE-2023-2253): a huge n in _catalog and tags/list is
// clamped, and memory does not grow with it.
func TestRow26PageSizeClamped(t *testing.T) {
	r := newTestRegistry(t, Options{MaxPageSize: 5})
	img := newImage(t, 1)
	wantStatus(t, r.pushImage("app", "t00", img), http.StatusCreated)
	for i := 1; i < 20; i++ {
		wantStatus(t, r.putManifest("app", fmt.Sprintf("t%02d", i), ocispec.MediaTypeImageManifest, img.manifest), http.StatusCreated)
		wantStatus(t, r.putManifest(fmt.Sprintf("repo%02d", i), "t", ocispec.MediaTypeImageManifest, img.manifest), http.StatusCreated)
	}
	for _, path := range []string{"/v2/_catalog?n=999999999", "/v2/app/tags/list?n=999999999", "/v2/app/tags/list?n=9223372036854775807"} {
		resp := r.do("GET", path, nil)
		wantStatus(t, resp, http.StatusOK)
		var body struct {
			Repositories []string `json:"repositories"`
			Tags         []string `json:"tags"`
		}
		if err := json.Unmarshal(resp.body, &body); err != nil {
			t.Fatal(err)
		}
		if n := len(body.Repositories) + len(body.Tags); n != 5 {
			t.Errorf("%s: %d results, want the clamp of 5", path, n)
		}
		if !strings.Contains(resp.header.Get("Link"), "n=5&") {
			t.Errorf("%s: Link %q", path, resp.header.Get("Link"))
		}
	}

	// Paging allocates nothing, whatever n.
	tags := make([]string, 100)
	for i := range tags {
		tags[i] = fmt.Sprintf("t%03d", i)
	}
	if allocs := testing.AllocsPerRun(100, func() { page(tags, "t010", 1<<62) }); allocs != 0 {
		t.Errorf("page allocates %v times", allocs)
	}
	// A whole request with a huge n allocates about as much as one with a
	// small n (with the default clamp of 1000).
	big := newTestRegistry(t, Options{})
	wantStatus(t, big.pushImage("app", "t", img), http.StatusCreated)
	measure := func(path string) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range 20 {
			rec := newRecorder()
			req, _ := http.NewRequest("GET", path, nil)
			big.srv.ServeHTTP(rec, req)
			if rec.code != http.StatusOK {
				t.Fatalf("%s: %d", path, rec.code)
			}
		}
		runtime.ReadMemStats(&after)
		return (after.TotalAlloc - before.TotalAlloc) / 20
	}
	small := measure("/v2/app/tags/list?n=10")
	huge := measure("/v2/app/tags/list?n=999999999")
	if huge > small+64<<10 {
		t.Errorf("a request with n=999999999 allocates %d bytes, one with n=10 %d", huge, small)
	}
}

// ROBUSTNESS row 27: a manifest whose blobs or child manifests are missing
// is 400 MANIFEST_BLOB_UNKNOWN naming them, and nothing is recorded; a
// missing subject is accepted and answered with OCI-Subject; foreign
// layers may be absent.
func TestRow27MissingReferences(t *testing.T) {
	r := newTestRegistry(t, Options{})
	img := newImage(t, 2)
	// Everything but the second layer.
	r.pushBlob("app", img.blobs[img.config.Digest])
	r.pushBlob("app", img.blobs[img.layers[0].Digest])
	resp := r.putManifest("app", "v1", ocispec.MediaTypeImageManifest, img.manifest)
	wantError(t, resp, http.StatusBadRequest, codeManifestBlobUnknown)
	if !strings.Contains(string(resp.body), string(img.layers[1].Digest)) {
		t.Errorf("the error does not name the missing layer: %s", resp.body)
	}
	if hasBlob(t, r.st, img.digest) || r.tags("app") != nil {
		t.Error("a refused manifest was stored")
	}
	// Missing config.
	noCfg := newImage(t, 1)
	r.pushBlob("app", noCfg.blobs[noCfg.layers[0].Digest])
	wantError(t, r.putManifest("app", "v2", ocispec.MediaTypeImageManifest, noCfg.manifest), http.StatusBadRequest, codeManifestBlobUnknown)
	// An index with a missing child.
	idxRaw, _ := newIndex(t, img.desc())
	wantError(t, r.putManifest("app", "idx", ocispec.MediaTypeImageIndex, idxRaw), http.StatusBadRequest, codeManifestBlobUnknown)

	// A missing subject is fine, and the referrer is listed.
	absent := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes([]byte("not pushed yet")), Size: 14}
	ref := newImage(t, 1, withSubject(absent), withArtifactType("application/vnd.example"))
	resp = r.pushImage("app", string(ref.digest), ref)
	wantStatus(t, resp, http.StatusCreated)
	if resp.header.Get("OCI-Subject") != string(absent.Digest) {
		t.Errorf("OCI-Subject %q", resp.header.Get("OCI-Subject"))
	}
	list := r.do("GET", "/v2/app/referrers/"+string(absent.Digest), nil)
	if !strings.Contains(string(list.body), string(ref.digest)) {
		t.Errorf("referrers of a missing subject: %s", list.body)
	}

	// Foreign (non-distributable) layers may be absent.
	cfg := []byte(`{"os":"windows","architecture":"amd64"}`)
	cfgD := r.pushBlob("app", cfg)
	foreign := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"size":%d,"digest":%q},"layers":[{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","size":123,"digest":%q,"urls":["https://example.com/layer"]}]}`,
		ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageConfig, len(cfg), cfgD, digest.FromBytes([]byte("foreign"))))
	wantStatus(t, r.putManifest("app", "windows", ocispec.MediaTypeImageManifest, foreign), http.StatusCreated)
}

// ROBUSTNESS row 28: repository names with "..", "%2e%2e", uppercase,
// empty components, or over 255 characters are 400 NAME_INVALID on every
// endpoint, and nothing is created anywhere.
func TestRow28InvalidNames(t *testing.T) {
	r := newTestRegistry(t, Options{})
	parent := filepath.Dir(r.dir)
	entries := func() []string {
		var out []string
		for _, d := range []string{parent, r.dir} {
			es, _ := os.ReadDir(d)
			for _, e := range es {
				out = append(out, filepath.Join(d, e.Name()))
			}
		}
		return out
	}
	before := entries()
	d := digest.FromBytes([]byte("x"))
	names := []string{
		"a/../b", "..", "../../etc", "a/./b",
		"%2e%2e/x", "a/%2e%2e/b", "a/%2E%2E", "%2e%2e%2fetc", "a%2fb",
		"Upper/case", "library/Nginx",
		"a//b", "-a", "a-", "a/", "_a", "a..b", "a___b", "a%00b", "a b",
		strings.Repeat("a", 256),
		strings.Repeat("a", 128) + "/" + strings.Repeat("b", 127),
	}
	for _, name := range names {
		for _, req := range []struct{ method, path string }{
			{"GET", "/v2/" + name + "/manifests/latest"},
			{"PUT", "/v2/" + name + "/manifests/latest"},
			{"DELETE", "/v2/" + name + "/manifests/" + string(d)},
			{"GET", "/v2/" + name + "/blobs/" + string(d)},
			{"HEAD", "/v2/" + name + "/blobs/" + string(d)},
			{"POST", "/v2/" + name + "/blobs/uploads/"},
			{"PATCH", "/v2/" + name + "/blobs/uploads/abc"},
			{"GET", "/v2/" + name + "/tags/list"},
			{"GET", "/v2/" + name + "/referrers/" + string(d)},
		} {
			resp := r.do(req.method, req.path, []byte("{}"))
			wantError(t, resp, http.StatusBadRequest, codeNameInvalid)
		}
	}
	wantError(t, r.do("POST", "/v2/ok/blobs/uploads/?mount="+string(d)+"&from=..%2Fx", nil), http.StatusBadRequest, codeNameInvalid)
	if after := entries(); !slices.Equal(before, after) {
		t.Errorf("files changed: %v -> %v", before, after)
	}
}

// ROBUSTNESS row 29: a GC between the blob uploads and the manifest PUT
// does not make the PUT fail: fresh blobs are protected by the grace
// period (the store's default when GCOptions.Grace is 0). Without a grace
// period GC does sweep them, and the PUT is then refused cleanly (400
// MANIFEST_BLOB_UNKNOWN, nothing recorded) rather than recorded with
// missing blobs: the check and the index update share GC's lock.
func TestRow29GCBetweenUploadAndManifest(t *testing.T) {
	ctx := context.Background()
	r := newTestRegistry(t, Options{})
	img := newImage(t, 3)
	for _, b := range img.blobs {
		r.pushBlob("app", b)
	}
	rep, err := r.st.GC(ctx, store.GCOptions{}) // default grace
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 0 {
		t.Fatalf("GC removed fresh blobs %v", rep.Removed)
	}
	wantStatus(t, r.putManifest("app", "v1", ocispec.MediaTypeImageManifest, img.manifest), http.StatusCreated)
	for d, b := range img.blobs {
		if got := r.do("GET", "/v2/app/blobs/"+string(d), nil); !bytes.Equal(got.body, b) {
			t.Fatalf("blob %s lost", d)
		}
	}

	// No grace: the unreferenced uploads go, and the PUT says so.
	img2 := newImage(t, 2)
	for _, b := range img2.blobs {
		r.pushBlob("app", b)
	}
	rep, err = r.st.GC(ctx, store.GCOptions{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != len(img2.blobs) {
		t.Fatalf("GC without grace removed %v, want the %d new blobs", rep.Removed, len(img2.blobs))
	}
	wantError(t, r.putManifest("app", "v2", ocispec.MediaTypeImageManifest, img2.manifest), http.StatusBadRequest, codeManifestBlobUnknown)
	wantError(t, r.do("GET", "/v2/app/manifests/v2", nil), http.StatusNotFound, codeManifestUnknown)
	// The first image, referenced, survived.
	wantStatus(t, r.do("GET", "/v2/app/manifests/v1", nil), http.StatusOK)
}

// ROBUSTNESS row 29, the other window: a client HEADs a blob, finds it and
// skips the upload, then pushes its manifest. A HEAD (and a mount) refresh
// the blob's time, so the grace period covers that window too even for a
// blob that has been lying unreferenced for long.
func TestRow29HeadAndMountRefreshGrace(t *testing.T) {
	ctx := context.Background()
	r := newTestRegistry(t, Options{})
	img := newImage(t, 2)
	for _, b := range img.blobs {
		r.pushBlob("app", b)
	}
	stale := r.pushBlob("app", randomBytes(t, 10))
	old := time.Now().Add(-2 * time.Hour)
	for _, f := range blobFiles(t, r.dir) {
		if err := os.Chtimes(filepath.Join(r.dir, "blobs", filepath.FromSlash(f)), old, old); err != nil {
			t.Fatal(err)
		}
	}
	// The client finds the layers and the config, by HEAD or by mount.
	wantStatus(t, r.do("HEAD", "/v2/app/blobs/"+string(img.layers[0].Digest), nil), http.StatusOK)
	wantStatus(t, r.do("HEAD", "/v2/app/blobs/"+string(img.layers[1].Digest), nil), http.StatusOK)
	wantStatus(t, r.do("POST", "/v2/other/blobs/uploads/?mount="+string(img.config.Digest)+"&from=app", nil), http.StatusCreated)
	rep, err := r.st.GC(ctx, store.GCOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Removed, []digest.Digest{stale}) {
		t.Fatalf("GC removed %v, want only the untouched %s", rep.Removed, stale)
	}
	wantStatus(t, r.putManifest("other", "v1", ocispec.MediaTypeImageManifest, img.manifest), http.StatusCreated)
}

// ROBUSTNESS row 30 (the registry's part; the store makes every write
// atomic): an upload whose client goes away mid-body, a cancelled, an
// expired and a shut-down session leave no blob and no temp file.
func TestRow30AbandonedUploadsLeaveNothing(t *testing.T) {
	r := newTestRegistry(t, Options{UploadTimeout: 200 * time.Millisecond})
	data := randomBytes(t, 100000)
	d := digest.FromBytes(data)

	// A monolithic POST cut off halfway.
	conn, err := net.Dial("tcp", r.host())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v2/app/blobs/uploads/?digest=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", d, len(data))
	_, _ = conn.Write(data[:50000])
	time.Sleep(50 * time.Millisecond)
	conn.Close()
	waitFor(t, "the cut-off upload's temp file to go", func() bool { return tempFiles(t, r.dir) == 0 })
	if hasBlob(t, r.st, d) {
		t.Fatal("a truncated upload became a blob")
	}

	// A session cut off mid-PATCH keeps what arrived (a client may resume)
	// until it expires.
	loc := r.do("POST", "/v2/app/blobs/uploads/", nil).header.Get("Location")
	conn, err = net.Dial("tcp", r.host())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", loc, len(data))
	_, _ = conn.Write(data[:30000])
	time.Sleep(50 * time.Millisecond)
	conn.Close()
	// (Polling the session would keep it alive: watch the temp files.)
	waitFor(t, "the session to expire", func() bool { return tempFiles(t, r.dir) == 0 })
	wantError(t, r.do("GET", loc, nil), http.StatusNotFound, codeBlobUploadUnknown)

	// Close cancels open sessions.
	r2 := newTestRegistry(t, Options{})
	for range 3 {
		loc := r2.do("POST", "/v2/app/blobs/uploads/", nil).header.Get("Location")
		wantStatus(t, r2.do("PATCH", loc, data[:1000]), http.StatusAccepted)
	}
	if n := tempFiles(t, r2.dir); n != 3 {
		t.Fatalf("%d temp files for 3 sessions", n)
	}
	if err := r2.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if n := tempFiles(t, r2.dir); n != 0 {
		t.Errorf("%d temp files after Close", n)
	}
	if files := blobFiles(t, r2.dir); len(files) != 0 {
		t.Errorf("blobs after Close: %v", files)
	}
	resp := r2.do("POST", "/v2/app/blobs/uploads/", nil)
	wantError(t, resp, http.StatusServiceUnavailable, codeUnknown)
}

func TestUploadLimit(t *testing.T) {
	r := newTestRegistry(t, Options{MaxUploads: 2})
	var locs []string
	for range 2 {
		resp := r.do("POST", "/v2/app/blobs/uploads/", nil)
		wantStatus(t, resp, http.StatusAccepted)
		locs = append(locs, resp.header.Get("Location"))
	}
	resp := r.do("POST", "/v2/app/blobs/uploads/", nil)
	wantError(t, resp, http.StatusTooManyRequests, codeTooManyRequests)
	if resp.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	wantStatus(t, r.do("DELETE", locs[0], nil), http.StatusNoContent)
	wantStatus(t, r.do("POST", "/v2/app/blobs/uploads/", nil), http.StatusAccepted)
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memRecorder is a minimal http.ResponseWriter for calling the handler
// directly.
type memRecorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func newRecorder() *memRecorder                    { return &memRecorder{header: http.Header{}, code: http.StatusOK} }
func (m *memRecorder) Header() http.Header         { return m.header }
func (m *memRecorder) Write(p []byte) (int, error) { return m.body.Write(p) }
func (m *memRecorder) WriteHeader(code int)        { m.code = code }
