package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ggcrtransport "github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/store"
	"github.com/ferry-oci/ferry/internal/transfer"
	"github.com/ferry-oci/ferry/internal/transport"
	"github.com/ferry-oci/ferry/registry"
)

// upstream is distribution's registry (the Debian docker-registry) behind
// a loopback proxy that records every request reaching it, and that can
// corrupt the blobs it sends, as a lying registry or a broken network
// would.
type upstream struct {
	reg     string // distribution itself, for pushing
	ts      *httptest.Server
	corrupt atomic.Bool
	limited atomic.Bool // answer 429, as Docker Hub does past its pull limit

	mu   sync.Mutex
	reqs []string // "GET /v2/app/manifests/v1"
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{reg: regtest.Distribution(t, regtest.DistributionOptions{})}
	target, err := url.Parse("http://" + u.reg)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	rp.ModifyResponse = func(resp *http.Response) error {
		if u.corrupt.Load() && resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/") && resp.StatusCode == http.StatusOK {
			resp.Body = &flipFirstByte{ReadCloser: resp.Body}
		}
		return nil
	}
	u.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, r.Method+" "+r.URL.Path)
		u.mu.Unlock()
		if u.limited.Load() && r.URL.Path != "/v2/" {
			w.Header().Set("Retry-After", "3600")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit reached"}]}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(u.ts.Close)
	return u
}

// host is the proxy's host:port: the upstream the cache sees.
func (u *upstream) host() string { return strings.TrimPrefix(u.ts.URL, "http://") }

// stop closes the proxy: from now on the upstream refuses connections.
func (u *upstream) stop() { u.ts.Close() }

// requests returns and forgets the requests recorded so far, leaving out
// the /v2/ pings of the auth handshake.
func (u *upstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, r := range u.reqs {
		if !strings.HasSuffix(r, " /v2/") {
			out = append(out, r)
		}
	}
	u.reqs = nil
	return out
}

// flipFirstByte changes the first byte of a body: same length, other
// content.
type flipFirstByte struct {
	io.ReadCloser
	done bool
}

func (f *flipFirstByte) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 0xff
		f.done = true
	}
	return n, err
}

// cacheServer is a ferry registry caching upstreams, behind an httptest
// server.
type cacheServer struct {
	host string
	srv  *registry.Server
	st   *store.Store
	logs *logBuffer
}

// newUpstreamClient is the client `ferry serve --upstream` uses, for the
// proxy of u. Retries are fewer than the default so that a stopped
// upstream is noticed quickly.
func newUpstreamClient(t *testing.T, u *upstream) registry.Upstream {
	t.Helper()
	remote := &transfer.Remote{Transport: func(host string) (http.RoundTripper, error) {
		return transport.New(transport.Options{Host: host, Retry: transport.Retry{Attempts: 2, Base: 10 * time.Millisecond}})
	}}
	up, err := transfer.NewUpstream(remote, "http://"+u.host(), false)
	if err != nil {
		t.Fatal(err)
	}
	return up
}

// startCache serves a fresh layout caching u under namespace ns ("" for
// every name), with opts.
func startCache(t *testing.T, u *upstream, ns string, opts registry.Options) *cacheServer {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	opts.Upstreams = map[string]registry.Upstream{ns: newUpstreamClient(t, u)}
	srv, err := registry.New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
	})
	return &cacheServer{host: strings.TrimPrefix(ts.URL, "http://"), srv: srv, st: st, logs: logs}
}

// logBuffer collects the server's log for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pull fetches ref the way a client pulls it, every platform of an index,
// with go-containerregistry, which verifies each blob's digest as it reads
// it. It returns the manifest digest.
func pull(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	desc, err := remote.Get(r)
	if err != nil {
		return "", err
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return "", err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return "", err
		}
		for _, m := range im.Manifests {
			img, err := idx.Image(m.Digest)
			if err != nil {
				return "", err
			}
			if err := readImage(img); err != nil {
				return "", err
			}
		}
		return desc.Digest.String(), nil
	}
	img, err := desc.Image()
	if err != nil {
		return "", err
	}
	return desc.Digest.String(), readImage(img)
}

