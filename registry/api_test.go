package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

func TestPing(t *testing.T) {
	r := newTestRegistry(t, Options{})
	for _, p := range []string{"/v2/", "/v2"} {
		resp := r.do("GET", p, nil)
		wantStatus(t, resp, http.StatusOK)
		if got := resp.header.Get("Docker-Distribution-API-Version"); got != "registry/2.0" {
			t.Errorf("GET %s: Docker-Distribution-API-Version %q", p, got)
		}
		if string(resp.body) != "{}" {
			t.Errorf("GET %s: body %q", p, resp.body)
		}
	}
	wantStatus(t, r.do("HEAD", "/v2/", nil), http.StatusOK)
}

func TestUnknownEndpointsAndMethods(t *testing.T) {
	r := newTestRegistry(t, Options{})
	wantError(t, r.do("GET", "/v3/", nil), http.StatusNotFound, codeUnsupported)
	wantError(t, r.do("GET", "/v2/library/nginx", nil), http.StatusNotFound, codeUnsupported)
	wantError(t, r.do("GET", "/v2/library/nginx/manifests/", nil), http.StatusNotFound, codeUnsupported)
	resp := r.do("POST", "/v2/library/nginx/manifests/latest", []byte("{}"))
	wantError(t, resp, http.StatusMethodNotAllowed, codeUnsupported)
	if allow := resp.header.Get("Allow"); !strings.Contains(allow, "PUT") {
		t.Errorf("Allow %q", allow)
	}
	wantError(t, r.do("PUT", "/v2/_catalog", nil), http.StatusMethodNotAllowed, codeUnsupported)
	wantError(t, r.do("GET", "/v2/a/blobs/uploads/", nil), http.StatusMethodNotAllowed, codeUnsupported)
}

func TestBlobPushPostOnly(t *testing.T) {
	r := newTestRegistry(t, Options{})
	data := randomBytes(t, 3000)
	d := digest.FromBytes(data)
	resp := r.do("POST", "/v2/app/blobs/uploads/?digest="+string(d), data, "Content-Type", "application/octet-stream")
	wantStatus(t, resp, http.StatusCreated)
	if loc := resp.header.Get("Location"); loc != "/v2/app/blobs/"+string(d) {
		t.Errorf("Location %q", loc)
	}
	if got := resp.header.Get("Docker-Content-Digest"); got != string(d) {
		t.Errorf("Docker-Content-Digest %q", got)
	}
	get := r.do("GET", "/v2/app/blobs/"+string(d), nil)
	wantStatus(t, get, http.StatusOK)
	if !bytes.Equal(get.body, data) {
		t.Fatal("GET returned other bytes")
	}
	if get.header.Get("Docker-Content-Digest") != string(d) || get.header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("GET headers %v", get.header)
	}
	head := r.do("HEAD", "/v2/app/blobs/"+string(d), nil)
	wantStatus(t, head, http.StatusOK)
	if head.header.Get("Content-Length") != "3000" || head.header.Get("Docker-Content-Digest") != string(d) || len(head.body) != 0 {
		t.Errorf("HEAD: headers %v body %d bytes", head.header, len(head.body))
	}
	// Blobs are shared by all repositories.
	wantStatus(t, r.do("HEAD", "/v2/other/repo/blobs/"+string(d), nil), http.StatusOK)
}

func TestBlobPushPostPut(t *testing.T) {
	r := newTestRegistry(t, Options{})
	data := randomBytes(t, 5000)
	d := digest.FromBytes(data)
	post := r.do("POST", "/v2/app/blobs/uploads/", nil)
	wantStatus(t, post, http.StatusAccepted)
	loc := post.header.Get("Location")
	if !strings.HasPrefix(loc, "/v2/app/blobs/uploads/") || post.header.Get("Docker-Upload-UUID") == "" || post.header.Get("Range") != "0-0" {
		t.Fatalf("POST headers %v", post.header)
	}
	if !strings.HasSuffix(loc, post.header.Get("Docker-Upload-UUID")) {
		t.Errorf("Location %q does not end with the upload id", loc)
	}
	put := r.do("PUT", loc+"?digest="+string(d), data, "Content-Type", "application/octet-stream")
	wantStatus(t, put, http.StatusCreated)
	if put.header.Get("Location") != "/v2/app/blobs/"+string(d) || put.header.Get("Docker-Content-Digest") != string(d) {
		t.Errorf("PUT headers %v", put.header)
	}
	if got := r.do("GET", "/v2/app/blobs/"+string(d), nil); !bytes.Equal(got.body, data) {
		t.Fatal("blob differs")
	}
	// The session is finished.
	wantError(t, r.do("GET", loc, nil), http.StatusNotFound, codeBlobUploadUnknown)
	if n := tempFiles(t, r.dir); n != 0 {
		t.Errorf("%d temp files left", n)
	}
}

