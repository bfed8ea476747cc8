package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-oci/ferry/internal/store"
)

// writeHtpasswd writes an htpasswd file with bcrypt entries for users
// (name → password), the first as $2y$ like `htpasswd -B` writes, the
// others as $2a$ and $2b$.
func writeHtpasswd(t testing.TB, users ...[2]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# ferry test users\n\n")
	for i, u := range users {
		hash, err := bcrypt.GenerateFromPassword([]byte(u[1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		h := string(hash) // $2a$
		switch i % 3 {
		case 0:
			h = "$2y$" + h[4:]
		case 2:
			h = "$2b$" + h[4:]
		}
		b.WriteString(u[0] + ":" + h + "\n")
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadHtpasswd(t *testing.T) {
	path := writeHtpasswd(t, [2]string{"alice", "wonderland"}, [2]string{"bob", "builder"}, [2]string{"carol", "c4rol"})
	auth, err := LoadHtpasswd(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, pass string
		ok         bool
	}{
		{"alice", "wonderland", true},
		{"bob", "builder", true},
		{"carol", "c4rol", true},
		{"alice", "wonderland", true}, // from the cache
		{"alice", "Wonderland", false},
		{"alice", "", false},
		{"mallory", "wonderland", false},
		{"", "", false},
	} {
		if got := auth.Authenticate(tc.user, tc.pass); got != tc.ok {
			t.Errorf("Authenticate(%q, %q) = %v", tc.user, tc.pass, got)
		}
	}

	hash, err := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	good := "$2y$" + string(hash[4:])
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		content, want string
	}{
		"md5":        {"ok:" + good + "\nmd5user:$apr1$xyz$0123456789abcdefghij\n", "line 2: user \"md5user\": the password hash is MD5 ($apr1$)"},
		"sha1":       {"shauser:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", "line 1: user \"shauser\": the password hash is SHA-1"},
		"plain":      {"# comment\nplain:secret\n", "line 2: user \"plain\": the password hash is crypt or plain text"},
		"no colon":   {"justauser\n", "line 1: expected user:hash"},
		"duplicate":  {"a:" + good + "\na:" + good + "\n", "line 2: user \"a\" appears twice"},
		"bad bcrypt": {"b:$2y$xx$short\n", "line 1: user \"b\": malformed bcrypt hash"},
		"empty":      {"# nobody\n\n", "has no users"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadHtpasswd(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v, want it to name %s and say %q", name, err, p, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "$apr1$xyz") || strings.Contains(err.Error(), "W6ph5Mm5")) {
			t.Errorf("%s: the error shows the hash: %v", name, err)
		}
	}
	if _, err := LoadHtpasswd(filepath.Join(dir, "missing")); err == nil {
		t.Error("no error for a missing file")
	}
}

// ROBUSTNESS row 31: no password, a wrong password or an unknown user is
// 401 with WWW-Authenticate and an UNAUTHORIZED body on every endpoint,
// /v2/ included; a user allowed to push but not delete gets 403 DENIED on
// DELETE; nothing changes in either case.
func TestRow31Authentication(t *testing.T) {
	auth, err := LoadHtpasswd(writeHtpasswd(t, [2]string{"alice", "s3cret"}, [2]string{"pusher", "pushpass"}))
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	var mu sync.Mutex
	r := newTestRegistry(t, Options{Auth: auth, Authorize: func(user, repo string, a Action) bool {
		mu.Lock()
		asked = append(asked, user+" "+string(a)+" "+repo)
		mu.Unlock()
		return user != "pusher" || a != ActionDelete
	}})
	r.user, r.pass = "alice", "s3cret"
	img := newImage(t, 1)
	wantStatus(t, r.pushImage("app", "v1", img), http.StatusCreated)
	before := blobFiles(t, r.dir)
	idxBefore, _ := os.ReadFile(filepath.Join(r.dir, "index.json"))

	d := string(img.digest)
	requests := []struct{ method, path string }{
		{"GET", "/v2/"},
		{"HEAD", "/v2/"},
		{"GET", "/v2/_catalog"},
		{"GET", "/v2/app/tags/list"},
		{"GET", "/v2/app/manifests/v1"},
		{"HEAD", "/v2/app/manifests/v1"},
		{"PUT", "/v2/app/manifests/v2"},
		{"DELETE", "/v2/app/manifests/" + d},
		{"GET", "/v2/app/blobs/" + string(img.layers[0].Digest)},
		{"DELETE", "/v2/app/blobs/" + string(img.layers[0].Digest)},
		{"POST", "/v2/app/blobs/uploads/?digest=" + string(img.layers[0].Digest)},
		{"GET", "/v2/app/referrers/" + d},
		{"GET", "/v2/nosuchrepo/tags/list"},
		{"GET", "/v2/../../etc/manifests/x"},
	}
	for _, creds := range []struct{ user, pass string }{{"", ""}, {"alice", "wrong"}, {"mallory", "s3cret"}, {"alice", ""}} {
		r.user, r.pass = creds.user, creds.pass
		for _, req := range requests {
			var resp response
			if creds.user == "" {
				resp = r.do(req.method, req.path, img.manifest, "Content-Type", ocispec.MediaTypeImageManifest)
			} else {
				resp = r.do(req.method, req.path, img.manifest, "Content-Type", ocispec.MediaTypeImageManifest, "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(creds.user+":"+creds.pass)))
			}
			wantError(t, resp, http.StatusUnauthorized, codeUnauthorized)
			if got := resp.header.Get("WWW-Authenticate"); got != `Basic realm="ferry"` {
				t.Errorf("%s %s as %q: WWW-Authenticate %q", req.method, req.path, creds.user, got)
			}
		}
	}
	// The push-only user may push and pull but not delete.
	r.user, r.pass = "pusher", "pushpass"
	wantStatus(t, r.do("GET", "/v2/app/manifests/v1", nil), http.StatusOK)
	for _, path := range []string{"/v2/app/manifests/" + d, "/v2/app/manifests/v1", "/v2/app/blobs/" + string(img.layers[0].Digest)} {
		wantError(t, r.do("DELETE", path, nil), http.StatusForbidden, codeDenied)
	}
	after := blobFiles(t, r.dir)
	idxAfter, _ := os.ReadFile(filepath.Join(r.dir, "index.json"))
	if strings.Join(before, ",") != strings.Join(after, ",") || !bytes.Equal(idxBefore, idxAfter) {
		t.Error("refused requests changed the layout")
	}
	wantStatus(t, r.pushImage("app", "v2", newImage(t, 1)), http.StatusCreated)
	mu.Lock()
	if !strings.Contains(strings.Join(asked, "\n"), "pusher delete app") {
		t.Errorf("Authorize calls %v", asked)
	}
	mu.Unlock()

	// go-containerregistry with basic auth.
	opts := r.remoteOpts(remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))
	rimg, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r.ref(t, "auth/app:1"), rimg, opts...); err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(r.ref(t, "auth/app:1"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, rimg, got)
	if _, err := remote.Image(r.ref(t, "auth/app:1"), r.remoteOpts(remote.WithAuth(&authn.Basic{Username: "alice", Password: "nope"}))...); err == nil {
		t.Error("pull with a wrong password succeeded")
	}
}

func TestReadOnly(t *testing.T) {
	rw := newTestRegistry(t, Options{})
	img := newImage(t, 1)
	wantStatus(t, rw.pushImage("app", "v1", img), http.StatusCreated)
	layerPath := filepath.Join(rw.dir, "blobs", "sha256", img.layers[0].Digest.Encoded())
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(layerPath, old, old); err != nil {
		t.Fatal(err)
	}

	ro := newTestRegistryOn(t, rw.st, Options{ReadOnly: true})
	wantStatus(t, ro.do("GET", "/v2/app/manifests/v1", nil), http.StatusOK)
	wantStatus(t, ro.do("HEAD", "/v2/app/blobs/"+string(img.layers[0].Digest), nil), http.StatusOK)
	if fi, err := os.Stat(layerPath); err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("a read-only HEAD touched the blob (%v)", err)
	}
	for _, req := range []struct{ method, path string }{
		{"POST", "/v2/app/blobs/uploads/"},
		{"POST", "/v2/app/blobs/uploads/?mount=" + string(img.layers[0].Digest)},
		{"PATCH", "/v2/app/blobs/uploads/abc"},
		{"PUT", "/v2/app/blobs/uploads/abc?digest=" + string(img.layers[0].Digest)},
		{"GET", "/v2/app/blobs/uploads/abc"},
		{"DELETE", "/v2/app/blobs/uploads/abc"},
		{"PUT", "/v2/app/manifests/v2"},
		{"DELETE", "/v2/app/manifests/v1"},
		{"DELETE", "/v2/app/manifests/" + string(img.digest)},
		{"DELETE", "/v2/app/blobs/" + string(img.layers[0].Digest)},
	} {
		resp := ro.do(req.method, req.path, img.manifest, "Content-Type", ocispec.MediaTypeImageManifest)
		wantError(t, resp, http.StatusMethodNotAllowed, codeUnsupported)
		if resp.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", req.method, req.path, resp.header.Get("Allow"))
		}
	}
	wantStatus(t, ro.do("GET", "/v2/app/manifests/v1", nil), http.StatusOK)
}

// TestServeArchive serves a layout inside a tar file, read-only and in
// place.
func TestServeArchive(t *testing.T) {
	rw := newTestRegistry(t, Options{})
	rimg, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(rw.ref(t, "bundle/app:1.0"), rimg, rw.remoteOpts()...); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bundle.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.WriteArchive(context.Background(), f, rw.st); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	a, err := store.OpenArchive(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	srv, err := NewReadOnly(a, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	ro := &testRegistry{t: t, srv: srv, ts: ts}
	got, err := remote.Image(ro.ref(t, "bundle/app:1.0"), ro.remoteOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, rimg, got)
	if tags := ro.tags("bundle/app"); len(tags) != 1 || tags[0] != "1.0" {
		t.Errorf("tags %v", tags)
	}
	wantError(t, ro.do("POST", "/v2/bundle/app/blobs/uploads/", nil), http.StatusMethodNotAllowed, codeUnsupported)
	wantStatus(t, ro.do("GET", "/v2/bundle/app/blobs/"+layerDigest(t, rimg), nil, "Range", "bytes=10-19"), http.StatusPartialContent)
}

func layerDigest(t testing.TB, img v1.Image) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// TestAccessLog checks one line per request with method, path, status,
// bytes, duration and user, and no credentials or query strings.
func TestAccessLog(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	auth, err := LoadHtpasswd(writeHtpasswd(t, [2]string{"alice", "very-secret-password"}))
	if err != nil {
		t.Fatal(err)
	}
	r := newTestRegistry(t, Options{Auth: auth, Logger: logger})
	requests := 0
	inner := r.ts.Config.Handler
	r.ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		inner.ServeHTTP(w, req)
	})
	opts := r.remoteOpts(remote.WithAuth(&authn.Basic{Username: "alice", Password: "very-secret-password"}))
	rimg, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r.ref(t, "logged/app:1"), rimg, opts...); err != nil {
		t.Fatal(err)
	}
	r.user, r.pass = "alice", "wrong-password"
	wantStatus(t, r.do("GET", "/v2/logged/app/manifests/1", nil), http.StatusUnauthorized)

	mu.Lock()
	defer mu.Unlock()
	out := buf.String()
	for _, secret := range []string{"very-secret-password", "wrong-password", "Authorization", "Basic ",
		base64.StdEncoding.EncodeToString([]byte("alice:very-secret-password")), "digest=", "?"} {
		if strings.Contains(out, secret) {
			t.Errorf("the access log contains %q", secret)
		}
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != requests {
		t.Errorf("%d log lines for %d requests", len(lines), requests)
	}
	sawUser, saw401 := false, false
	for _, l := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		for _, k := range []string{"method", "path", "status", "bytes", "duration", "remote"} {
			if _, ok := e[k]; !ok {
				t.Errorf("log line without %s: %s", k, l)
			}
		}
		sawUser = sawUser || e["user"] == "alice"
		if e["status"] == float64(401) {
			saw401 = true
			if e["code"] != codeUnauthorized || e["user"] != nil {
				t.Errorf("401 line %s", l)
			}
		}
	}
	if !sawUser || !saw401 {
		t.Errorf("user logged %v, 401 logged %v:\n%s", sawUser, saw401, out)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestAuthorizeFiltersCatalog(t *testing.T) {
	r := newTestRegistry(t, Options{Authorize: func(user, repo string, a Action) bool {
		return !strings.HasPrefix(repo, "secret/")
	}})
	img := newImage(t, 1)
	for _, repo := range []string{"public/app", "secret/app"} {
		for _, b := range img.blobs {
			r.pushBlob("public/app", b)
		}
		resp := r.putManifest(repo, "v1", ocispec.MediaTypeImageManifest, img.manifest)
		if repo == "secret/app" {
			wantError(t, resp, http.StatusForbidden, codeDenied)
			// Written behind the registry's back.
			if _, err := r.st.PutManifest(context.Background(), img.manifest, ocispec.MediaTypeImageManifest, "secret/app:v1"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		wantStatus(t, resp, http.StatusCreated)
	}
	resp := r.do("GET", "/v2/_catalog", nil)
	if string(resp.body) != `{"repositories":["public/app"]}` {
		t.Errorf("catalog %s", resp.body)
	}
	wantError(t, r.do("GET", "/v2/secret/app/manifests/v1", nil), http.StatusForbidden, codeDenied)
}

// TestReadOnlyStoreSeesChanges: a read-only registry over a layout
// directory notices what another writer (process) adds.
func TestReadOnlyStoreSeesChanges(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewReadOnly(st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	ro := &testRegistry{t: t, srv: srv, ts: ts, st: st, dir: st.Dir()}
	wantError(t, ro.do("GET", "/v2/app/manifests/v1", nil), http.StatusNotFound, codeManifestUnknown)
	img := newImage(t, 1)
	ctx := context.Background()
	for d, b := range img.blobs {
		if err := st.WriteBlob(ctx, d, int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.PutManifest(ctx, img.manifest, ocispec.MediaTypeImageManifest, "app:v1"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, ro.do("GET", "/v2/app/manifests/v1", nil), http.StatusOK)
	wantError(t, ro.do("DELETE", "/v2/app/manifests/v1", nil), http.StatusMethodNotAllowed, codeUnsupported)
}