// readImage reads the config and every layer of img to the end.
func readImage(img v1.Image) error {
	if _, err := img.RawConfigFile(); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func mustPull(t *testing.T, ref string) string {
	t.Helper()
	d, err := pull(ref)
	if err != nil {
		t.Fatalf("pulling %s through the cache: %v", ref, err)
	}
	return d
}

// blobsOf returns the config and layer digests of the image at ref.
func blobsOf(t *testing.T, ref string) []digest.Digest {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{digest.Digest(m.Config.Digest.String())}
	for _, l := range m.Layers {
		out = append(out, digest.Digest(l.Digest.String()))
	}
	return out
}

// pushApp pushes app:v1 with one random layer of size bytes to u and
// returns its manifest digest, its blobs (the config first) and its layer.
func pushApp(t *testing.T, u *upstream, size int64) (string, []digest.Digest, digest.Digest) {
	t.Helper()
	d := regtest.PushRandom(t, u.reg+"/app:v1", 1, size, "", "")
	blobs := blobsOf(t, u.reg+"/app@"+d)
	return d, blobs, blobs[len(blobs)-1]
}

// get sends a request to the cache and returns the response with its
// body read.
func get(t *testing.T, method, u string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, u, err)
	}
	return resp, body
}

const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

func TestCacheFirstPullFillsSecondPullAsksNothing(t *testing.T) {
	u := startUpstream(t)
	app := regtest.PushImage(t, u.reg+"/team/app:v1", regtest.Image{Layers: 2}, "", "")
	multi := regtest.PushRandomIndex(t, u.reg+"/multi:v1", []string{"linux/amd64", "linux/arm64/v8"}, "", "")
	c := startCache(t, u, "", registry.Options{})

	if got := mustPull(t, c.host+"/team/app:v1"); got != app {
		t.Errorf("team/app:v1 through the cache is %s, upstream has %s", got, app)
	}
	if got := mustPull(t, c.host+"/multi:v1"); got != multi {
		t.Errorf("multi:v1 through the cache is %s, upstream has %s", got, multi)
	}
	first := u.requests()
	for _, d := range blobsOf(t, u.reg+"/team/app:v1") {
		if n := count(first, "GET /v2/team/app/blobs/"+string(d)); n != 1 {
			t.Errorf("the first pull fetched blob %s %d times from the upstream, want 1", d, n)
		}
		if _, err := c.st.Stat(context.Background(), d); err != nil {
			t.Errorf("blob %s is not in the cache's layout after the first pull: %v", d, err)
		}
	}

	// By tag within the TTL and by digest: all from the layout.
	mustPull(t, c.host+"/team/app:v1")
	mustPull(t, c.host+"/team/app@"+app)
	mustPull(t, c.host+"/multi:v1")
	mustPull(t, c.host+"/multi@"+multi)
	if again := u.requests(); len(again) != 0 {
		t.Errorf("the second pulls sent %d requests to the upstream, want none: %v", len(again), again)
	}
}

func count(reqs []string, want string) int {
	n := 0
	for _, r := range reqs {
		if r == want {
			n++
		}
	}
	return n
}

