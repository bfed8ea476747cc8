package store

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// gcFixture is a store with reachable and unreachable content, all old.
type gcFixture struct {
	s         *Store
	keep      []digest.Digest // reachable
	drop      []digest.Digest // unreachable
	dropBytes int64
}

func newGCFixture(t *testing.T) gcFixture {
	t.Helper()
	s := newStore(t)
	ctx := context.Background()
	var f gcFixture
	f.s = s

	// A tagged image with a signature (untagged root) and an index with
	// two children of which only the index is tagged.
	img := putImage(t, s, "app:v1", "app layer")
	sig := putReferrer(t, s, img.manifest, "application/vnd.example.sig", nil)
	amd := putImage(t, s, "", "amd64 layer")
	arm := putImage(t, s, "", "arm64 layer")
	for _, c := range []testImage{amd, arm} {
		if err := s.RemoveRoot(ctx, c.manifest.Digest, nil); err != nil {
			t.Fatal(err)
		}
	}
	multi := putIndex(t, s, "multi:v1", amd.manifest, arm.manifest)
	// A referrer of a child that is in no index.json entry: reachable only
	// through the subject relation.
	raw := referrerManifest(t, s, arm.manifest, "application/vnd.example.sbom", nil)
	sbom := putBlob(t, s, ocispec.MediaTypeImageManifest, raw)
	// ...and a referrer of that referrer.
	raw2 := referrerManifest(t, s, sbom, "application/vnd.example.sbom-sig", nil)
	sbomSig := putBlob(t, s, ocispec.MediaTypeImageManifest, raw2)

	for _, im := range []testImage{img, amd, arm} {
		f.keep = append(f.keep, im.manifest.Digest, im.config.Digest)
		for _, l := range im.layers {
			f.keep = append(f.keep, l.Digest)
		}
	}
	f.keep = append(f.keep, sig.Digest, multi.Digest, sbom.Digest, sbomSig.Digest)

	// Unreachable: an untagged-then-removed image, a stray blob, and a
	// referrer whose subject is unreachable.
	gone := putImage(t, s, "gone:v1", "gone layer")
	goneSig := putReferrer(t, s, gone.manifest, "application/vnd.example.sig", nil)
	if err := s.Untag(ctx, "gone:v1"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveRoot(ctx, goneSig.Digest, nil); err != nil {
		t.Fatal(err)
	}
	stray := putBlob(t, s, "application/octet-stream", []byte("stray"))
	f.drop = []digest.Digest{gone.manifest.Digest, gone.config.Digest, gone.layers[0].Digest, goneSig.Digest, stray.Digest}
	for _, d := range f.drop {
		size, err := s.Stat(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		f.dropBytes += size
	}
	// goneSig's payload blob is unique to it; its empty config is shared.
	blobs, _, _ := s.listBlobs(ctx)
	for _, b := range blobs {
		if !slices.Contains(f.keep, b.digest) && !slices.Contains(f.drop, b.digest) {
			// the shared "{}" config and the referrers' payloads
			if b.size == 2 {
				f.keep = append(f.keep, b.digest)
			} else if strings.HasPrefix(string(readAll(t, s, b.digest)), "signature of "+string(gone.manifest.Digest)) {
				f.drop = append(f.drop, b.digest)
				f.dropBytes += b.size
			} else {
				f.keep = append(f.keep, b.digest)
			}
		}
	}
	ageAll(t, s, time.Hour)
	return f
}

func TestGCSweepsUnreachableKeepsReachable(t *testing.T) {
	f := newGCFixture(t)
	ctx := context.Background()
	rep, err := f.s.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(f.drop)
	slices.Sort(want)
	if !slices.Equal(rep.Removed, want) {
		t.Errorf("Removed = %v\nwant      %v", rep.Removed, want)
	}
	if rep.RemovedBytes != f.dropBytes {
		t.Errorf("RemovedBytes = %d, want %d", rep.RemovedBytes, f.dropBytes)
	}
	if rep.Kept != len(f.keep) {
		t.Errorf("Kept = %d, want %d", rep.Kept, len(f.keep))
	}
	for _, d := range f.drop {
		assertAbsent(t, f.s, d)
	}
	for _, d := range f.keep {
		if _, err := f.s.Stat(ctx, d); err != nil {
			t.Errorf("reachable blob swept: %v", err)
		}
	}
	if problems, err := f.s.Check(ctx); err != nil || len(problems) != 0 {
		t.Errorf("Check after GC = %v, %v", problems, err)
	}
	// A second run finds nothing more.
	rep, err = f.s.GC(ctx, GCOptions{})
	if err != nil || len(rep.Removed) != 0 {
		t.Errorf("second GC removed %v, %v", rep.Removed, err)
	}
}

func TestGCDryRunDeletesNothing(t *testing.T) {
	f := newGCFixture(t)
	ctx := context.Background()
	rep, err := f.s.GC(ctx, GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != len(f.drop) || rep.RemovedBytes != f.dropBytes {
		t.Errorf("DryRun report: %d blobs %d bytes, want %d blobs %d bytes", len(rep.Removed), rep.RemovedBytes, len(f.drop), f.dropBytes)
	}
	for _, d := range append(f.keep, f.drop...) {
		if _, err := f.s.Stat(ctx, d); err != nil {
			t.Errorf("DryRun removed a blob: %v", err)
		}
	}
}

func TestGCGrace(t *testing.T) {
	f := newGCFixture(t)
	ctx := context.Background()
	young := f.drop[0]
	age(t, f.s, young, 5*time.Minute) // within the default 10 minutes
	rep, err := f.s.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hasDigest(rep.Removed, young) {
		t.Error("a blob within the default grace period was swept")
	}
	if _, err := f.s.Stat(ctx, young); err != nil {
		t.Errorf("young blob: %v", err)
	}
	if len(rep.Removed) != len(f.drop)-1 {
		t.Errorf("removed %d, want %d", len(rep.Removed), len(f.drop)-1)
	}
	// A shorter grace sweeps it.
	rep, err = f.s.GC(ctx, GCOptions{Grace: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Removed, []digest.Digest{young}) {
		t.Errorf("with 1m grace removed %v, want [%s]", rep.Removed, young)
	}
	// No grace at all sweeps a brand-new unreachable blob.
	fresh := putBlob(t, f.s, "application/octet-stream", []byte("fresh"))
	if rep, _ := f.s.GC(ctx, GCOptions{}); hasDigest(rep.Removed, fresh.Digest) {
		t.Error("default grace swept a fresh blob")
	}
	rep, err = f.s.GC(ctx, GCOptions{Grace: -1})
	if err != nil || !slices.Equal(rep.Removed, []digest.Digest{fresh.Digest}) {
		t.Errorf("negative grace: removed %v, %v; want the fresh blob", rep.Removed, err)
	}
}

func TestGCRefusesWhenReachableManifestMissing(t *testing.T) {
	f := newGCFixture(t)
	ctx := context.Background()
	multi, err := f.s.Resolve(ctx, "multi:v1")
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(readAll(t, f.s, multi.Digest), &idx); err != nil {
		t.Fatal(err)
	}
	child := idx.Manifests[0].Digest
	if err := os.Remove(f.s.blobPath(child)); err != nil {
		t.Fatal(err)
	}
	_, err = f.s.GC(ctx, GCOptions{Grace: -1})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), string(child)) {
		t.Fatalf("GC = %v, want ErrNotFound naming %s", err, child)
	}
	for _, d := range f.drop {
		if _, err := f.s.Stat(ctx, d); err != nil {
			t.Errorf("GC removed %s although it refused: %v", d, err)
		}
	}

	// An unparseable reachable manifest stops it too.
	img, _ := f.s.Resolve(ctx, "app:v1")
	if err := os.WriteFile(f.s.blobPath(img.Digest), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.s.blobPath(child), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = f.s.GC(ctx, GCOptions{Grace: -1})
	if !errors.Is(err, ErrInvalidManifest) || !strings.Contains(err.Error(), string(img.Digest)) {
		t.Fatalf("GC = %v, want ErrInvalidManifest naming %s", err, img.Digest)
	}
	if _, err := f.s.Stat(ctx, f.drop[0]); err != nil {
		t.Errorf("GC removed blobs although it refused: %v", err)
	}
}

// ROBUSTNESS row 29: a blob is uploaded, GC runs, then the manifest that
// uses it is stored: the manifest PUT must still succeed.
func TestGCBetweenBlobUploadAndManifest(t *testing.T) {
	for _, tc := range []struct {
		name      string
		grace     time.Duration
		wantSwept bool
	}{
		{"default grace", 0, false},
		{"no grace", -1, true}, // shows what the grace period prevents
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			ctx := context.Background()
			layer := putBlob(t, s, ocispec.MediaTypeImageLayerGzip, layerTar(t, "f", "uploaded"))
			cfg := putBlob(t, s, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
			// An old unreachable blob shows that GC really swept.
			old := putBlob(t, s, "application/octet-stream", []byte("old garbage"))
			age(t, s, old.Digest, time.Hour)

			rep, err := s.GC(ctx, GCOptions{Grace: tc.grace})
			if err != nil {
				t.Fatal(err)
			}
			if !hasDigest(rep.Removed, old.Digest) {
				t.Fatalf("GC did not sweep the old blob: %v", rep.Removed)
			}
			if hasDigest(rep.Removed, layer.Digest) != tc.wantSwept {
				t.Fatalf("layer swept = %v, want %v", !tc.wantSwept, tc.wantSwept)
			}
			raw := mustJSON(t, ocispec.Manifest{Versioned: specsVersioned(), MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}})
			_, err = s.PutManifest(ctx, raw, "", "repo:latest")
			if tc.wantSwept {
				if !errors.Is(err, ErrManifestBlobUnknown) {
					t.Fatalf("PutManifest after its layer was swept = %v, want ErrManifestBlobUnknown", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("PutManifest after GC: %v", err)
			}
			if problems, err := s.Check(ctx); err != nil || len(problems) > 0 {
				t.Fatalf("Check = %v, %v", problems, err)
			}
			// Now referenced, the layer survives even without grace.
			if rep, _ := s.GC(ctx, GCOptions{Grace: -1}); hasDigest(rep.Removed, layer.Digest) {
				t.Error("GC swept a layer of a tagged image")
			}
		})
	}
}

// GC holds the index lock: a manifest stored from inside Update is either
// seen by GC's mark, or stored after its sweep, never in between.
func TestGCWaitsForUpdate(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	layer := putBlob(t, s, ocispec.MediaTypeImageLayerGzip, layerTar(t, "f", "x"))
	age(t, s, layer.Digest, time.Hour)
	gcDone := make(chan error, 1)
	err := s.Update(ctx, func(idx *ocispec.Index) error {
		go func() {
			_, err := s.GC(ctx, GCOptions{Grace: -1})
			gcDone <- err
		}()
		select {
		case err := <-gcDone:
			t.Errorf("GC finished while Update held the lock: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := s.Stat(ctx, layer.Digest); err != nil {
			t.Errorf("blob swept while Update held the lock: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	assertAbsent(t, s, layer.Digest) // GC ran afterwards
}

func TestGCAndOpenRemoveStaleTemp(t *testing.T) {
	if !tempLocks {
		t.Skip("temp files are not locked on this platform; they are cleaned by age")
	}
	s := newStore(t)
	ctx := context.Background()
	u, err := s.NewUpload(digest.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("in progress "))
	stale := filepath.Join(s.Dir(), tmpDir, "blob-0123456789abcdef")
	if err := os.WriteFile(stale, []byte("left by a killed process"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.TempRemoved != 1 {
		t.Errorf("TempRemoved = %d, want 1", rep.TempRemoved)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Error("GC left the stale temp file")
	}
	if len(tempFiles(t, s.Dir())) != 1 {
		t.Errorf("GC removed the live upload's temp file: %v", tempFiles(t, s.Dir()))
	}

	// Open does the same: a temp locked by a live writer (another Store
	// value, as another process would be) survives, an unlocked one goes.
	if err := os.WriteFile(stale, []byte("left by a killed process"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(s.Dir()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Error("Open left the stale temp file")
	}
	u.Write([]byte("and finished"))
	want := digest.FromString("in progress and finished")
	if err := u.Commit(ctx, want); err != nil {
		t.Fatalf("the live upload failed after Open cleaned temp files: %v", err)
	}
	if got := string(readAll(t, s, want)); got != "in progress and finished" {
		t.Errorf("stored %q", got)
	}
	assertNoTemp(t, s)
}

// A temp file that a writer in another process is still writing survives
// Open's and GC's cleanup, and the writer then commits it.
func TestStaleTempCleanupSparesOtherProcess(t *testing.T) {
	if !tempLocks {
		t.Skip("temp files are not locked on this platform; they are cleaned by age")
	}
	s := newStore(t)
	cmd := runHelper(t, s.Dir(), "hold-upload", ocispec.Descriptor{}, 0)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("started"))
	if _, err := io.ReadFull(stdout, buf); err != nil {
		t.Fatalf("helper did not start: %v\n%s", err, stderr.String())
	}
	stale := filepath.Join(s.Dir(), tmpDir, "blob-stale")
	os.WriteFile(stale, []byte("left by a killed process"), 0o644)
	if len(tempFiles(t, s.Dir())) != 2 {
		t.Fatalf("temp files: %v, want the helper's and the stale one", tempFiles(t, s.Dir()))
	}
	if _, err := Open(s.Dir()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(context.Background(), GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if tmp := tempFiles(t, s.Dir()); len(tmp) != 1 || tmp[0] == "blob-stale" {
		t.Errorf("after cleanup temp files are %v, want only the helper's", tmp)
	}
	stdin.Close()
	io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, stderr.String())
	}
	want := digest.FromString("written by the helper process")
	if got := string(readAll(t, s, want)); got != "written by the helper process" {
		t.Errorf("stored %q", got)
	}
	assertNoTemp(t, s)
}

// TestGCUntagged drops an image pushed by digest and never tagged, with its
// blobs, and keeps the signature of a tagged image, an untagged child of a
// tagged index and the tagged image itself.
func TestGCUntagged(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	img := putImage(t, s, "app:v1", "app layer")
	sig := putReferrer(t, s, img.manifest, "application/vnd.example.sig", nil)
	loose := putImage(t, s, "", "loose layer")
	ageAll(t, s, time.Hour)

	for _, dry := range []bool{true, false} {
		rep, err := s.GC(ctx, GCOptions{Untagged: true, DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Dropped) != 1 || rep.Dropped[0].Digest != loose.manifest.Digest {
			t.Fatalf("dry run %v: dropped %v, want only %s", dry, rep.Dropped, loose.manifest.Digest)
		}
		for _, d := range []digest.Digest{loose.manifest.Digest, loose.config.Digest, loose.layers[0].Digest} {
			if !slices.Contains(rep.Removed, d) {
				t.Errorf("dry run %v: %s not swept", dry, d)
			}
		}
	}
	for _, d := range []digest.Digest{img.manifest.Digest, img.layers[0].Digest, sig.Digest} {
		if _, err := s.Stat(ctx, d); err != nil {
			t.Errorf("kept content %s: %v", d, err)
		}
	}
	if _, err := s.Stat(ctx, loose.layers[0].Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("loose layer still there: %v", err)
	}
	idx, err := s.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 2 {
		t.Errorf("index.json has %d entries, want the tag and the signature", len(idx.Manifests))
	}
	if refs, _ := s.Referrers(ctx, img.manifest.Digest); len(refs) != 1 {
		t.Errorf("referrers of the kept image: %v, want the signature", refs)
	}
}

// TestGCUntaggedRecentKeepsOldLayers: a manifest pushed by digest just now
// whose layers were uploaded long ago (a client skipped them after a HEAD)
// is within the grace period, so neither it nor its old layers go.
func TestGCUntaggedRecentKeepsOldLayers(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	old := putImage(t, s, "", "old layer")
	if err := s.RemoveRoot(ctx, old.manifest.Digest, nil); err != nil {
		t.Fatal(err)
	}
	ageAll(t, s, time.Hour)
	m := ocispec.Manifest{Versioned: specsVersioned(), MediaType: ocispec.MediaTypeImageManifest, Config: old.config, Layers: old.layers, Annotations: map[string]string{"new": "yes"}}
	raw, _ := json.Marshal(m)
	fresh, err := s.PutManifest(ctx, raw, ocispec.MediaTypeImageManifest, "")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(ctx, GCOptions{Untagged: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Dropped) != 0 {
		t.Errorf("dropped %v within the grace period", rep.Dropped)
	}
	for _, d := range []digest.Digest{fresh.Digest, old.config.Digest, old.layers[0].Digest} {
		if _, err := s.Stat(ctx, d); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
	if !slices.Contains(rep.Removed, old.manifest.Digest) {
		t.Errorf("the old, unreferenced manifest %s was not swept: %v", old.manifest.Digest, rep.Removed)
	}
}

// A layout holding an index without all its images (a pull-through cache
// fetches only the platforms clients ask for) stops GC, unless Partial
// says that is expected; then what is present is kept.
func TestGCPartialIndex(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	amd := putImage(t, s, "", "amd64 layer")
	arm := putImage(t, s, "", "arm64 layer")
	for _, c := range []testImage{amd, arm} {
		if err := s.RemoveRoot(ctx, c.manifest.Digest, nil); err != nil {
			t.Fatal(err)
		}
	}
	multi := putIndex(t, s, "multi:v1", amd.manifest, arm.manifest)
	if err := s.DeleteBlob(ctx, arm.manifest.Digest); err != nil {
		t.Fatal(err)
	}
	ageAll(t, s, time.Hour)

	if _, err := s.GC(ctx, GCOptions{Grace: time.Minute}); err == nil || !strings.Contains(err.Error(), "stopped before removing anything") {
		t.Fatalf("GC of a layout missing a manifest: %v, want it to stop", err)
	}
	rep, err := s.GC(ctx, GCOptions{Grace: time.Minute, Partial: true})
	if err != nil {
		t.Fatalf("GC with Partial: %v", err)
	}
	for _, d := range []digest.Digest{multi.Digest, amd.manifest.Digest, amd.config.Digest, amd.layers[0].Digest} {
		if hasDigest(rep.Removed, d) {
			t.Errorf("GC with Partial removed %s, which the index still reaches", d)
		}
	}
	// The missing image's config and layer are reachable from nothing.
	for _, d := range []digest.Digest{arm.config.Digest, arm.layers[0].Digest} {
		if !hasDigest(rep.Removed, d) {
			t.Errorf("GC with Partial kept %s, which nothing present reaches", d)
		}
	}
}
