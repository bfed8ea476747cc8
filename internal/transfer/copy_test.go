package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-oci/ferry/internal/store"
)

// blobGets counts GET requests for blobs, by digest, and passes them on.
type blobGets struct {
	mu sync.Mutex
	n  map[string]int
}

func (b *blobGets) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			b.mu.Lock()
			if b.n == nil {
				b.n = map[string]int{}
			}
			b.n[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
			b.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

func (b *blobGets) total() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.n {
		n += c
	}
	return n
}

func copyOnce(t *testing.T, srcRepo, dstRepo, ident, tag string, opts Options) (Result, error) {
	t.Helper()
	return Copy(context.Background(), openRepo(t, srcRepo), openRepo(t, dstRepo), Request{Source: ident, Tag: tag}, opts)
}

func manifestDigest(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(r)
	if err != nil {
		return ""
	}
	return d.Digest.String()
}

func TestCopyBetweenRegistries(t *testing.T) {
	var gets blobGets
	src, dst := testRegistry(t, gets.wrap), testRegistry(t, nil)
	want := pushImage(t, src+"/app:v1")
	var events []Event
	var mu sync.Mutex
	res, err := copyOnce(t, src+"/app", dst+"/copy", "v1", "v1", Options{Events: func(e Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := manifestDigest(t, dst+"/copy:v1"); got != want {
		t.Errorf("destination digest %s, want %s", got, want)
	}
	if string(res.Digest) != want || res.BlobsCopied != 3 || res.Manifests != 1 {
		t.Errorf("result %+v: want digest %s, 3 blobs copied, 1 manifest", res, want)
	}
	done := 0
	for _, e := range events {
		if e.Kind == BlobDone {
			done++
		}
	}
	if done != 3 {
		t.Errorf("%d BlobDone events, want 3", done)
	}

	if gets.total() != 3 {
		t.Errorf("first copy fetched %d blobs, want 3", gets.total())
	}

	// Again: every blob is skipped after a HEAD, none is fetched.
	before := gets.total()
	res, err = copyOnce(t, src+"/app", dst+"/copy", "v1", "v1", Options{})
	if err != nil || res.BlobsSkipped != 3 || res.BlobsCopied != 0 || res.Bytes != 0 {
		t.Errorf("second copy: %+v, %v; want 3 skipped", res, err)
	}
	if gets.total() != before {
		t.Errorf("second copy fetched blobs")
	}
}

// TestCopySharedBlobsMoveOnce: an index whose images share a layer, and
// two copies on one engine, fetch each blob once.
func TestCopySharedBlobsMoveOnce(t *testing.T) {
	var gets blobGets
	src := testRegistry(t, gets.wrap)
	dst := testRegistry(t, nil)
	shared, err := random.Layer(4096, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	var imgs []v1.Image
	for i := 0; i < 3; i++ {
		img, err := random.Image(100, 1)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, shared); err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
		r, _ := name.ParseReference(src + "/app:v" + string(rune('1'+i)))
		if err := remote.Write(r, img); err != nil {
			t.Fatal(err)
		}
	}
	before := gets.total()
	e := NewEngine(Options{Jobs: 4})
	s, d := openRepo(t, src+"/app"), openRepo(t, dst+"/app")
	var wg sync.WaitGroup
	for _, tag := range []string{"v1", "v2", "v3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.Copy(context.Background(), s, d, Request{Source: tag, Tag: tag}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// 3 configs, 3 own layers, 1 shared layer.
	if got := gets.total() - before; got != 7 {
		t.Errorf("fetched %d blobs, want 7 (the shared layer once)", got)
	}
	for i, img := range imgs {
		want, _ := img.Digest()
		if got := manifestDigest(t, dst+"/app:v"+string(rune('1'+i))); got != want.String() {
			t.Errorf("v%d: %s, want %s", i+1, got, want)
		}
	}
}

// corruptBlobs serves every blob GET with its last byte flipped.
func corruptBlobs(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
			next.ServeHTTP(w, r)
			return
		}
		rec := &recorder{header: http.Header{}}
		next.ServeHTTP(rec, r)
		body := rec.buf.Bytes()
		if len(body) > 0 {
			body[len(body)-1] ^= 0xff
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.code)
		w.Write(body)
	})
}

type recorder struct {
	header http.Header
	code   int
	buf    bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(c int)   { r.code = c }
func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	return r.buf.Write(p)
}

// TestCopyRejectsCorruptBlob is ROBUSTNESS rows 1 and 2: a blob whose
// bytes do not hash to its digest is refused, retried once, and the copy
// fails with a verification error; no manifest reaches the target.
func TestCopyRejectsCorruptBlob(t *testing.T) {
	var gets blobGets
	src := testRegistry(t, func(h http.Handler) http.Handler { return gets.wrap(corruptBlobs(h)) })
	dst := testRegistry(t, nil)
	pushImage(t, src+"/app:v1")
	_, err := copyOnce(t, src+"/app", dst+"/app", "v1", "v1", Options{Jobs: 1})
	if !errors.Is(err, ErrVerification) || !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
	if !strings.Contains(err.Error(), "sha256:") {
		t.Errorf("error %q does not name the blob", err)
	}
	if manifestDigest(t, dst+"/app:v1") != "" {
		t.Error("the target has a manifest for content that failed verification")
	}
	// The first blob tried was fetched twice (one retry), then the copy stopped.
	gets.mu.Lock()
	defer gets.mu.Unlock()
	for d, n := range gets.n {
		if n > 2 {
			t.Errorf("blob %s fetched %d times, want at most 2", d, n)
		}
	}
}

// resetOnce cuts the first GET of each blob after half its bytes, and
// records the Range headers of the requests after it.
type resetOnce struct {
	mu     sync.Mutex
	cut    map[string]bool
	ranges []string
}

func (f *resetOnce) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
			next.ServeHTTP(w, r)
			return
		}
		f.mu.Lock()
		first := !f.cut[r.URL.Path]
		f.cut[r.URL.Path] = true
		if !first {
			f.ranges = append(f.ranges, r.Header.Get("Range"))
		}
		f.mu.Unlock()
		if !first {
			next.ServeHTTP(w, r)
			return
		}
		rec := &recorder{header: http.Header{}}
		next.ServeHTTP(rec, r)
		body := rec.buf.Bytes()
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
	})
}