func TestCacheServesWhatItHoldsWhenTheUpstreamStops(t *testing.T) {
	u := startUpstream(t)
	app := regtest.PushImage(t, u.reg+"/app:v1", regtest.Image{Layers: 1}, "", "")
	regtest.PushImage(t, u.reg+"/app:v2", regtest.Image{Layers: 1}, "", "")
	// A TTL that has always expired: every tag request asks the upstream.
	c := startCache(t, u, "", registry.Options{UpstreamTTL: -1})
	mustPull(t, c.host+"/app:v1")

	u.stop()
	resp, _ := get(t, http.MethodGet, "http://"+c.host+"/v2/app/manifests/v1", map[string]string{"Accept": manifestAccept})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != app {
		t.Fatalf("cached tag with the upstream stopped: %s, digest %q; want 200 with %s", resp.Status, resp.Header.Get("Docker-Content-Digest"), app)
	}
	if w := resp.Header.Get("Warning"); !strings.HasPrefix(w, "110 ") {
		t.Errorf("Warning header %q on a stale tag, want 110", w)
	}
	if got := mustPull(t, c.host+"/app:v1"); got != app {
		t.Errorf("pull with the upstream stopped: %s, want %s", got, app)
	}
	resp, _ = get(t, http.MethodGet, "http://"+c.host+"/v2/app/manifests/"+app, map[string]string{"Accept": manifestAccept})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Warning") != "" {
		t.Errorf("cached manifest by digest: %s, Warning %q; want 200 without a warning", resp.Status, resp.Header.Get("Warning"))
	}
	if !strings.Contains(c.logs.String(), "could not confirm") {
		t.Errorf("no warning in the log about the stale tag:\n%s", c.logs)
	}

	// What it never held cannot be served.
	resp, body := get(t, http.MethodGet, "http://"+c.host+"/v2/app/manifests/v2", map[string]string{"Accept": manifestAccept})
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), u.host()) {
		t.Errorf("uncached tag with the upstream stopped: %s %s; want 502 naming the upstream", resp.Status, body)
	}
}

func TestCacheServesWhatItHoldsWhenRateLimited(t *testing.T) {
	u := startUpstream(t)
	app := regtest.PushImage(t, u.reg+"/app:v1", regtest.Image{Layers: 1}, "", "")
	regtest.PushImage(t, u.reg+"/other:v1", regtest.Image{Layers: 1}, "", "")
	c := startCache(t, u, "", registry.Options{UpstreamTTL: -1})
	mustPull(t, c.host+"/app:v1")

	u.limited.Store(true)
	if got := mustPull(t, c.host+"/app:v1"); got != app {
		t.Errorf("cached image while rate limited: %s, want %s", got, app)
	}
	resp, _ := get(t, http.MethodHead, "http://"+c.host+"/v2/app/manifests/v1", map[string]string{"Accept": manifestAccept})
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Warning"), "110 ") {
		t.Errorf("HEAD of a cached tag while rate limited: %s, Warning %q; want 200, stale", resp.Status, resp.Header.Get("Warning"))
	}
	if _, err := pull(c.host + "/other:v1"); err == nil {
		t.Error("an image never cached was served while the upstream refused every request")
	}
}

func TestCacheFollowsATagThatMovedUpstream(t *testing.T) {
	u := startUpstream(t)
	old := regtest.PushImage(t, u.reg+"/app:latest", regtest.Image{Layers: 1}, "", "")
	always := startCache(t, u, "", registry.Options{UpstreamTTL: -1})
	hour := startCache(t, u, "", registry.Options{UpstreamTTL: time.Hour})
	mustPull(t, always.host+"/app:latest")
	mustPull(t, hour.host+"/app:latest")

	moved := regtest.PushImage(t, u.reg+"/app:latest", regtest.Image{Layers: 1}, "", "")
	u.requests()
	if got := mustPull(t, always.host+"/app:latest"); got != moved {
		t.Errorf("after the TTL: app:latest is %s, want the moved tag's %s", got, moved)
	}
	if reqs := u.requests(); count(reqs, "HEAD /v2/app/manifests/latest") != 1 || count(reqs, "GET /v2/app/manifests/latest") != 0 {
		t.Errorf("revalidating a tag sent %v; want one HEAD of the tag and the new manifest by digest", reqs)
	}
	if got := mustPull(t, hour.host+"/app:latest"); got != old {
		t.Errorf("within the TTL: app:latest is %s, want the cached %s", got, old)
	}
	if reqs := u.requests(); len(reqs) != 0 {
		t.Errorf("a tag within its TTL sent %v to the upstream, want nothing", reqs)
	}
	// The old image stays reachable by digest: it is fetched again.
	if got := mustPull(t, always.host+"/app@"+old); got != old {
		t.Errorf("old digest: %s", got)
	}
}