func TestBlobPushChunked(t *testing.T) {
	r := newTestRegistry(t, Options{})
	data := randomBytes(t, 10000)
	d := digest.FromBytes(data)
	loc := r.do("POST", "/v2/app/blobs/uploads/", nil).header.Get("Location")
	for _, c := range [][2]int{{0, 3999}, {4000, 7999}} {
		resp := r.do("PATCH", loc, data[c[0]:c[1]+1], "Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("%d-%d", c[0], c[1]))
		wantStatus(t, resp, http.StatusAccepted)
		if got := resp.header.Get("Range"); got != fmt.Sprintf("0-%d", c[1]) {
			t.Errorf("Range %q after chunk %v", got, c)
		}
		loc = resp.header.Get("Location")
	}
	status := r.do("GET", loc, nil)
	wantStatus(t, status, http.StatusNoContent)
	if status.header.Get("Range") != "0-7999" || status.header.Get("Location") != loc {
		t.Errorf("GET session headers %v", status.header)
	}
	// The last chunk rides on the closing PUT.
	put := r.do("PUT", loc+"?digest="+string(d), data[8000:], "Content-Type", "application/octet-stream", "Content-Range", "8000-9999")
	wantStatus(t, put, http.StatusCreated)
	if got := r.do("GET", "/v2/app/blobs/"+string(d), nil); !bytes.Equal(got.body, data) {
		t.Fatal("blob differs")
	}
}

func TestBlobPushStreamed(t *testing.T) {
	r := newTestRegistry(t, Options{})
	data := randomBytes(t, 70000)
	d := digest.FromBytes(data)
	loc := r.do("POST", "/v2/app/blobs/uploads/", nil).header.Get("Location")
	resp := r.do("PATCH", loc, data, "Content-Type", "application/octet-stream")
	wantStatus(t, resp, http.StatusAccepted)
	if resp.header.Get("Range") != "0-69999" {
		t.Errorf("Range %q", resp.header.Get("Range"))
	}
	wantStatus(t, r.do("PUT", resp.header.Get("Location")+"?digest="+string(d), nil), http.StatusCreated)
	if !hasBlob(t, r.st, d) {
		t.Fatal("blob not stored")
	}
}

func TestBlobUploadCancel(t *testing.T) {
	r := newTestRegistry(t, Options{})
	loc := r.do("POST", "/v2/app/blobs/uploads/", nil).header.Get("Location")
	wantStatus(t, r.do("PATCH", loc, randomBytes(t, 100)), http.StatusAccepted)
	if n := tempFiles(t, r.dir); n != 1 {
		t.Fatalf("%d temp files during the upload, want 1", n)
	}
	wantStatus(t, r.do("DELETE", loc, nil), http.StatusNoContent)
	wantError(t, r.do("GET", loc, nil), http.StatusNotFound, codeBlobUploadUnknown)
	wantError(t, r.do("PATCH", loc, []byte("x")), http.StatusNotFound, codeBlobUploadUnknown)
	wantError(t, r.do("DELETE", loc, nil), http.StatusNotFound, codeBlobUploadUnknown)
	if n := tempFiles(t, r.dir); n != 0 {
		t.Errorf("%d temp files after cancel", n)
	}
}

func TestUploadSessionErrors(t *testing.T) {
	r := newTestRegistry(t, Options{})
	loc := r.do("POST", "/v2/app/blobs/uploads/", nil).header.Get("Location")
	id := loc[strings.LastIndexByte(loc, '/')+1:]
	// A session belongs to its repository.
	wantError(t, r.do("GET", "/v2/other/blobs/uploads/"+id, nil), http.StatusNotFound, codeBlobUploadUnknown)
	wantError(t, r.do("GET", "/v2/app/blobs/uploads/nosuchupload", nil), http.StatusNotFound, codeBlobUploadUnknown)
	// Closing without or with a malformed digest keeps the session.
	wantError(t, r.do("PUT", loc, nil), http.StatusBadRequest, codeDigestInvalid)
	wantError(t, r.do("PUT", loc+"?digest=sha256:abc", nil), http.StatusBadRequest, codeDigestInvalid)
	wantError(t, r.do("PATCH", loc, []byte("abc"), "Content-Range", "zero-two"), http.StatusBadRequest, codeBlobUploadInvalid)
	wantError(t, r.do("PATCH", loc, []byte("abc"), "Content-Range", "0-9"), http.StatusBadRequest, codeBlobUploadInvalid)
	wantStatus(t, r.do("GET", loc, nil), http.StatusNoContent)
	wantStatus(t, r.do("PUT", loc+"?digest="+string(digest.FromBytes(nil)), nil), http.StatusCreated)
}

func TestUploadDigestAlgorithm(t *testing.T) {
	r := newTestRegistry(t, Options{})
	data := randomBytes(t, 2000)
	d := digest.SHA512.FromBytes(data)
	post := r.do("POST", "/v2/app/blobs/uploads/?digest-algorithm=sha512", nil)
	wantStatus(t, post, http.StatusAccepted)
	loc := post.header.Get("Location")
	wantStatus(t, r.do("PATCH", loc, data), http.StatusAccepted)
	wantStatus(t, r.do("PUT", loc+"?digest="+string(d), nil), http.StatusCreated)
	got := r.do("GET", "/v2/app/blobs/"+string(d), nil)
	wantStatus(t, got, http.StatusOK)
	if !bytes.Equal(got.body, data) || got.header.Get("Docker-Content-Digest") != string(d) {
		t.Fatal("sha512 blob differs")
	}
	if !slices.Contains(blobFiles(t, r.dir), "sha512/"+d.Encoded()) {
		t.Errorf("blob not stored under blobs/sha512: %v", blobFiles(t, r.dir))
	}
	wantError(t, r.do("POST", "/v2/app/blobs/uploads/?digest-algorithm=md5", nil), http.StatusBadRequest, codeDigestInvalid)
}

func TestBlobMount(t *testing.T) {
	r := newTestRegistry(t, Options{})
	d := r.pushBlob("source", randomBytes(t, 100))
	for _, q := range []string{"?mount=" + string(d) + "&from=source", "?mount=" + string(d)} {
		resp := r.do("POST", "/v2/target/blobs/uploads/"+q, nil)
		wantStatus(t, resp, http.StatusCreated)
		if resp.header.Get("Location") != "/v2/target/blobs/"+string(d) || resp.header.Get("Docker-Content-Digest") != string(d) {
			t.Errorf("mount %s: headers %v", q, resp.header)
		}
	}
	// A blob the registry does not hold: a normal session instead.
	missing := digest.FromBytes([]byte("missing"))
	resp := r.do("POST", "/v2/target/blobs/uploads/?mount="+string(missing)+"&from=source", nil)
	wantStatus(t, resp, http.StatusAccepted)
	wantStatus(t, r.do("PUT", resp.header.Get("Location")+"?digest="+string(missing), []byte("missing")), http.StatusCreated)
	wantError(t, r.do("POST", "/v2/target/blobs/uploads/?mount=sha256:nothex&from=source", nil), http.StatusBadRequest, codeDigestInvalid)
	wantError(t, r.do("POST", "/v2/target/blobs/uploads/?mount="+string(d)+"&from=../etc", nil), http.StatusBadRequest, codeNameInvalid)
}

func TestBlobRanges(t *testing.T) {
	r := newTestRegistry(t, Options{})
	data := randomBytes(t, 2048)
	d := r.pushBlob("app", data)
	path := "/v2/app/blobs/" + string(d)
	for _, tc := range []struct {
		rng          string
		status       int
		first, last  int // inclusive, for 206
		contentRange string
	}{
		{"bytes=500-1499", 206, 500, 1499, "bytes 500-1499/2048"},
		{"bytes=500-", 206, 500, 2047, "bytes 500-2047/2048"},
		{"bytes=-500", 206, 1548, 2047, "bytes 1548-2047/2048"},
		{"bytes=2000-5000", 206, 2000, 2047, "bytes 2000-2047/2048"},
		{"bytes=0-0", 206, 0, 0, "bytes 0-0/2048"},
		{"bytes=-5000", 206, 0, 2047, "bytes 0-2047/2048"},
		{"bytes=500-0", 416, 0, 0, "bytes */2048"},
		{"bytes=5000-10000", 416, 0, 0, "bytes */2048"},
		{"bytes=2048-", 416, 0, 0, "bytes */2048"},
		{"bytes=-0", 416, 0, 0, "bytes */2048"},
		{"bytes=0-1,5-9", 200, 0, 2047, ""}, // several ranges: the whole blob
		{"items=0-1", 200, 0, 2047, ""},
	} {
		resp := r.do("GET", path, nil, "Range", tc.rng)
		if resp.status != tc.status {
			t.Errorf("%s: status %d, want %d", tc.rng, resp.status, tc.status)
			continue
		}
		if got := resp.header.Get("Content-Range"); got != tc.contentRange {
			t.Errorf("%s: Content-Range %q, want %q", tc.rng, got, tc.contentRange)
		}
		if tc.status == 416 {
			wantError(t, resp, 416, codeUnsupported)
			continue
		}
		if !bytes.Equal(resp.body, data[tc.first:tc.last+1]) {
			t.Errorf("%s: got %d bytes, not bytes %d-%d", tc.rng, len(resp.body), tc.first, tc.last)
		}
		if cl := resp.header.Get("Content-Length"); cl != strconv.Itoa(tc.last-tc.first+1) {
			t.Errorf("%s: Content-Length %s", tc.rng, cl)
		}
	}
	// The digest is a strong ETag.
	etag := r.do("HEAD", path, nil).header.Get("ETag")
	wantStatus(t, r.do("GET", path, nil, "If-None-Match", etag), http.StatusNotModified)
}

func TestBlobErrors(t *testing.T) {
	r := newTestRegistry(t, Options{})
	missing := digest.FromBytes([]byte("nothing"))
	wantError(t, r.do("GET", "/v2/app/blobs/"+string(missing), nil), http.StatusNotFound, codeBlobUnknown)
	wantError(t, r.do("HEAD", "/v2/app/blobs/"+string(missing), nil), http.StatusNotFound, codeBlobUnknown)
	wantError(t, r.do("DELETE", "/v2/app/blobs/"+string(missing), nil), http.StatusNotFound, codeBlobUnknown)
	for _, bad := range []string{
		"sha256:..%2F..%2Fx",
		"sha256:" + strings.ToUpper(missing.Encoded()),
		"sha256:abc",
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha384:" + strings.Repeat("a", 96),
		"latest",
	} {
		wantError(t, r.do("GET", "/v2/app/blobs/"+bad, nil), http.StatusBadRequest, codeDigestInvalid)
	}
}

func TestBlobDelete(t *testing.T) {
	r := newTestRegistry(t, Options{})
	d := r.pushBlob("app", randomBytes(t, 100))
	wantStatus(t, r.do("DELETE", "/v2/app/blobs/"+string(d), nil), http.StatusAccepted)
	wantError(t, r.do("HEAD", "/v2/app/blobs/"+string(d), nil), http.StatusNotFound, codeBlobUnknown)
	wantError(t, r.do("DELETE", "/v2/app/blobs/"+string(d), nil), http.StatusNotFound, codeBlobUnknown)

	// A blob a manifest uses, in any repository, stays.
	img := newImage(t, 2)
	wantStatus(t, r.pushImage("other", "v1", img), http.StatusCreated)
	for _, used := range []digest.Digest{img.layers[1].Digest, img.config.Digest, img.digest} {
		wantError(t, r.do("DELETE", "/v2/app/blobs/"+string(used), nil), http.StatusMethodNotAllowed, codeUnsupported)
		if !hasBlob(t, r.st, used) {
			t.Fatalf("blob %s in use was deleted", used)
		}
	}
	// Once the manifest is gone, its blobs can go.
	wantStatus(t, r.do("DELETE", "/v2/other/manifests/"+string(img.digest), nil), http.StatusAccepted)
	wantStatus(t, r.do("DELETE", "/v2/app/blobs/"+string(img.layers[1].Digest), nil), http.StatusAccepted)
}

func TestManifestPushPullDelete(t *testing.T) {
	r := newTestRegistry(t, Options{})
	img := newImage(t, 2)
	put := r.pushImage("library/app", "1.0", img)
	wantStatus(t, put, http.StatusCreated)
	if put.header.Get("Location") != "/v2/library/app/manifests/"+string(img.digest) || put.header.Get("Docker-Content-Digest") != string(img.digest) {
		t.Errorf("PUT headers %v", put.header)
	}
	if put.header.Get("OCI-Subject") != "" {
		t.Errorf("OCI-Subject %q for a manifest without subject", put.header.Get("OCI-Subject"))
	}
	for _, ref := range []string{"1.0", string(img.digest)} {
		get := r.do("GET", "/v2/library/app/manifests/"+ref, nil, "Accept", ocispec.MediaTypeImageManifest)
		wantStatus(t, get, http.StatusOK)
		if !bytes.Equal(get.body, img.manifest) {
			t.Errorf("GET %s: other bytes", ref)
		}
		if get.header.Get("Content-Type") != ocispec.MediaTypeImageManifest || get.header.Get("Docker-Content-Digest") != string(img.digest) {
			t.Errorf("GET %s: headers %v", ref, get.header)
		}
		head := r.do("HEAD", "/v2/library/app/manifests/"+ref, nil)
		wantStatus(t, head, http.StatusOK)
		if head.header.Get("Content-Length") != strconv.Itoa(len(img.manifest)) || len(head.body) != 0 {
			t.Errorf("HEAD %s: headers %v", ref, head.header)
		}
	}
	// Moving the tag keeps the old manifest reachable by digest.
	img2 := newImage(t, 1)
	wantStatus(t, r.pushImage("library/app", "1.0", img2), http.StatusCreated)
	if got := r.do("GET", "/v2/library/app/manifests/1.0", nil); !bytes.Equal(got.body, img2.manifest) {
		t.Error("the tag did not move")
	}
	wantStatus(t, r.do("GET", "/v2/library/app/manifests/"+string(img.digest), nil), http.StatusOK)

	// Deleting the tag keeps the manifest.
	wantStatus(t, r.do("DELETE", "/v2/library/app/manifests/1.0", nil), http.StatusAccepted)
	wantError(t, r.do("GET", "/v2/library/app/manifests/1.0", nil), http.StatusNotFound, codeManifestUnknown)
	wantError(t, r.do("DELETE", "/v2/library/app/manifests/1.0", nil), http.StatusNotFound, codeManifestUnknown)
	wantStatus(t, r.do("GET", "/v2/library/app/manifests/"+string(img2.digest), nil), http.StatusOK)

	// Deleting by digest removes the manifest and its tags in the repository.
	wantStatus(t, r.putManifest("library/app", "2.0", ocispec.MediaTypeImageManifest, img2.manifest), http.StatusCreated)
	wantStatus(t, r.putManifest("library/app", "2.1", ocispec.MediaTypeImageManifest, img2.manifest), http.StatusCreated)
	wantStatus(t, r.do("DELETE", "/v2/library/app/manifests/"+string(img2.digest), nil), http.StatusAccepted)
	for _, ref := range []string{"2.0", "2.1", string(img2.digest)} {
		wantError(t, r.do("GET", "/v2/library/app/manifests/"+ref, nil), http.StatusNotFound, codeManifestUnknown)
	}
	wantError(t, r.do("DELETE", "/v2/library/app/manifests/"+string(img2.digest), nil), http.StatusNotFound, codeManifestUnknown)
	if tags := r.tags("library/app"); len(tags) != 0 {
		t.Errorf("tags %v after deletes", tags)
	}
	// Other errors.
	wantError(t, r.do("GET", "/v2/library/app/manifests/sha256:baddigeststring", nil), http.StatusBadRequest, codeDigestInvalid)
	wantError(t, r.do("GET", "/v2/library/app/manifests/-notatag", nil), http.StatusNotFound, codeManifestUnknown)
}

func TestManifestRepositoryMembership(t *testing.T) {
	r := newTestRegistry(t, Options{})
	img := newImage(t, 1)
	wantStatus(t, r.pushImage("team-b/app", string(img.digest), img), http.StatusCreated)
	wantStatus(t, r.pushImage("team-a/app", "x", newImage(t, 1)), http.StatusCreated)
	// Pushed by digest to B only: unknown in A, known in B.
	wantError(t, r.do("GET", "/v2/team-a/app/manifests/"+string(img.digest), nil), http.StatusNotFound, codeManifestUnknown)
	wantError(t, r.do("HEAD", "/v2/team-a/app/manifests/"+string(img.digest), nil), http.StatusNotFound, codeManifestUnknown)
	wantError(t, r.do("DELETE", "/v2/team-a/app/manifests/"+string(img.digest), nil), http.StatusNotFound, codeManifestUnknown)
	wantStatus(t, r.do("GET", "/v2/team-b/app/manifests/"+string(img.digest), nil), http.StatusOK)
	// B exists with no tags.
	resp := r.do("GET", "/v2/team-b/app/tags/list", nil)
	wantStatus(t, resp, http.StatusOK)
	if !strings.Contains(string(resp.body), `"tags":[]`) {
		t.Errorf("tags of a repository without tags: %s", resp.body)
	}
	// The index.json entry that records it.
	idx, err := r.st.Index(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range idx.Manifests {
		if e.Digest == img.digest && e.Annotations[RepositoryAnnotation] == "team-b/app" && e.Annotations[ocispec.AnnotationRefName] == "" {
			found = true
		}
	}
	if !found {
		t.Errorf("no membership entry in index.json: %+v", idx.Manifests)
	}
	// GC keeps a manifest pushed by digest.
	if _, err := r.st.GC(context.Background(), store.GCOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, r.do("GET", "/v2/team-b/app/manifests/"+string(img.digest), nil), http.StatusOK)
	wantStatus(t, r.do("GET", "/v2/team-b/app/blobs/"+string(img.layers[0].Digest), nil), http.StatusOK)
}

func TestManifestMediaTypes(t *testing.T) {
	r := newTestRegistry(t, Options{})
	img := newImage(t, 1)
	wantStatus(t, r.pushImage("app", "image", img), http.StatusCreated)

	idxRaw, idxDigest := newIndex(t, img.desc())
	dockerCfg := []byte(`{"architecture":"arm64","os":"linux"}`)
	cfgDigest := r.pushBlob("app", dockerCfg)
	dockerRaw := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%d,"digest":%q},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":%d,"digest":%q}]}`,
		mediaTypeDockerManifest, len(dockerCfg), cfgDigest, img.layers[0].Size, img.layers[0].Digest))
	listRaw := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"size":%d,"digest":%q,"platform":{"architecture":"arm64","os":"linux"}}]}`,
		mediaTypeDockerManifestList, mediaTypeDockerManifest, len(dockerRaw), digest.FromBytes(dockerRaw)))
	artifactCfg := []byte("{}")
	r.pushBlob("app", artifactCfg)
	artifactRaw := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":"application/vnd.example.sbom","config":{"mediaType":"application/vnd.oci.empty.v1+json","size":2,"digest":%q},"layers":[{"mediaType":"application/vnd.example.sbom","size":%d,"digest":%q}]}`,
		ocispec.MediaTypeImageManifest, digest.FromBytes(artifactCfg), img.layers[0].Size, img.layers[0].Digest))
	for _, tc := range []struct {
		tag, mediaType string
		raw            []byte
	}{
		{"index", ocispec.MediaTypeImageIndex, idxRaw},
		{"docker", mediaTypeDockerManifest, dockerRaw},
		{"dockerlist", mediaTypeDockerManifestList, listRaw},
		{"artifact", ocispec.MediaTypeImageManifest, artifactRaw},
	} {
		wantStatus(t, r.putManifest("app", tc.tag, tc.mediaType+"; charset=utf-8", tc.raw), http.StatusCreated)
		for _, ref := range []string{tc.tag, string(digest.FromBytes(tc.raw))} {
			get := r.do("GET", "/v2/app/manifests/"+ref, nil)
			wantStatus(t, get, http.StatusOK)
			if get.header.Get("Content-Type") != tc.mediaType || !bytes.Equal(get.body, tc.raw) {
				t.Errorf("%s: Content-Type %q, same bytes %v", ref, get.header.Get("Content-Type"), bytes.Equal(get.body, tc.raw))
			}
		}
	}
	if got := r.do("GET", "/v2/app/manifests/"+string(idxDigest), nil); got.status != http.StatusOK {
		t.Errorf("index by digest: %d", got.status)
	}
}

