package registry

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/store"
)

var loadDuration = flag.Duration("load", 3*time.Second, "how long TestServeUnderLoad keeps the clients busy")

// TestServeUnderLoad is the load test of the registry (ROBUSTNESS rows 24,
// 27, 29 and 30 under load). For three seconds (-load changes it, -short
// caps it at one), clients push and pull at once while store GC runs in a
// loop and old garbage keeps appearing for it to sweep:
//
//   - four push images that share three old layers and add one of their
//     own, by tag or by digest, with go-containerregistry's client
//     (streamed uploads), and pull each back;
//   - one pushes multi-platform indexes of distinct images;
//   - one uploads in chunks with Content-Range, monolithic POSTs and
//     cross-repository mounts, and puts the manifest itself;
//   - two pull what the others pushed.
//
// GC alternates between sweeping and also dropping untagged entries, with
// the store's default grace period: the shared layers are old and only a
// tagged image keeps them, so every GC must mark them through index.json
// while manifests are added, and the old untagged junk manifests it drops
// make it rewrite index.json while the pushes do.
//
// Nothing may fail: no push gets MANIFEST_BLOB_UNKNOWN for blobs it
// uploaded, every image pulls back byte for byte during the run and after
// a final GC, which leaves none of the junk, the layout passes
// store.Check and holds no temp file, and once the server is shut down no
// goroutine and no file descriptor is left over. It logs the figures: requests served, images pushed and
// pulled, GC runs, blobs swept.
func TestServeUnderLoad(t *testing.T) {
	duration := *loadDuration
	if testing.Short() {
		duration = min(duration, time.Second)
	}
	goroutines, fds := runtime.NumGoroutine(), openFiles(t)

	counter := &requestCounter{}
	r := newTestRegistry(t, Options{Logger: slog.New(counter)})
	lt := newLoadTest(t, r, duration)
	start := time.Now()
	lt.run()
	elapsed := time.Since(start)

	for _, err := range lt.failures {
		if strings.Contains(err.Error(), codeManifestBlobUnknown) {
			t.Errorf("MANIFEST_BLOB_UNKNOWN under load: %v", err)
		} else {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}
	lt.checkAfterRun()
	if counter.serverErrors.Load() > 0 {
		t.Errorf("%d requests were answered 5xx", counter.serverErrors.Load())
	}

	r.ts.Close()
	if err := r.srv.Close(); err != nil {
		t.Fatal(err)
	}
	checkNoLeaks(t, goroutines, fds)
	t.Logf("%d requests in %v (%s); %d images pushed, %d pulled; %d GC runs swept %d blobs and dropped %d untagged manifests, and none of the %d junk blobs is left; nothing lost",
		counter.total.Load(), elapsed.Round(time.Millisecond), counter.byMethod(), lt.pushes.Load(), lt.pulls.Load(),
		lt.gcRuns.Load(), lt.removed.Load(), lt.dropped.Load(), len(lt.junk))
}

// loadTest is one run of TestServeUnderLoad.
type loadTest struct {
	t        *testing.T
	r        *testRegistry
	opts     []remote.Option
	base     v1.Image // tagged base/os:latest, whose layers every image shares
	deadline time.Time
	stop     atomic.Bool

	pushes, pulls, gcRuns, removed, dropped atomic.Int64

	mu       sync.Mutex
	pushed   map[string]v1.Image      // by reference, without the host
	indexes  map[string]v1.ImageIndex // by reference, without the host
	refs     []string                 // the keys of pushed, for pullers
	junk     []digest.Digest          // garbage GC must remove
	failures []error
}

func newLoadTest(t *testing.T, r *testRegistry, duration time.Duration) *loadTest {
	lt := &loadTest{
		t: t, r: r,
		opts:    r.remoteOpts(remote.WithRetryStatusCodes(), remote.WithJobs(2)),
		pushed:  map[string]v1.Image{},
		indexes: map[string]v1.ImageIndex{},
	}
	var shared []v1.Layer
	for range 3 {
		l, err := random.Layer(4096, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		shared = append(shared, l)
	}
	base, err := mutate.AppendLayers(empty.Image, shared...)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r.ref(t, "base/os:latest"), base, lt.opts...); err != nil {
		t.Fatal(err)
	}
	ageAllBlobs(t, r.dir, 2*time.Hour)
	lt.base = base
	lt.deadline = time.Now().Add(duration)
	return lt
}

// run starts every worker, stops GC and the junk writer once the clients
// are done, and waits for all of them.
func (lt *loadTest) run() {
	var clients, background sync.WaitGroup
	for g := range 4 {
		clients.Go(func() { lt.loop(func(i int) error { return lt.pushImage(g, i) }) })
	}
	clients.Go(func() { lt.loop(lt.pushIndex) })
	clients.Go(func() { lt.loop(lt.pushChunked) })
	for g := range 2 {
		clients.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			lt.loop(func(int) error { return lt.pullAny(rng) })
		})
	}
	var gcDone atomic.Bool
	background.Go(func() { lt.gcLoop(&gcDone) })
	background.Go(func() { lt.writeJunk(&gcDone) })
	clients.Wait()
	gcDone.Store(true)
	background.Wait()
}