func TestCacheNeverStoresContentThatDoesNotMatchItsDigest(t *testing.T) {
	u := startUpstream(t)
	d, blobs, layer := pushApp(t, u, 256<<10)
	c := startCache(t, u, "", registry.Options{})

	u.corrupt.Store(true)
	if _, err := pull(c.host + "/app:v1"); err == nil {
		t.Fatal("a pull through a cache whose upstream corrupts blobs succeeded")
	}
	for _, b := range blobs {
		if _, err := c.st.Stat(context.Background(), b); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("blob %s from the lying upstream is in the layout (stat: %v)", b, err)
		}
	}
	// A client that reads the blob itself gets a broken body, never the
	// whole of it.
	resp, err := http.Get("http://" + c.host + "/v2/app/blobs/" + string(layer))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil && digest.FromBytes(got) != layer {
		t.Errorf("the client received %d bytes that hash to %s and no error", len(got), digest.FromBytes(got))
	}
	if !strings.Contains(c.logs.String(), "does not match its digest") {
		t.Errorf("the log does not say the upstream sent wrong content:\n%s", c.logs)
	}

	u.corrupt.Store(false)
	if got := mustPull(t, c.host+"/app:v1"); got != d {
		t.Errorf("after the upstream recovered: %s, want %s", got, d)
	}
}

func TestCacheFetchesEachBlobOnceForConcurrentClients(t *testing.T) {
	u := startUpstream(t)
	d := regtest.PushRandom(t, u.reg+"/app:v1", 3, 512<<10, "", "")
	c := startCache(t, u, "", registry.Options{})

	const clients = 20
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			got, err := pull(c.host + "/app:v1")
			if err == nil && got != d {
				err = errors.New("pulled " + got + ", want " + d)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a client: %v", err)
		}
	}
	reqs := u.requests()
	for _, b := range blobsOf(t, u.reg+"/app:v1") {
		if n := count(reqs, "GET /v2/app/blobs/"+string(b)); n != 1 {
			t.Errorf("%d clients made %d upstream fetches of blob %s, want exactly 1", clients, n, b)
		}
	}
	if n := count(reqs, "GET /v2/app/manifests/v1"); n != 1 {
		t.Errorf("%d clients made %d upstream fetches of the manifest, want exactly 1", clients, n)
	}
}

func TestCacheFillOutlivesTheClientThatStartedIt(t *testing.T) {
	u := startUpstream(t)
	d, _, layer := pushApp(t, u, 2<<20)
	c := startCache(t, u, "", registry.Options{})

	resp, err := http.Get("http://" + c.host + "/v2/app/blobs/" + string(layer))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // the client goes away after one byte
	waitFor(t, "the layer to be stored after its client left", func() bool {
		_, err := c.st.Stat(context.Background(), layer)
		return err == nil
	})
	if got := mustPull(t, c.host+"/app:v1"); got != d {
		t.Errorf("pull: %s, want %s", got, d)
	}
	if n := count(u.requests(), "GET /v2/app/blobs/"+string(layer)); n != 1 {
		t.Errorf("the layer was fetched %d times, want 1", n)
	}
}

// waitFor polls cond until it holds, and fails the test after 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 20s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCacheRangeOfAMissingBlob(t *testing.T) {
	u := startUpstream(t)
	_, blobs, layer := pushApp(t, u, 64<<10)
	c := startCache(t, u, "", registry.Options{})
	_, whole := get(t, http.MethodGet, "http://"+u.reg+"/v2/app/blobs/"+string(layer), nil)

	resp, part := get(t, http.MethodGet, "http://"+c.host+"/v2/app/blobs/"+string(layer), map[string]string{"Range": "bytes=100-199"})
	if resp.StatusCode != http.StatusPartialContent || string(part) != string(whole[100:200]) {
		t.Errorf("range of an uncached blob: %s, %d bytes; want 206 with bytes 100-199", resp.Status, len(part))
	}
	resp, _ = get(t, http.MethodHead, "http://"+c.host+"/v2/app/blobs/"+string(blobs[0]), nil)
	if resp.StatusCode != http.StatusOK || resp.ContentLength <= 0 {
		t.Errorf("HEAD of an uncached blob: %s, length %d", resp.Status, resp.ContentLength)
	}
}