func TestManifestInvalid(t *testing.T) {
	r := newTestRegistry(t, Options{})
	img := newImage(t, 1)
	for _, b := range img.blobs {
		r.pushBlob("app", b)
	}
	cfg, layer := img.config, img.layers[0]
	desc := func(d ocispec.Descriptor) string {
		return fmt.Sprintf(`{"mediaType":%q,"size":%d,"digest":%q}`, d.MediaType, d.Size, d.Digest)
	}
	manifest := func(extra string) []byte {
		return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":%s,"layers":[%s]%s}`, ocispec.MediaTypeImageManifest, desc(cfg), desc(layer), extra))
	}
	for _, tc := range []struct {
		name, contentType, ref string
		raw                    []byte
	}{
		{"not JSON", ocispec.MediaTypeImageManifest, "t", []byte("not json")},
		{"array", ocispec.MediaTypeImageManifest, "t", []byte("[]")},
		{"truncated", ocispec.MediaTypeImageManifest, "t", manifest("")[:40]},
		{"mediaType differs from Content-Type", ocispec.MediaTypeImageIndex, "t", manifest("")},
		{"image and index at once", ocispec.MediaTypeImageManifest, "t", manifest(`,"manifests":[]`)},
		{"index with layers", ocispec.MediaTypeImageIndex, "t", []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[],"layers":[%s]}`, ocispec.MediaTypeImageIndex, desc(layer)))},
		{"no config", ocispec.MediaTypeImageManifest, "t", []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"layers":[%s]}`, ocispec.MediaTypeImageManifest, desc(layer)))},
		{"schemaVersion 1", ocispec.MediaTypeImageManifest, "t", bytes.Replace(manifest(""), []byte(`"schemaVersion":2`), []byte(`"schemaVersion":1`), 1)},
		{"unsupported media type", "application/vnd.example+json", "t", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.example+json"}`)},
		{"no media type at all", "", "t", []byte(`{"schemaVersion":2}`)},
		{"bad layer digest", ocispec.MediaTypeImageManifest, "t", bytes.Replace(manifest(""), []byte(layer.Digest), []byte("sha256:../../etc/passwd"), 1)},
		{"negative size", ocispec.MediaTypeImageManifest, "t", bytes.Replace(manifest(""), []byte(fmt.Sprintf(`"size":%d`, layer.Size)), []byte(`"size":-1`), 1)},
		{"layer without mediaType", ocispec.MediaTypeImageManifest, "t", bytes.Replace(manifest(""), []byte(`"mediaType":"`+layer.MediaType+`",`), nil, 1)},
		{"bad subject digest", ocispec.MediaTypeImageManifest, "t", manifest(`,"subject":{"mediaType":"x","size":1,"digest":"sha256:zz"}`)},
		{"size differs from the stored blob", ocispec.MediaTypeImageManifest, "t", bytes.Replace(manifest(""), []byte(fmt.Sprintf(`"size":%d`, layer.Size)), []byte(`"size":1`), 1)},
		{"invalid tag", ocispec.MediaTypeImageManifest, "-bad", manifest("")},
		{"tag too long", ocispec.MediaTypeImageManifest, strings.Repeat("t", 129), manifest("")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, r.putManifest("app", tc.ref, tc.contentType, tc.raw), http.StatusBadRequest, codeManifestInvalid)
		})
	}
	if tags := r.tags("app"); tags != nil {
		t.Errorf("invalid manifests created tags %v", tags)
	}
	// Without Content-Type the mediaType field decides.
	wantStatus(t, r.putManifest("app", "t", "", manifest("")), http.StatusCreated)
	if got := r.do("GET", "/v2/app/manifests/t", nil).header.Get("Content-Type"); got != ocispec.MediaTypeImageManifest {
		t.Errorf("Content-Type %q", got)
	}
	// The longest tag the grammar allows.
	wantStatus(t, r.putManifest("app", "_"+strings.Repeat("t.-", 42)+"9", ocispec.MediaTypeImageManifest, manifest("")), http.StatusCreated)
}