// loop calls step until the deadline or the first failure anywhere.
// Every worker makes at least one step, however late it starts.
func (lt *loadTest) loop(step func(i int) error) {
	for i := 0; ; i++ {
		if err := step(i); err != nil {
			lt.fail(err)
			return
		}
		if lt.stop.Load() || time.Now().After(lt.deadline) {
			return
		}
	}
}

func (lt *loadTest) fail(err error) {
	lt.mu.Lock()
	lt.failures = append(lt.failures, err)
	lt.mu.Unlock()
	lt.stop.Store(true)
}

// record remembers an image that was pushed and pulled back whole.
func (lt *loadTest) record(ref string, img v1.Image) {
	lt.mu.Lock()
	lt.pushed[ref] = img
	lt.refs = append(lt.refs, ref)
	lt.mu.Unlock()
}

// ownImage is the base with one small layer of its own.
func (lt *loadTest) ownImage() (v1.Image, error) {
	own, err := random.Layer(2048, types.OCILayer)
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(lt.base, own)
}

// pushImage pushes an image of pusher g by tag (even i) or by digest, and
// pulls it back.
func (lt *loadTest) pushImage(g, i int) error {
	img, err := lt.ownImage()
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	ref := fmt.Sprintf("load/g%d:i%d", g, i)
	if i%2 == 1 {
		ref = fmt.Sprintf("load/g%d@%s", g, d)
	}
	if err := remote.Write(lt.r.ref(lt.t, ref), img, lt.opts...); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	lt.pushes.Add(1)
	if err := lt.pull(ref, img); err != nil {
		return err
	}
	lt.record(ref, img)
	return nil
}

// pushIndex pushes an index of two images with blobs of their own, and
// pulls it back.
func (lt *loadTest) pushIndex(i int) error {
	idx, err := random.Index(1024, 1, 2)
	if err != nil {
		return err
	}
	ref := fmt.Sprintf("load/multi:i%d", i)
	if err := remote.WriteIndex(lt.r.ref(lt.t, ref), idx, lt.opts...); err != nil {
		return fmt.Errorf("pushing index %s: %w", ref, err)
	}
	lt.pushes.Add(1)
	if err := lt.pullIndex(ref, idx); err != nil {
		return err
	}
	lt.mu.Lock()
	lt.indexes[ref] = idx
	lt.mu.Unlock()
	return nil
}

// pushChunked pushes an image without go-containerregistry's upload
// code: its own layer in two chunks with Content-Range, its config in a
// monolithic POST, the shared layers by mounting them from base/os, and
// the manifest by tag.
func (lt *loadTest) pushChunked(i int) error {
	img, err := lt.ownImage()
	if err != nil {
		return err
	}
	repo := "load/chunked"
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers[:len(layers)-1] {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		resp, err := lt.r.send("POST", "/v2/"+repo+"/blobs/uploads/?mount="+d.String()+"&from=base/os", nil)
		if err := expect(resp, err, http.StatusCreated, "mounting %s", d); err != nil {
			return err
		}
	}
	data, err := readLayer(layers[len(layers)-1])
	if err != nil {
		return err
	}
	if err := lt.uploadChunks(repo, data); err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	resp, err := lt.r.send("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(cfg).String(), cfg)
	if err := expect(resp, err, http.StatusCreated, "uploading the config"); err != nil {
		return err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	tag := fmt.Sprintf("i%d", i)
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	resp, err = lt.r.send("PUT", "/v2/"+repo+"/manifests/"+tag, raw, "Content-Type", string(mt))
	if err := expect(resp, err, http.StatusCreated, "putting the manifest of %s:%s", repo, tag); err != nil {
		return err
	}
	lt.pushes.Add(1)
	ref := repo + ":" + tag
	if err := lt.pull(ref, img); err != nil {
		return err
	}
	lt.record(ref, img)
	return nil
}

// uploadChunks uploads data to repo in two chunks with Content-Range.
func (lt *loadTest) uploadChunks(repo string, data []byte) error {
	resp, err := lt.r.send("POST", "/v2/"+repo+"/blobs/uploads/", nil)
	if err := expect(resp, err, http.StatusAccepted, "starting an upload"); err != nil {
		return err
	}
	loc := resp.header.Get("Location")
	half := len(data) / 2
	for _, c := range [][2]int{{0, half}, {half, len(data)}} {
		resp, err := lt.r.send("PATCH", loc, data[c[0]:c[1]], "Content-Range", fmt.Sprintf("%d-%d", c[0], c[1]-1), "Content-Type", "application/octet-stream")
		if err := expect(resp, err, http.StatusAccepted, "uploading bytes %d-%d", c[0], c[1]-1); err != nil {
			return err
		}
	}
	resp, err = lt.r.send("PUT", loc+"?digest="+digest.FromBytes(data).String(), nil)
	return expect(resp, err, http.StatusCreated, "finishing the chunked upload")
}

// expect returns an error unless the request succeeded with status.
func expect(resp response, err error, status int, format string, args ...any) error {
	if err == nil && resp.status != status {
		err = fmt.Errorf("status %d, want %d: %s", resp.status, status, resp.body)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), err)
	}
	return nil
}

