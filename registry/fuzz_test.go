package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The fuzz targets call the handler in process, without a listener, so
// that thousands of requests a second reach the parsers. Inputs are capped
// at maxFuzzInput bytes: the fuzzer minimizes every input that finds new
// coverage with a number of runs that grows with the square of its size,
// and larger inputs kept it minimizing instead of fuzzing.
const maxFuzzInput = 1024

// call sends one request to h in process; headers are name, value pairs.
// A negative length sends the body as if chunked (no Content-Length).
func call(h http.Handler, method, target string, body []byte, length int64, headers ...string) response {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	req.ContentLength = length
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// FuzzContentRange: parseContentRange accepts exactly "<first>-<last>"
// with 0 <= first <= last (optionally "bytes " or "bytes=" before, and
// "/<total>" after), and an accepted range always has a length that
// int64 can hold, so a chunk's announced size is never negative
// (ROBUSTNESS row 24).
func FuzzContentRange(f *testing.F) {
	for _, s := range []string{"0-0", "0-1023", "bytes 0-9/10", "bytes=5-9/*", "10-5", "-1-5", "1-", "-", "", "0-9223372036854775807", " 7-8 ", "bytes 1-2-3"} {
		f.Add(s, int64(0), int64(9))
	}
	f.Fuzz(func(t *testing.T, s string, a, b int64) {
		if first, last, ok := parseContentRange(s); ok {
			if first < 0 || last < first || last-first+1 <= 0 {
				t.Fatalf("%q: accepted first %d, last %d: the chunk length %d is not positive", s, first, last, last-first+1)
			}
			if f2, l2, ok := parseContentRange(fmt.Sprintf("bytes %d-%d/*", first, last)); !ok || f2 != first || l2 != last {
				t.Fatalf("%q: %d-%d does not parse back: %d-%d %v", s, first, last, f2, l2, ok)
			}
		}
		first, last, ok := parseContentRange(fmt.Sprintf("%d-%d", a, b))
		want := a >= 0 && b >= a && b-a < math.MaxInt64
		if ok != want || (ok && (first != a || last != b)) {
			t.Fatalf("%d-%d: got %d-%d, ok %v; want ok %v", a, b, first, last, ok, want)
		}
	})
}

// FuzzChunkUpload: whatever Content-Range and body a PATCH brings, after
// an optional first chunk of up to three bytes, the session holds exactly
// the bytes the answer says: all of them after 202, none of the chunk
// after 416, and a GET on the session reports the same Range as the
// answer (ROBUSTNESS row 24). Finishing the upload with the digest of
// those bytes stores a blob that reads back as them.
//
// mode's two low bits are the size of the first chunk; bit 2 sends the
// chunk without Content-Length, as a chunked request does.
func FuzzChunkUpload(f *testing.F) {
	r := newTestRegistry(f, Options{})
	for _, s := range []struct {
		contentRange string
		body         string
		mode         byte
	}{
		{"0-2", "abc", 0}, {"bytes 0-2/3", "abc", 0}, {"bytes=3-5/*", "def", 3}, {"", "abc", 1},
		{"1-3", "abc", 0}, {"0-1", "abc", 0}, {"0-5", "abc", 4}, {"5-2", "", 0},
		{"0-9223372036854775807", "abc", 4}, {"2-9223372036854775807", "abc", 6}, {"x", "abc", 2},
	} {
		f.Add(s.contentRange, []byte(s.body), s.mode)
	}
	f.Fuzz(func(t *testing.T, contentRange string, body []byte, mode byte) {
		if len(contentRange)+len(body) > maxFuzzInput {
			return
		}
		srv := r.srv
		start := call(srv, "POST", "/v2/fuzz/blobs/uploads/", nil, 0)
		wantStatus(t, start, http.StatusAccepted)
		loc := start.header.Get("Location")
		prior := bytes.Repeat([]byte("p"), int(mode&3))
		if len(prior) > 0 {
			wantStatus(t, call(srv, "PATCH", loc, prior, int64(len(prior))), http.StatusAccepted)
		}
		length := int64(len(body))
		if mode&4 != 0 {
			length = -1
		}
		var headers []string
		if contentRange != "" {
			headers = []string{"Content-Range", contentRange}
		}
		resp := call(srv, "PATCH", loc, body, length, headers...)

		sent := append(append([]byte{}, prior...), body...)
		var held []byte // what the session must hold now
		switch resp.status {
		case http.StatusAccepted:
			if contentRange != "" {
				first, last, _ := parseContentRange(contentRange)
				if first != int64(len(prior)) || last-first+1 != int64(len(body)) {
					t.Fatalf("accepted a %d-byte chunk after %d bytes with Content-Range %q", len(body), len(prior), contentRange)
				}
			}
			held = sent
		case http.StatusRequestedRangeNotSatisfiable:
			wantError(t, resp, resp.status, codeBlobUploadInvalid)
			held = prior
		case http.StatusBadRequest:
			wantError(t, resp, resp.status, codeBlobUploadInvalid)
			held = nil // some of the chunk may have been kept: the Range says
		default:
			t.Fatalf("PATCH with Content-Range %q: status %d %s", contentRange, resp.status, resp.body)
		}
		rng := resp.header.Get("Range")
		if held != nil && rng != rangeHeader(int64(len(held))) {
			t.Fatalf("status %d with Range %q, but the session holds %d bytes", resp.status, rng, len(held))
		}
		status := call(srv, "GET", loc, nil, 0)
		wantStatus(t, status, http.StatusNoContent)
		if got := status.header.Get("Range"); got != rng {
			t.Fatalf("the answer said Range %q, GET on the session says %q", rng, got)
		}
		if held == nil {
			wantStatus(t, call(srv, "DELETE", loc, nil, 0), http.StatusNoContent)
			return
		}
		d := digest.FromBytes(held)
		wantStatus(t, call(srv, "PUT", loc+"?digest="+string(d), nil, 0), http.StatusCreated)
		blob := call(srv, "GET", "/v2/fuzz/blobs/"+string(d), nil, 0)
		if blob.status != http.StatusOK || !bytes.Equal(blob.body, held) {
			t.Fatalf("blob %s reads back as %d %q, want %q", d, blob.status, blob.body, held)
		}
		call(srv, "DELETE", "/v2/fuzz/blobs/"+string(d), nil, 0)
	})
}

// FuzzBlobRange: a GET of a blob with any Range header answers 200 with
// the whole blob, 206 with exactly the bytes its Content-Range names, or
// 416 with "Content-Range: bytes */<size>"; and a plain "bytes=<a>-<b>"
// that starts inside the blob always gets the 206 it asks for.
func FuzzBlobRange(f *testing.F) {
	r := newTestRegistry(f, Options{})
	var blobs [][]byte
	for _, n := range []int{0, 1, 10, 1000} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + n)
		}
		r.pushBlob("fuzz", data)
		blobs = append(blobs, data)
	}
	for _, s := range []string{"bytes=0-0", "bytes=5-", "bytes=-3", "bytes=3-1", "bytes=0-0,2-3", "items=0-1", "bytes=10-",
		"bytes=-0", "bytes= 1 - 2 ", "bytes=0-99999999999999999999", "bytes=999-999", "bytes=-9223372036854775808", ""} {
		f.Add(s, uint8(2))
		f.Add(s, uint8(3))
	}
	f.Add("bytes=0-", uint8(0))
	canonical := regexp.MustCompile(`^bytes=([0-9]{1,9})-([0-9]{1,9})$`)
	f.Fuzz(func(t *testing.T, rng string, which uint8) {
		if len(rng) > maxFuzzInput {
			return
		}
		data := blobs[int(which)%len(blobs)]
		size := int64(len(data))
		resp := call(r.srv, "GET", "/v2/fuzz/blobs/"+string(digest.FromBytes(data)), nil, 0, "Range", rng)
		cr := resp.header.Get("Content-Range")
		var first, last int64 = 0, size - 1
		switch resp.status {
		case http.StatusOK:
			if !bytes.Equal(resp.body, data) || cr != "" {
				t.Fatalf("Range %q: 200 with Content-Range %q and %d of %d bytes", rng, cr, len(resp.body), size)
			}
		case http.StatusPartialContent:
			var total int64
			if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &first, &last, &total); err != nil || total != size || first < 0 || last < first || last >= size {
				t.Fatalf("Range %q on %d bytes: 206 with Content-Range %q", rng, size, cr)
			}
			if !bytes.Equal(resp.body, data[first:last+1]) || resp.header.Get("Content-Length") != strconv.Itoa(len(resp.body)) {
				t.Fatalf("Range %q: Content-Range %q but %d bytes (Content-Length %s)", rng, cr, len(resp.body), resp.header.Get("Content-Length"))
			}
		case http.StatusRequestedRangeNotSatisfiable:
			if cr != fmt.Sprintf("bytes */%d", size) {
				t.Fatalf("Range %q: 416 with Content-Range %q", rng, cr)
			}
		default:
			t.Fatalf("Range %q: status %d", rng, resp.status)
		}
		if m := canonical.FindStringSubmatch(rng); m != nil {
			a, _ := strconv.ParseInt(m[1], 10, 64)
			b, _ := strconv.ParseInt(m[2], 10, 64)
			if a <= b && a < size && (resp.status != http.StatusPartialContent || first != a || last != min(b, size-1)) {
				t.Fatalf("Range %q on %d bytes: status %d with Content-Range %q", rng, size, resp.status, cr)
			}
		}
	})
}