func TestManifestTooLarge(t *testing.T) {
	r := newTestRegistry(t, Options{MaxManifestSize: 1000})
	img := newImage(t, 1, withAnnotations(map[string]string{"pad": strings.Repeat("x", 1000)}))
	wantError(t, r.pushImage("app", "big", img), http.StatusRequestEntityTooLarge, codeManifestInvalid)
	small := newImage(t, 1)
	wantStatus(t, r.pushImage("app", "small", small), http.StatusCreated)
}

func TestManifestTagParams(t *testing.T) {
	r := newTestRegistry(t, Options{})
	img := newImage(t, 1)
	for _, b := range img.blobs {
		r.pushBlob("app", b)
	}
	resp := r.putManifest("app", string(img.digest)+"?tag=1.2.3&tag=1.2&tag=latest", ocispec.MediaTypeImageManifest, img.manifest)
	wantStatus(t, resp, http.StatusCreated)
	var got []string
	for _, v := range resp.header.Values("OCI-Tag") {
		for t := range strings.SplitSeq(v, ",") {
			got = append(got, strings.TrimSpace(t))
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"1.2", "1.2.3", "latest"}) {
		t.Errorf("OCI-Tag %v", got)
	}
	if tags := r.tags("app"); !slices.Equal(tags, []string{"1.2", "1.2.3", "latest"}) {
		t.Errorf("tags %v", tags)
	}
	wantError(t, r.putManifest("app", string(img.digest)+"?tag=ok&tag=..", ocispec.MediaTypeImageManifest, img.manifest), http.StatusBadRequest, codeManifestInvalid)
	if tags := r.tags("app"); len(tags) != 3 {
		t.Errorf("a refused push changed tags: %v", tags)
	}
}