// pullAny pulls one of the images the others pushed.
func (lt *loadTest) pullAny(rng *rand.Rand) error {
	lt.mu.Lock()
	var ref string
	var img v1.Image
	if len(lt.refs) > 0 {
		ref = lt.refs[rng.IntN(len(lt.refs))]
		img = lt.pushed[ref]
	}
	lt.mu.Unlock()
	if img == nil {
		time.Sleep(10 * time.Millisecond) // nothing pushed yet
		return nil
	}
	return lt.pull(ref, img)
}

// pull pulls ref and compares it with img.
func (lt *loadTest) pull(ref string, img v1.Image) error {
	got, err := remote.Image(lt.r.ref(lt.t, ref), lt.opts...)
	if err == nil {
		err = compareImages(img, got)
	}
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	lt.pulls.Add(1)
	return nil
}

// pullIndex pulls the index ref and each of its images.
func (lt *loadTest) pullIndex(ref string, want v1.ImageIndex) error {
	got, err := remote.Index(lt.r.ref(lt.t, ref), lt.opts...)
	if err != nil {
		return fmt.Errorf("pulling index %s: %w", ref, err)
	}
	wm, err := want.IndexManifest()
	if err != nil {
		return err
	}
	for _, desc := range wm.Manifests {
		wi, err := want.Image(desc.Digest)
		if err != nil {
			return err
		}
		gi, err := got.Image(desc.Digest)
		if err == nil {
			err = compareImages(wi, gi)
		}
		if err != nil {
			return fmt.Errorf("pulling %s of index %s: %w", desc.Digest, ref, err)
		}
	}
	lt.pulls.Add(1)
	return nil
}

// gcLoop runs store GC until done, every other run also dropping
// untagged entries.
func (lt *loadTest) gcLoop(done *atomic.Bool) {
	for i := 0; !done.Load(); i++ {
		if err := lt.gc(store.GCOptions{Untagged: i%2 == 1}); err != nil {
			lt.fail(err)
			return
		}
	}
}

// gc runs one store GC and counts what it removed.
func (lt *loadTest) gc(opts store.GCOptions) error {
	rep, err := lt.r.st.GC(context.Background(), opts)
	if err != nil {
		return fmt.Errorf("GC: %w", err)
	}
	lt.gcRuns.Add(1)
	lt.removed.Add(int64(len(rep.Removed)))
	lt.dropped.Add(int64(len(rep.Dropped)))
	return nil
}