// FuzzPutManifest: a manifest PUT, whatever its body and Content-Type,
// is answered 201, or 4xx with the spec's error body and nothing stored.
// A stored manifest reads back byte for byte, is an image or an index but
// not both (ROBUSTNESS row 7), holds only valid digests (row 8), and
// everything it references but foreign layers is in the registry (row 27).
func FuzzPutManifest(f *testing.F) {
	r := newTestRegistry(f, Options{})
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := []byte("a layer")
	cd, ld := r.pushBlob("fuzz", config), r.pushBlob("fuzz", layer)
	image := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageConfig, cd, len(config), ocispec.MediaTypeImageLayerGzip, ld, len(layer))
	wantStatus(f, r.putManifest("fuzz", "base", ocispec.MediaTypeImageManifest, []byte(image)), http.StatusCreated)
	md := digest.FromString(image)
	index := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"digest":%q,"size":%d,"platform":{"architecture":"amd64","os":"linux"}}]}`,
		ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest, md, len(image))
	foreign := strings.Replace(image, `"layers":[`, `"layers":[{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"sha256:`+strings.Repeat("f", 64)+`","size":1,"urls":["https://example.com/l"]},`, 1)
	referrer := strings.Replace(image, `"layers":[`, `"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:`+strings.Repeat("e", 64)+`","size":9},"layers":[`, 1)
	for _, body := range []string{image, index, foreign, referrer,
		strings.Replace(image, `"layers":[`, `"manifests":[],"layers":[`, 1), // both image and index
		strings.Replace(index, `"manifests":[`, `"config":null,"manifests":[`, 1),
		strings.Replace(image, string(ld), "sha256:"+strings.Repeat("0", 64), 1), // a missing layer
		strings.Replace(image, string(cd), "sha256:../../x", 1),
		`{"schemaVersion":2,"manifests":[]}`, `{"schemaVersion":1}`, `[]`, ``,
	} {
		f.Add([]byte(body), "")
		f.Add([]byte(body), ocispec.MediaTypeImageManifest)
		f.Add([]byte(body), ocispec.MediaTypeImageIndex+"; charset=utf-8")
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		if len(body)+len(contentType) > maxFuzzInput {
			return
		}
		d := digest.FromBytes(body)
		path := "/v2/fuzz/manifests/" + string(d)
		existed := call(r.srv, "HEAD", path, nil, 0).status == http.StatusOK
		resp := call(r.srv, "PUT", path, body, int64(len(body)), "Content-Type", contentType)
		if resp.status != http.StatusCreated {
			if resp.status >= 500 {
				t.Fatalf("status %d %s", resp.status, resp.body)
			}
			wantError(t, resp, resp.status, errorCode(t, resp))
			if !existed && call(r.srv, "HEAD", path, nil, 0).status != http.StatusNotFound {
				t.Fatalf("a refused manifest (%d %s) is stored", resp.status, resp.body)
			}
			return
		}
		if got := resp.header.Get("Docker-Content-Digest"); got != string(d) {
			t.Fatalf("stored as %q, the body hashes to %s", got, d)
		}
		back := call(r.srv, "GET", path, nil, 0)
		if back.status != http.StatusOK || !bytes.Equal(back.body, body) {
			t.Fatalf("GET answers %d %q, PUT stored %q", back.status, back.body, body)
		}
		checkStoredManifest(t, r, body, back.header.Get("Content-Type"))
		if !existed {
			wantStatus(t, call(r.srv, "DELETE", path, nil, 0), http.StatusAccepted)
		}
	})
}

// errorCode returns the code of a spec error body, failing on anything
// else.
func errorCode(t *testing.T, resp response) string {
	var body struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil || len(body.Errors) != 1 {
		t.Fatalf("status %d with body %q, not the spec's error body", resp.status, resp.body)
	}
	return body.Errors[0].Code
}

// checkStoredManifest checks that a manifest the registry accepted as
// mediaType is unambiguous, holds only valid digests, and that what it
// references is stored.
func checkStoredManifest(t *testing.T, r *testRegistry, body []byte, mediaType string) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		t.Fatalf("stored a manifest that is not a JSON object: %v", err)
	}
	present := func(k string) bool { v, ok := fields[k]; return ok && string(v) != "null" }
	var doc struct {
		Config    *ocispec.Descriptor
		Layers    []ocispec.Descriptor
		Manifests []ocispec.Descriptor
		Subject   *ocispec.Descriptor
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	var refs []ocispec.Descriptor
	switch mediaType {
	case ocispec.MediaTypeImageManifest, mediaTypeDockerManifest:
		if present("manifests") || doc.Config == nil {
			t.Fatalf("stored %s as an image: %s", body, mediaType)
		}
		refs = append(doc.Layers, *doc.Config)
	case ocispec.MediaTypeImageIndex, mediaTypeDockerManifestList:
		if present("config") || present("layers") || doc.Config != nil || len(doc.Layers) > 0 {
			t.Fatalf("stored %s as an index: %s", body, mediaType)
		}
		refs = doc.Manifests
	default:
		t.Fatalf("stored with media type %q", mediaType)
	}
	if doc.Subject != nil {
		if err := doc.Subject.Digest.Validate(); err != nil {
			t.Fatalf("stored a subject digest %q", doc.Subject.Digest)
		}
	}
	for _, ref := range refs {
		if err := ref.Digest.Validate(); err != nil {
			t.Fatalf("stored a reference to %q: %v", ref.Digest, err)
		}
		if !isForeign(ref) && !hasBlob(t, r.st, ref.Digest) {
			t.Fatalf("stored a manifest whose %s %s is missing", ref.MediaType, ref.Digest)
		}
	}
}