func TestSha512(t *testing.T) {
	r := newTestRegistry(t, Options{})
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := randomBytes(t, 4000)
	cfgD := r.pushBlobAlg("app", cfg, digest.SHA512)
	layerD := r.pushBlobAlg("app", layer, digest.SHA512)
	raw := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"size":%d,"digest":%q},"layers":[{"mediaType":%q,"size":%d,"digest":%q}]}`,
		ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageConfig, len(cfg), cfgD, ocispec.MediaTypeImageLayer, len(layer), layerD))
	d := digest.SHA512.FromBytes(raw)
	put := r.putManifest("app", string(d)+"?tag=v512", ocispec.MediaTypeImageManifest, raw)
	wantStatus(t, put, http.StatusCreated)
	if put.header.Get("Docker-Content-Digest") != string(d) || put.header.Get("Location") != "/v2/app/manifests/"+string(d) {
		t.Errorf("PUT headers %v", put.header)
	}
	files := blobFiles(t, r.dir)
	for _, want := range []digest.Digest{d, cfgD, layerD} {
		if !slices.Contains(files, "sha512/"+want.Encoded()) {
			t.Errorf("%s not stored under blobs/sha512 (%v)", want, files)
		}
	}
	for _, ref := range []string{string(d), "v512"} {
		get := r.do("GET", "/v2/app/manifests/"+ref, nil)
		wantStatus(t, get, http.StatusOK)
		if !bytes.Equal(get.body, raw) || get.header.Get("Docker-Content-Digest") != string(d) {
			t.Errorf("GET %s: headers %v", ref, get.header)
		}
	}
	// Chunked sha512 upload without digest-algorithm: the store re-hashes.
	data := randomBytes(t, 3000)
	loc := r.do("POST", "/v2/app/blobs/uploads/", nil).header.Get("Location")
	wantStatus(t, r.do("PATCH", loc, data, "Content-Range", "0-2999"), http.StatusAccepted)
	wantStatus(t, r.do("PUT", loc+"?digest="+string(digest.SHA512.FromBytes(data)), nil), http.StatusCreated)
	// A sha512 digest the body does not match.
	wantError(t, r.putManifest("app", string(digest.SHA512.FromBytes([]byte("other"))), ocispec.MediaTypeImageManifest, raw), http.StatusBadRequest, codeDigestInvalid)
}

func TestTagsList(t *testing.T) {
	r := newTestRegistry(t, Options{MaxPageSize: 3})
	img := newImage(t, 1)
	wantStatus(t, r.pushImage("app", "v1", img), http.StatusCreated)
	want := []string{"a", "B", "c", "latest", "v1", "v2"}
	for _, tag := range want {
		wantStatus(t, r.putManifest("app", tag, ocispec.MediaTypeImageManifest, img.manifest), http.StatusCreated)
	}
	slices.Sort(want) // ASCIIbetical: "B" first
	want = slices.Compact(want)

	// Follow the Link headers from an unbounded request.
	var got []string
	next := "/v2/app/tags/list"
	for pages := 0; next != ""; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		resp := r.do("GET", next, nil)
		wantStatus(t, resp, http.StatusOK)
		var tl struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(resp.body, &tl); err != nil {
			t.Fatal(err)
		}
		if tl.Name != "app" || len(tl.Tags) > 3 {
			t.Fatalf("page %s: %+v", next, tl)
		}
		got = append(got, tl.Tags...)
		next = ""
		if link := resp.header.Get("Link"); link != "" {
			if !strings.HasSuffix(link, `>; rel="next"`) || !strings.HasPrefix(link, "</v2/app/tags/list?") {
				t.Fatalf("Link %q", link)
			}
			next = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("tags %v, want %v", got, want)
	}
	for _, tc := range []struct {
		query string
		want  []string
		link  bool
	}{
		{"?n=2", want[:2], true},
		{"?n=2&last=" + want[1], want[2:4], true},
		{"?last=latest", want[4:], false},
		{"?last=zzz", []string{}, false},
		{"?n=0", []string{}, false},
		{"?n=999999999", want[:3], true},
	} {
		resp := r.do("GET", "/v2/app/tags/list"+tc.query, nil)
		wantStatus(t, resp, http.StatusOK)
		var tl struct {
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(resp.body, &tl); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(tl.Tags, tc.want) || (resp.header.Get("Link") != "") != tc.link {
			t.Errorf("%s: tags %v link %q, want %v link %v", tc.query, tl.Tags, resp.header.Get("Link"), tc.want, tc.link)
		}
	}
	wantError(t, r.do("GET", "/v2/nosuchrepo/tags/list", nil), http.StatusNotFound, codeNameUnknown)
	wantError(t, r.do("GET", "/v2/app/tags/list?n=-1", nil), http.StatusBadRequest, codeUnsupported)
	wantError(t, r.do("GET", "/v2/app/tags/list?n=ten", nil), http.StatusBadRequest, codeUnsupported)
}

func TestCatalog(t *testing.T) {
	r := newTestRegistry(t, Options{MaxPageSize: 2})
	resp := r.do("GET", "/v2/_catalog", nil)
	wantStatus(t, resp, http.StatusOK)
	if string(resp.body) != `{"repositories":[]}` {
		t.Errorf("empty catalog: %s", resp.body)
	}
	img := newImage(t, 1)
	repos := []string{"b/app", "a", "c/d/e", "a/b"}
	for _, repo := range repos {
		wantStatus(t, r.pushImage(repo, "x", img), http.StatusCreated)
	}
	slices.Sort(repos)
	var got []string
	next := "/v2/_catalog"
	for next != "" {
		resp := r.do("GET", next, nil)
		wantStatus(t, resp, http.StatusOK)
		var c struct {
			Repositories []string `json:"repositories"`
		}
		if err := json.Unmarshal(resp.body, &c); err != nil {
			t.Fatal(err)
		}
		got = append(got, c.Repositories...)
		next = strings.TrimSuffix(strings.TrimPrefix(resp.header.Get("Link"), "<"), `>; rel="next"`)
	}
	if !slices.Equal(got, repos) {
		t.Errorf("catalog %v, want %v", got, repos)
	}
}

func TestReferrers(t *testing.T) {
	r := newTestRegistry(t, Options{})
	subject := newImage(t, 1)
	wantStatus(t, r.pushImage("app", "v1", subject), http.StatusCreated)

	// Nothing yet: an empty index, not 404, even for an unknown repository.
	for _, repo := range []string{"app", "nosuchrepo"} {
		resp := r.do("GET", "/v2/"+repo+"/referrers/"+string(subject.digest), nil)
		wantStatus(t, resp, http.StatusOK)
		if resp.header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
			t.Errorf("Content-Type %q", resp.header.Get("Content-Type"))
		}
		if !strings.Contains(string(resp.body), `"manifests":[]`) || !strings.Contains(string(resp.body), `"schemaVersion":2`) {
			t.Errorf("empty referrers: %s", resp.body)
		}
	}

	sbom := newImage(t, 1, withSubject(subject.desc()), withArtifactType("application/vnd.example.sbom"), withAnnotations(map[string]string{"org.example": "sbom"}))
	sig := newImage(t, 1, withSubject(subject.desc()), withArtifactType("application/vnd.example.sig"))
	plain := newImage(t, 1, withSubject(subject.desc())) // artifactType from the config
	for _, img := range []image{sbom, sig, plain} {
		put := r.pushImage("app", string(img.digest), img)
		wantStatus(t, put, http.StatusCreated)
		if put.header.Get("OCI-Subject") != string(subject.digest) {
			t.Errorf("OCI-Subject %q", put.header.Get("OCI-Subject"))
		}
	}
	// A referrer in another repository is not listed.
	other := newImage(t, 1, withSubject(subject.desc()), withArtifactType("application/vnd.example.sbom"))
	wantStatus(t, r.pushImage("elsewhere", string(other.digest), other), http.StatusCreated)

	list := func(query string) (ocispec.Index, response) {
		resp := r.do("GET", "/v2/app/referrers/"+string(subject.digest)+query, nil)
		wantStatus(t, resp, http.StatusOK)
		var idx ocispec.Index
		if err := json.Unmarshal(resp.body, &idx); err != nil {
			t.Fatal(err)
		}
		if idx.MediaType != ocispec.MediaTypeImageIndex || idx.SchemaVersion != 2 {
			t.Errorf("referrers response %s", resp.body)
		}
		return idx, resp
	}
	idx, resp := list("")
	if resp.header.Get("OCI-Filters-Applied") != "" {
		t.Error("OCI-Filters-Applied without a filter")
	}
	byDigest := map[digest.Digest]ocispec.Descriptor{}
	for _, d := range idx.Manifests {
		byDigest[d.Digest] = d
	}
	if len(idx.Manifests) != 3 {
		t.Fatalf("referrers %+v, want sbom, sig and plain", idx.Manifests)
	}
	if d := byDigest[sbom.digest]; d.ArtifactType != "application/vnd.example.sbom" || d.Annotations["org.example"] != "sbom" ||
		d.Size != int64(len(sbom.manifest)) || d.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("sbom descriptor %+v", d)
	}
	if d := byDigest[plain.digest]; d.ArtifactType != ocispec.MediaTypeImageConfig {
		t.Errorf("artifactType of an image without one: %q, want the config's media type", d.ArtifactType)
	}
	idx, resp = list("?artifactType=application/vnd.example.sbom")
	if resp.header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("OCI-Filters-Applied %q", resp.header.Get("OCI-Filters-Applied"))
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sbom.digest {
		t.Errorf("filtered referrers %+v", idx.Manifests)
	}
	wantError(t, r.do("GET", "/v2/app/referrers/sha256:nothex", nil), http.StatusBadRequest, codeDigestInvalid)
}

func TestNamesWithSlashesAndKeywords(t *testing.T) {
	r := newTestRegistry(t, Options{})
	img := newImage(t, 1)
	// Names whose components are the route keywords still route by the
	// last keyword.
	for _, repo := range []string{"a/b/c/d", "x/blobs/y", "x/manifests", "tags/list/blobs", "uploads/blobs/uploads", "referrers/r"} {
		wantStatus(t, r.pushImage(repo, "t", img), http.StatusCreated)
		wantStatus(t, r.do("GET", "/v2/"+repo+"/manifests/t", nil), http.StatusOK)
		wantStatus(t, r.do("GET", "/v2/"+repo+"/blobs/"+string(img.layers[0].Digest), nil), http.StatusOK)
		if tags := r.tags(repo); !slices.Equal(tags, []string{"t"}) {
			t.Errorf("%s: tags %v", repo, tags)
		}
		wantStatus(t, r.do("GET", "/v2/"+repo+"/referrers/"+string(img.digest), nil), http.StatusOK)
	}
	// A 255-character name is accepted.
	long := strings.Repeat("a", 127) + "/" + strings.Repeat("b", 127)
	wantStatus(t, r.pushImage(long, "t", img), http.StatusCreated)
	// A colon-escaping client.
	wantStatus(t, r.do("GET", "/v2/a/b/c/d/manifests/"+strings.Replace(string(img.digest), ":", "%3A", 1), nil), http.StatusOK)
}

func TestServeExistingLayout(t *testing.T) {
	// A layout written by other tools: a tagged index whose platform
	// manifests have no entries of their own.
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	img := newImage(t, 2)
	for d, b := range img.blobs {
		if err := st.WriteBlob(ctx, d, int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.WriteBlob(ctx, img.digest, int64(len(img.manifest)), bytes.NewReader(img.manifest)); err != nil {
		t.Fatal(err)
	}
	idxRaw, idxDigest := newIndex(t, img.desc())
	if _, err := st.PutManifest(ctx, idxRaw, ocispec.MediaTypeImageIndex, "docker.io/library/app:1.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutManifest(ctx, img.manifest, ocispec.MediaTypeImageManifest, "not-a-repo-name"); err != nil {
		t.Fatal(err)
	}
	r := newTestRegistryOn(t, st, Options{})
	wantStatus(t, r.do("GET", "/v2/docker.io/library/app/manifests/1.0", nil), http.StatusOK)
	wantStatus(t, r.do("GET", "/v2/docker.io/library/app/manifests/"+string(idxDigest), nil), http.StatusOK)
	child := r.do("GET", "/v2/docker.io/library/app/manifests/"+string(img.digest), nil)
	wantStatus(t, child, http.StatusOK)
	if child.header.Get("Content-Type") != ocispec.MediaTypeImageManifest {
		t.Errorf("child Content-Type %q", child.header.Get("Content-Type"))
	}
	wantError(t, r.do("GET", "/v2/other/manifests/"+string(img.digest), nil), http.StatusNotFound, codeManifestUnknown)
	// A child cannot be deleted on its own.
	wantError(t, r.do("DELETE", "/v2/docker.io/library/app/manifests/"+string(img.digest), nil), http.StatusMethodNotAllowed, codeUnsupported)
	if tags := r.tags("docker.io/library/app"); !slices.Equal(tags, []string{"1.0"}) {
		t.Errorf("tags %v", tags)
	}
	resp := r.do("GET", "/v2/_catalog", nil)
	if string(resp.body) != `{"repositories":["docker.io/library/app"]}` {
		t.Errorf("catalog %s", resp.body)
	}
	// A change made by another writer of the layout is seen.
	if err := st.Untag(ctx, "docker.io/library/app:1.0"); err != nil {
		t.Fatal(err)
	}
	wantError(t, r.do("GET", "/v2/docker.io/library/app/manifests/1.0", nil), http.StatusNotFound, codeManifestUnknown)
}