// writeJunk adds garbage aged past the grace period until done: an
// unreferenced blob, and an untagged manifest (with its config) that
// nothing else uses, which GC drops from index.json when it drops
// untagged entries. Blobs are aged once the manifest that uses them is
// in, or GC could sweep them first.
func (lt *loadTest) writeJunk(done *atomic.Bool) {
	for n := 0; !done.Load(); n++ {
		if err := lt.writeJunkItem(n); err != nil {
			lt.fail(err)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (lt *loadTest) writeJunkItem(n int) error {
	ctx := context.Background()
	blob := fmt.Appendf(nil, "junk %d %d", n, time.Now().UnixNano())
	config := fmt.Appendf(nil, `{"junk":%d,"at":%d}`, n, time.Now().UnixNano())
	for _, b := range [][]byte{blob, config} {
		if err := lt.r.st.WriteBlob(ctx, digest.FromBytes(b), int64(len(b)), bytes.NewReader(b)); err != nil {
			return err
		}
	}
	m := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[]}`,
		digest.FromBytes(config), len(config))
	if _, err := lt.r.st.PutManifest(ctx, m, "", ""); err != nil {
		return fmt.Errorf("writing an untagged junk manifest: %w", err)
	}
	junk := []digest.Digest{digest.FromBytes(blob), digest.FromBytes(config), digest.FromBytes(m)}
	old := time.Now().Add(-2 * time.Hour)
	for _, d := range junk {
		_ = os.Chtimes(filepath.Join(lt.r.dir, "blobs", "sha256", d.Encoded()), old, old)
	}
	lt.mu.Lock()
	lt.junk = append(lt.junk, junk...)
	lt.mu.Unlock()
	return nil
}

// checkAfterRun runs GC twice more (sweeping, then dropping untagged
// entries too), then checks that everything pushed is whole and all the
// junk gone, that the layout passes Check and that no upload left a temp
// file.
func (lt *loadTest) checkAfterRun() {
	t := lt.t
	for _, opts := range []store.GCOptions{{}, {Untagged: true}} {
		if err := lt.gc(opts); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range lt.junk {
		if hasBlob(t, lt.r.st, d) {
			t.Errorf("GC left the junk blob %s", d)
		}
	}
	for ref, img := range lt.pushed {
		if err := lt.pull(ref, img); err != nil {
			t.Errorf("after the run: %v", err)
		}
	}
	for ref, idx := range lt.indexes {
		if err := lt.pullIndex(ref, idx); err != nil {
			t.Errorf("after the run: %v", err)
		}
	}
	problems, err := lt.r.st.Check(context.Background())
	if err != nil || len(problems) != 0 {
		t.Errorf("layout check: %v %v", problems, err)
	}
	if n := tempFiles(t, lt.r.dir); n != 0 {
		t.Errorf("%d temp files left after every upload finished", n)
	}
}

// requestCounter is a slog.Handler for the registry's access log that
// counts requests.
type requestCounter struct {
	total, serverErrors atomic.Int64
	mu                  sync.Mutex
	methods             map[string]int
}

func (c *requestCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *requestCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *requestCounter) WithGroup(string) slog.Handler            { return c }

func (c *requestCounter) Handle(_ context.Context, rec slog.Record) error {
	c.total.Add(1)
	if rec.Level >= slog.LevelError {
		c.serverErrors.Add(1)
	}
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "method" {
			c.mu.Lock()
			if c.methods == nil {
				c.methods = map[string]int{}
			}
			c.methods[a.Value.String()]++
			c.mu.Unlock()
			return false
		}
		return true
	})
	return nil
}

// byMethod is "GET 10, HEAD 4, …".
func (c *requestCounter) byMethod() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, m := range slices.Sorted(maps.Keys(c.methods)) {
		parts = append(parts, fmt.Sprintf("%s %d", m, c.methods[m]))
	}
	return strings.Join(parts, ", ")
}

// openFiles counts the process's open file descriptors; -1 where
// /proc/self/fd does not exist.
func openFiles(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if errors.Is(err, os.ErrNotExist) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// checkNoLeaks waits up to ten seconds for the goroutines and open files
// to come back to their numbers before the test, and fails naming what is
// left when they do not.
func checkNoLeaks(t *testing.T, goroutines, fds int) {
	var g, f int
	for wait := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		g, f = runtime.NumGoroutine(), openFiles(t)
		if (g <= goroutines && f <= fds) || time.Now().After(wait) {
			break
		}
	}
	if g > goroutines {
		var stacks bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		t.Errorf("%d goroutines after shutdown, %d before:\n%s", g, goroutines, stacks.String())
	}
	if f > fds {
		links := ""
		entries, _ := os.ReadDir("/proc/self/fd")
		for _, e := range entries {
			target, _ := os.Readlink("/proc/self/fd/" + e.Name())
			links += "\n" + e.Name() + " -> " + target
		}
		t.Errorf("%d open files after shutdown, %d before:%s", f, fds, links)
	}
}

// compareImages is sameImage returning an error, for goroutines.
func compareImages(want, got v1.Image) error {
	wm, err := want.RawManifest()
	if err != nil {
		return err
	}
	gm, err := got.RawManifest()
	if err != nil {
		return err
	}
	if !bytes.Equal(wm, gm) {
		return errors.New("manifest differs")
	}
	wl, err := want.Layers()
	if err != nil {
		return err
	}
	gl, err := got.Layers()
	if err != nil {
		return err
	}
	for i := range wl {
		a, err := readLayer(wl[i])
		if err != nil {
			return err
		}
		b, err := readLayer(gl[i])
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("layer %d differs", i)
		}
	}
	wc, _ := want.RawConfigFile()
	gc, err := got.RawConfigFile()
	if err != nil || !bytes.Equal(wc, gc) {
		return fmt.Errorf("config differs (%v)", err)
	}
	return nil
}

func readLayer(l v1.Layer) ([]byte, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(rc)
	return b.Bytes(), err
}

// ageAllBlobs sets the modification time of every blob to age ago.
func ageAllBlobs(t testing.TB, dir string, age time.Duration) {
	t.Helper()
	old := time.Now().Add(-age)
	for _, f := range blobFiles(t, dir) {
		if err := os.Chtimes(filepath.Join(dir, "blobs", filepath.FromSlash(f)), old, old); err != nil {
			t.Fatal(err)
		}
	}
}