// TestCopyResumesAfterReset is ROBUSTNESS row 3: a connection reset in
// the middle of a blob is resumed with a Range request, and the copy
// completes with the right digest.
func TestCopyResumesAfterReset(t *testing.T) {
	f := &resetOnce{cut: map[string]bool{}}
	src := testRegistry(t, f.wrap)
	dst := testRegistry(t, nil)
	want := pushImage(t, src+"/app:v1")
	res, err := copyOnce(t, src+"/app", dst+"/app", "v1", "v1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := manifestDigest(t, dst+"/app:v1"); got != want || string(res.Digest) != want {
		t.Errorf("digest %s, want %s", got, want)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ranges) != 3 {
		t.Fatalf("%d resumed requests, want 3 (one per blob): %q", len(f.ranges), f.ranges)
	}
	for _, r := range f.ranges {
		if !strings.HasPrefix(r, "bytes=") || r == "bytes=0-" {
			t.Errorf("resumed with Range %q, want one from the offset reached", r)
		}
	}
}

// failFirstCommit answers the first request that would complete a blob
// upload (a PUT to a session, or a single POST with a digest) with 500
// after reading its body, as a registry whose storage failed would.
type failFirstCommit struct {
	failed  atomic.Bool
	commits atomic.Int32
}

func (f *failFirstCommit) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		commit := strings.Contains(r.URL.Path, "/blobs/uploads") &&
			(r.Method == http.MethodPut || r.Method == http.MethodPost && r.URL.Query().Get("digest") != "")
		if commit {
			f.commits.Add(1)
			if f.failed.CompareAndSwap(false, true) {
				io.Copy(io.Discard, r.Body)
				http.Error(w, `{"errors":[{"code":"UNKNOWN","message":"storage failed"}]}`, http.StatusInternalServerError)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// TestCopyRestartsFailedUpload is ROBUSTNESS row 5: a 500 on the request
// that completes an upload starts it over with a fresh body from the
// source; the copy completes. Small blobs go in one POST, large ones in a
// session.
func TestCopyRestartsFailedUpload(t *testing.T) {
	for _, size := range []int64{512, 3 << 20} {
		src := testRegistry(t, nil)
		f := &failFirstCommit{}
		dst := testRegistry(t, f.wrap)
		img, err := random.Image(size, 1)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := name.ParseReference(src + "/app:v1")
		if err := remote.Write(r, img); err != nil {
			t.Fatal(err)
		}
		want, _ := img.Digest()
		res, err := copyOnce(t, src+"/app", dst+"/app", "v1", "v1", Options{Jobs: 1})
		if err != nil {
			t.Fatalf("layer of %d bytes: %v", size, err)
		}
		if got := manifestDigest(t, dst+"/app:v1"); got != want.String() {
			t.Errorf("layer of %d bytes: digest %s, want %s", size, got, want)
		}
		if res.BlobsCopied != 2 || f.commits.Load() != 3 {
			t.Errorf("layer of %d bytes: %d blobs copied with %d commits; want 2 with 3 (one restarted)", size, res.BlobsCopied, f.commits.Load())
		}
	}
}

// TestCopyForeignLayerNotFetched is ROBUSTNESS row 12: a layer with urls
// is neither fetched from them nor from the registry.
func TestCopyForeignLayerNotFetched(t *testing.T) {
	hits := atomic.Int32{}
	foreign := testRegistry(t, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	})
	var gets blobGets
	src := testRegistry(t, gets.wrap)
	dst := testRegistry(t, nil)
	img, err := random.Image(100, 1)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := random.Layer(100, types.DockerForeignLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: fl, URLs: []string{"http://" + foreign + "/layer.tar"}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(src + "/app:v1")
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	fd, _ := fl.Digest()
	before := gets.total()
	if _, err := copyOnce(t, src+"/app", dst+"/app", "v1", "v1", Options{}); err != nil {
		t.Fatal(err)
	}
	gets.mu.Lock()
	n := gets.n[fd.String()]
	gets.mu.Unlock()
	if hits.Load() != 0 || n != 0 {
		t.Errorf("foreign layer fetched: %d times from its URL, %d from the registry", hits.Load(), n)
	}
	if gets.total()-before != 2 {
		t.Errorf("fetched %d blobs, want 2 (config and the ordinary layer)", gets.total()-before)
	}
}

// stall holds every blob GET after sending a little.
func stall(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Length", "1000000")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
}

// TestCopyCancel is ROBUSTNESS row 16: cancelling stops a copy promptly
// and the target gets no manifest.
func TestCopyCancel(t *testing.T) {
	src := testRegistry(t, stall)
	dst := testRegistry(t, nil)
	pushImage(t, src+"/app:v1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Copy(ctx, openRepo(t, src+"/app"), openRepo(t, dst+"/app"), Request{Source: "v1", Tag: "v1"}, Options{})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("copy did not stop after cancel")
	}
	if manifestDigest(t, dst+"/app:v1") != "" {
		t.Error("the target has a manifest after a cancelled copy")
	}
}

// vouching is a source that says its blobs were verified, although the
// registry behind it corrupts them.
type vouching struct{ *Repository }

func (vouching) BlobsVerified() bool { return true }

// plainTarget hides what its target checks: only the Target methods.
type plainTarget struct{ Target }

// A source that vouches for its blobs is not hashed again on its way to a
// target that checks digests itself; if it vouched wrongly, that target
// still refuses the blobs, and a target that does not check gets the
// engine's check as always. No manifest lands in any of them.
func TestVerifiedSourceStillChecked(t *testing.T) {
	src := testRegistry(t, corruptBlobs)
	pushImage(t, src+"/app:v1")
	ctx := context.Background()
	var _ VerifiedSource = vouching{}

	dst := testRegistry(t, nil)
	_, err := Copy(ctx, vouching{openRepo(t, src+"/app")}, openRepo(t, dst+"/app"), Request{Source: "v1", Tag: "v1"}, Options{Jobs: 1})
	if err == nil || !strings.Contains(err.Error(), "sha256:") {
		t.Errorf("into a registry: err = %v, want the registry's refusal naming the blob", err)
	}
	if manifestDigest(t, dst+"/app:v1") != "" {
		t.Error("the registry has a manifest for content it should have refused")
	}

	s, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	layout := NewLayout("oci:test", s, 0)
	_, err = Copy(ctx, vouching{openRepo(t, src+"/app")}, layout, Request{Source: "v1", Tag: "v1"}, Options{Jobs: 1})
	if !errors.Is(err, store.ErrDigestMismatch) {
		t.Errorf("into a layout: err = %v, want the store's digest mismatch", err)
	}

	other := testRegistry(t, nil)
	_, err = Copy(ctx, vouching{openRepo(t, src+"/app")}, plainTarget{openRepo(t, other+"/app")}, Request{Source: "v1", Tag: "v1"}, Options{Jobs: 1})
	if !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("into a target that does not check: err = %v, want the engine's digest mismatch", err)
	}
	if manifestDigest(t, other+"/app:v1") != "" {
		t.Error("a target that does not check has a manifest for corrupt content")
	}
}
