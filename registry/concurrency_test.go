package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/store"
)

// TestConcurrentPushPullWithGC (ROBUSTNESS row 29 under load): 8
// goroutines push and pull images that share layers while another runs
// store GC in a loop for about two seconds, and a third keeps adding old
// unreferenced blobs for GC to sweep. No push may fail (in particular with
// MANIFEST_BLOB_UNKNOWN), and every pushed image pulls back byte for byte,
// during the run and after a final GC.
//
// GC runs with Grace 0, which the store reads as its default grace period
// (store.DefaultGrace): a blob uploaded moments before its manifest is
// legitimately unreferenced, and only the grace period keeps it (with no
// grace at all, TestRow29GCBetweenUploadAndManifest shows the PUT is
// refused cleanly instead). The shared layers are made old and kept by a
// tagged image only, so every GC has to mark them through index.json while
// manifests are being added; every other GC also drops untagged entries,
// writing index.json concurrently with the pushes.
func TestConcurrentPushPullWithGC(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for two seconds")
	}
	ctx := context.Background()
	r := newTestRegistry(t, Options{})
	opts := r.remoteOpts(remote.WithRetryStatusCodes(), remote.WithJobs(2))

	// The shared layers, referenced by a tagged base image, then made old.
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
	if err := remote.Write(r.ref(t, "base/os:latest"), base, opts...); err != nil {
		t.Fatal(err)
	}
	ageAllBlobs(t, r.dir, 2*time.Hour)

	var (
		stop     atomic.Bool
		pushes   atomic.Int64
		gcRuns   atomic.Int64
		removed  atomic.Int64
		junk     atomic.Int64
		mu       sync.Mutex
		pushed   = map[string]v1.Image{}
		failures []error
	)
	fail := func(err error) {
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
		stop.Store(true)
	}
	var wg sync.WaitGroup
	// GC in a loop.
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			rep, err := r.st.GC(ctx, store.GCOptions{Grace: 0, Untagged: i%2 == 1})
			if err != nil {
				fail(fmt.Errorf("GC: %w", err))
				return
			}
			gcRuns.Add(1)
			removed.Add(int64(len(rep.Removed)))
		}
	})
	// Old garbage for GC to find while it runs.
	wg.Go(func() {
		for !stop.Load() {
			b := []byte(fmt.Sprintf("junk %d %d", junk.Load(), time.Now().UnixNano()))
			d := digest.FromBytes(b)
			if err := r.st.WriteBlob(ctx, d, int64(len(b)), bytes.NewReader(b)); err != nil {
				fail(err)
				return
			}
			old := time.Now().Add(-2 * time.Hour)
			_ = os.Chtimes(filepath.Join(r.dir, "blobs", "sha256", d.Encoded()), old, old)
			junk.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	})
	deadline := time.Now().Add(2 * time.Second)
	for g := range 8 {
		wg.Go(func() {
			for i := 0; !stop.Load() && time.Now().Before(deadline); i++ {
				own, err := random.Layer(2048, types.OCILayer)
				if err != nil {
					fail(err)
					return
				}
				img, err := mutate.AppendLayers(base, own)
				if err != nil {
					fail(err)
					return
				}
				d, err := img.Digest()
				if err != nil {
					fail(err)
					return
				}
				ref := fmt.Sprintf("conc/g%d:i%d", g, i)
				if i%2 == 1 { // by digest only
					ref = fmt.Sprintf("conc/g%d@%s", g, d)
				}
				if err := remote.Write(r.ref(t, ref), img, opts...); err != nil {
					fail(fmt.Errorf("pushing %s: %w", ref, err))
					return
				}
				pushes.Add(1)
				got, err := remote.Image(r.ref(t, ref), opts...)
				if err != nil {
					fail(fmt.Errorf("pulling %s: %w", ref, err))
					return
				}
				if err := compareImages(img, got); err != nil {
					fail(fmt.Errorf("pulling %s: %w", ref, err))
					return
				}
				mu.Lock()
				pushed[ref] = img
				mu.Unlock()
			}
		})
	}
	// Stop GC and the junk writer once the pushers are done.
	time.Sleep(time.Until(deadline) + 100*time.Millisecond)
	stop.Store(true)
	wg.Wait()

	for _, err := range failures {
		var terr *transport.Error
		if errors.As(err, &terr) && strings.Contains(terr.Error(), codeManifestBlobUnknown) {
			t.Errorf("MANIFEST_BLOB_UNKNOWN under GC: %v", err)
		} else {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}
	if pushes.Load() < 8 || gcRuns.Load() < 2 {
		t.Fatalf("only %d pushes and %d GC runs", pushes.Load(), gcRuns.Load())
	}
	if removed.Load() == 0 {
		t.Errorf("GC removed none of the %d old junk blobs while running", junk.Load())
	}
	t.Logf("%d images pushed and pulled, %d GC runs removed %d blobs", pushes.Load(), gcRuns.Load(), removed.Load())

	// After one more GC, everything pushed is still whole.
	if _, err := r.st.GC(ctx, store.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	for ref, img := range pushed {
		got, err := remote.Image(r.ref(t, ref), opts...)
		if err == nil {
			err = compareImages(img, got)
		}
		if err != nil {
			t.Errorf("%s after the run: %v", ref, err)
		}
	}
	problems, err := r.st.Check(ctx)
	if err != nil || len(problems) != 0 {
		t.Errorf("layout check: %v %v", problems, err)
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