func TestCacheNamespacesAndLocalRepositories(t *testing.T) {
	u := startUpstream(t)
	app := regtest.PushImage(t, u.reg+"/team/app:v1", regtest.Image{Layers: 1}, "", "")
	regtest.PushImage(t, u.reg+"/team/app:v2", regtest.Image{Layers: 1}, "", "")
	c := startCache(t, u, "up.example", registry.Options{})

	if got := mustPull(t, c.host+"/up.example/team/app:v1"); got != app {
		t.Errorf("up.example/team/app:v1 is %s, want %s", got, app)
	}
	// Names outside the namespace are a plain local registry.
	u.requests()
	resp, _ := get(t, http.MethodGet, "http://"+c.host+"/v2/team/app/manifests/v1", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("team/app:v1 outside the namespace: %s, want 404", resp.Status)
	}
	if reqs := u.requests(); len(reqs) != 0 {
		t.Errorf("a local name reached the upstream: %v", reqs)
	}
	local := regtest.PushImage(t, c.host+"/local/app:v1", regtest.Image{Layers: 1}, "", "")
	if got := mustPull(t, c.host+"/local/app:v1"); got != local {
		t.Errorf("local/app:v1: %s, want %s", got, local)
	}

	// Pushes to a cached repository are refused.
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(c.host + "/up.example/team/app:pushed")
	if err != nil {
		t.Fatal(err)
	}
	err = remote.Write(ref, img)
	var terr *ggcrtransport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("push into a cached repository: %v, want 405", err)
	}
	resp, body := get(t, http.MethodPut, "http://"+c.host+"/v2/up.example/team/app/manifests/v1", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD, DELETE" || !strings.Contains(string(body), "up.example/team/app") {
		t.Errorf("manifest PUT into a cached repository: %s, Allow %q, %s; want 405 allowing GET, HEAD, DELETE and naming the repository", resp.Status, resp.Header.Get("Allow"), body)
	}

	// The tag list is the upstream's, cached tags or not.
	resp, body = get(t, http.MethodGet, "http://"+c.host+"/v2/up.example/team/app/tags/list", nil)
	var list struct{ Tags []string }
	if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != 200 || strings.Join(list.Tags, ",") != "v1,v2" {
		t.Errorf("tags of a cached repository: %s %s, want v1 and v2", resp.Status, body)
	}
	// Unknown upstream content is a 404, as the upstream says.
	resp, _ = get(t, http.MethodGet, "http://"+c.host+"/v2/up.example/team/app/manifests/v9", map[string]string{"Accept": manifestAccept})
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("a tag the upstream does not have: %s, want 404", resp.Status)
	}
	resp, body = get(t, http.MethodGet, "http://"+c.host+"/v2/up.example/team/app/blobs/"+string(digest.FromString("nothing")), nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "BLOB_UNKNOWN") {
		t.Errorf("a blob the upstream does not have: %s %s, want 404 BLOB_UNKNOWN", resp.Status, body)
	}
}

func TestCacheKeepsSignaturesAndReferrers(t *testing.T) {
	u := startUpstream(t)
	signed := regtest.PushImage(t, u.reg+"/signed:v1", regtest.Image{Layers: 1}, "", "")
	sig := regtest.PushSignature(t, u.reg+"/signed", signed, "", "")
	sbom := regtest.PushReferrer(t, u.reg+"/signed", signed, "application/vnd.example.sbom", "", "")
	c := startCache(t, u, "", registry.Options{UpstreamTTL: -1})

	sigTag := "sha256-" + strings.TrimPrefix(signed, "sha256:") + ".sig"
	if got := mustPull(t, c.host+"/signed:"+sigTag); got != sig {
		t.Errorf("signature tag through the cache: %s, want %s", got, sig)
	}
	referrers := func() (*http.Response, []string) {
		resp, body := get(t, http.MethodGet, "http://"+c.host+"/v2/signed/referrers/"+signed, nil)
		var idx ocispec.Index
		if err := json.Unmarshal(body, &idx); err != nil {
			t.Fatalf("referrers: %s %s", resp.Status, body)
		}
		var ds []string
		for _, m := range idx.Manifests {
			ds = append(ds, string(m.Digest))
		}
		return resp, ds
	}
	if _, ds := referrers(); !contains(ds, sbom) {
		t.Errorf("referrers through the cache: %v, want %s", ds, sbom)
	}
	if got := mustPull(t, c.host+"/signed@"+sbom); got != sbom {
		t.Errorf("the referrer by digest: %s", got)
	}

	u.stop()
	resp, ds := referrers()
	if !contains(ds, sbom) || !strings.HasPrefix(resp.Header.Get("Warning"), "110 ") {
		t.Errorf("referrers with the upstream stopped: %v, Warning %q; want %s, stale", ds, resp.Header.Get("Warning"), sbom)
	}
	if got := mustPull(t, c.host+"/signed:"+sigTag); got != sig {
		t.Errorf("signature tag with the upstream stopped: %s, want %s", got, sig)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestCacheEvictsTheImagesUsedLeastRecently(t *testing.T) {
	u := startUpstream(t)
	const layer = 256 << 10
	old := regtest.PushRandom(t, u.reg+"/old:v1", 2, layer, "", "")
	recent := regtest.PushRandom(t, u.reg+"/recent:v1", 2, layer, "", "")
	multi := regtest.PushRandomIndex(t, u.reg+"/multi:v1", []string{"linux/amd64", "linux/arm64"}, "", "")
	// Room for one image and a half.
	c := startCache(t, u, "up", registry.Options{CacheMaxSize: 3 * layer})
	local := regtest.PushImage(t, c.host+"/local/app:v1", regtest.Image{Layers: 1}, "", "")

	mustPull(t, c.host+"/up/old:v1")
	// All of it was last used an hour ago.
	ago := time.Now().Add(-time.Hour)
	if err := filepath.WalkDir(filepath.Join(c.st.Dir(), "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			err = os.Chtimes(p, ago, ago)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// One platform of an index: the cache holds an index whose other
	// child is missing, which garbage collection must accept.
	amd64, err := name.ParseReference(c.host + "/up/multi:v1")
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(amd64, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := readImage(img); err != nil {
		t.Fatal(err)
	}
	mustPull(t, c.host+"/up/recent:v1")

	oldBlobs := blobsOf(t, u.reg+"/old@"+old)
	waitFor(t, "the old image to be evicted", func() bool {
		_, err := c.st.Stat(context.Background(), oldBlobs[len(oldBlobs)-1])
		return errors.Is(err, store.ErrNotFound)
	})
	for _, b := range blobsOf(t, u.reg+"/recent@"+recent) {
		if _, err := c.st.Stat(context.Background(), b); err != nil {
			t.Errorf("blob %s of the image used last was evicted: %v", b, err)
		}
	}
	if got := mustPull(t, c.host+"/local/app:v1"); got != local {
		t.Errorf("pushed content after an eviction: %s, want %s", got, local)
	}
	if resp, _ := get(t, http.MethodHead, "http://"+c.host+"/v2/up/multi/manifests/"+multi, map[string]string{"Accept": manifestAccept}); resp.StatusCode != http.StatusOK {
		t.Errorf("the partly pulled index after an eviction: %s", resp.Status)
	}
	if !strings.Contains(c.logs.String(), "evicted from the cache") {
		t.Errorf("no log line about the eviction:\n%s", c.logs)
	}
	// An evicted image is fetched again.
	u.requests()
	if got := mustPull(t, c.host+"/up/old:v1"); got != old {
		t.Errorf("the evicted image: %s, want %s", got, old)
	}
	if reqs := u.requests(); count(reqs, "GET /v2/old/blobs/"+string(oldBlobs[len(oldBlobs)-1])) != 1 {
		t.Errorf("the evicted layer was not fetched again: %v", reqs)
	}
}
