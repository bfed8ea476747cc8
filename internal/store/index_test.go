package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestOpenCreatesLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "layout")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Dir() != dir {
		t.Errorf("Dir() = %q, want %q", s.Dir(), dir)
	}
	layout, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	if err != nil {
		t.Fatal(err)
	}
	if string(layout) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", layout)
	}
	var idx map[string]any
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatal(err)
	}
	if idx["schemaVersion"] != 2.0 || idx["mediaType"] != ocispec.MediaTypeImageIndex {
		t.Errorf("index.json = %s", raw)
	}
	if m, ok := idx["manifests"].([]any); !ok || len(m) != 0 {
		t.Errorf("index.json manifests = %v, want an empty array", idx["manifests"])
	}
	if fi, err := os.Stat(filepath.Join(dir, "blobs")); err != nil || !fi.IsDir() {
		t.Errorf("blobs/ missing: %v", err)
	}
	// Opening again keeps what is there.
	putImage(t, s, "v1", "a")
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if names, _ := s2.Names(context.Background()); !slices.Equal(names, []string{"v1"}) {
		t.Errorf("after reopening, Names = %v", names)
	}
}

func TestOpenRefusesNonLayout(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
	_, err := Open(dir)
	if !errors.Is(err, ErrNotLayout) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Open(non-empty dir) = %v, want ErrNotLayout naming %s", err, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); !errors.Is(err, os.ErrNotExist) {
		t.Error("Open wrote into a directory it refused")
	}
	if _, err := os.Stat(filepath.Join(dir, dotDir)); !errors.Is(err, os.ErrNotExist) {
		t.Error("Open created its dot directory in a directory it refused")
	}

	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := Open(file); !errors.Is(err, ErrNotLayout) {
		t.Errorf("Open(file) = %v, want ErrNotLayout", err)
	}

	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "oci-layout"), []byte(`{"imageLayoutVersion":"2.0.0"}`), 0o644)
	if _, err := Open(bad); !errors.Is(err, ErrNotLayout) {
		t.Errorf("Open(layout version 2) = %v, want ErrNotLayout", err)
	}
}

func TestOpenExisting(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := OpenExisting(missing); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), missing) {
		t.Errorf("OpenExisting(missing) = %v, want ErrNotFound naming it", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Error("OpenExisting created the directory")
	}
	empty := t.TempDir()
	if _, err := OpenExisting(empty); !errors.Is(err, ErrNotLayout) {
		t.Errorf("OpenExisting(empty) = %v, want ErrNotLayout", err)
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("OpenExisting wrote into an empty directory: %v", entries)
	}
	noIndex := t.TempDir()
	os.WriteFile(filepath.Join(noIndex, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	if _, err := OpenExisting(noIndex); !errors.Is(err, ErrNotLayout) || !strings.Contains(err.Error(), "index.json") {
		t.Errorf("OpenExisting(no index.json) = %v, want ErrNotLayout naming index.json", err)
	}
	// Open repairs the same directory (a creation cut short).
	if _, err := Open(noIndex); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenExisting(noIndex); err != nil {
		t.Errorf("OpenExisting after Open: %v", err)
	}
}

func TestTagResolveUntagNames(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	a := putImage(t, s, "repo/a:v1", "a")
	b := putImage(t, s, "", "b")

	got, err := s.Resolve(ctx, "repo/a:v1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != a.manifest.Digest || got.Size != int64(len(a.raw)) || got.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("Resolve = %+v, want %s", got, a.manifest.Digest)
	}
	if got.Annotations[ocispec.AnnotationRefName] != "repo/a:v1" {
		t.Errorf("resolved annotations %v lack the ref.name", got.Annotations)
	}

	// Retag: the name moves, other annotations are kept, no duplicate.
	desc := b.manifest
	desc.Annotations = map[string]string{"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
	if err := s.Tag(ctx, "repo/a:v1", desc); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(ctx, "docker.io/library/nginx:1.25", a.manifest); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Resolve(ctx, "repo/a:v1")
	if got.Digest != b.manifest.Digest || got.Annotations["org.opencontainers.image.created"] != "2024-01-01T00:00:00Z" {
		t.Errorf("after retag Resolve = %+v", got)
	}
	if desc.Annotations[ocispec.AnnotationRefName] != "" {
		t.Error("Tag modified the caller's annotations map")
	}
	names, err := s.Names(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"docker.io/library/nginx:1.25", "repo/a:v1"}; !slices.Equal(names, want) {
		t.Errorf("Names = %v, want %v", names, want)
	}
	idx, _ := s.Index(ctx)
	count := 0
	for _, m := range idx.Manifests {
		if m.Annotations[ocispec.AnnotationRefName] == "repo/a:v1" {
			count++
		}
	}
	if count != 1 {
		t.Errorf("index.json has %d entries named repo/a:v1", count)
	}

	if err := s.Untag(ctx, "repo/a:v1"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Resolve(ctx, "repo/a:v1")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"repo/a:v1"`) {
		t.Errorf("Resolve after Untag = %v, want ErrNotFound naming the tag", err)
	}
	if err := s.Untag(ctx, "repo/a:v1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Untag = %v, want ErrNotFound", err)
	}
	// The empty name is not "every untagged entry".
	if err := s.Untag(ctx, ""); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Untag(\"\") = %v, want ErrInvalidName", err)
	}
	idx, _ = s.Index(ctx)
	if !slices.ContainsFunc(idx.Manifests, func(d ocispec.Descriptor) bool {
		return d.Digest == b.manifest.Digest && d.Annotations[ocispec.AnnotationRefName] == ""
	}) {
		t.Errorf("the untagged entry is gone: %+v", idx.Manifests)
	}
	// The blob of an untagged manifest stays.
	if _, err := s.Stat(ctx, b.manifest.Digest); err != nil {
		t.Errorf("manifest blob gone after Untag: %v", err)
	}
}

func TestResolveEmptyName(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Resolve(ctx, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(\"\") on an empty layout = %v, want ErrNotFound", err)
	}
	a := putImage(t, s, "only", "a")
	if got, err := s.Resolve(ctx, ""); err != nil || got.Digest != a.manifest.Digest {
		t.Errorf("Resolve(\"\") = %v, %v; want the only image", got.Digest, err)
	}
	putImage(t, s, "second", "b")
	if _, err := s.Resolve(ctx, ""); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Resolve(\"\") with two images = %v, want ErrAmbiguous", err)
	}
}

func TestTagRequiresStoredManifest(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	d := digest.FromString("not stored")
	err := s.Tag(ctx, "v1", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: 10})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), string(d)) {
		t.Errorf("Tag of a missing manifest = %v, want ErrNotFound naming %s", err, d)
	}
	desc := putBlob(t, s, ocispec.MediaTypeImageManifest, []byte("{}"))
	desc.Size = 99
	if err := s.Tag(ctx, "v1", desc); !errors.Is(err, ErrSizeMismatch) {
		t.Errorf("Tag with a wrong size = %v, want ErrSizeMismatch", err)
	}
	for _, name := range []string{"", "a b", "tab\there", "nul\x00"} {
		if err := s.Tag(ctx, name, desc); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Tag(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	if names, _ := s.Names(ctx); len(names) != 0 {
		t.Errorf("failed Tags left names %v", names)
	}
}

func TestAddRootAndRemoveRoot(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	img := putImage(t, s, "v1", "a")
	other := putImage(t, s, "v2", "b")
	entries := func() int {
		idx, err := s.Index(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(idx.Manifests)
	}
	if n := entries(); n != 2 {
		t.Fatalf("%d entries, want 2", n)
	}
	// An untagged root for a tagged manifest is a separate entry, added once.
	for range 2 {
		if err := s.AddRoot(ctx, img.manifest); err != nil {
			t.Fatal(err)
		}
	}
	if n := entries(); n != 3 {
		t.Errorf("after AddRoot twice: %d entries, want 3", n)
	}
	withAnn := img.manifest
	withAnn.Annotations = map[string]string{"x": "y", ocispec.AnnotationRefName: "dropped"}
	if err := s.AddRoot(ctx, withAnn); err != nil {
		t.Fatal(err)
	}
	if n := entries(); n != 4 {
		t.Errorf("AddRoot with other annotations: %d entries, want 4", n)
	}
	if names, _ := s.Names(ctx); slices.Contains(names, "dropped") {
		t.Error("AddRoot kept a ref.name annotation")
	}
	// Remove only the untagged ones.
	err := s.RemoveRoot(ctx, img.manifest.Digest, func(d ocispec.Descriptor) bool {
		return d.Annotations[ocispec.AnnotationRefName] == ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := entries(); n != 2 {
		t.Errorf("after RemoveRoot(untagged): %d entries, want 2", n)
	}
	if _, err := s.Resolve(ctx, "v1"); err != nil {
		t.Errorf("RemoveRoot with a matcher removed the tag: %v", err)
	}
	if err := s.RemoveRoot(ctx, img.manifest.Digest, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, "v1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after RemoveRoot(all) Resolve = %v", err)
	}
	if err := s.RemoveRoot(ctx, img.manifest.Digest, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveRoot of nothing = %v, want ErrNotFound", err)
	}
	if _, err := s.Resolve(ctx, "v2"); err != nil || entries() != 1 {
		t.Errorf("the other image was touched: %v", err)
	}
	_ = other
}

func TestUpdateErrorLeavesIndexUntouched(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	putImage(t, s, "v1", "a")
	before, _ := os.ReadFile(s.indexPath())
	fiBefore, _ := os.Stat(s.indexPath())
	boom := errors.New("boom")
	err := s.Update(ctx, func(idx *ocispec.Index) error {
		idx.Manifests = nil
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want fn's error", err)
	}
	// An fn that changes nothing does not rewrite the file either.
	if err := s.Update(ctx, func(*ocispec.Index) error { return nil }); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(s.indexPath())
	fiAfter, _ := os.Stat(s.indexPath())
	if !bytes.Equal(before, after) || !os.SameFile(fiBefore, fiAfter) {
		t.Errorf("index.json was rewritten:\n%s\n%s", before, after)
	}
	assertNoTemp(t, s)
}

func TestPutManifest(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	img := putImage(t, s, "v1", "a")
	if img.manifest.Digest != digest.FromBytes(img.raw) {
		t.Errorf("digest %s is not the sha256 of the bytes", img.manifest.Digest)
	}
	if got := readAll(t, s, img.manifest.Digest); !bytes.Equal(got, img.raw) {
		t.Error("stored manifest bytes differ")
	}
	if img.manifest.Annotations != nil || img.manifest.Platform != nil {
		t.Errorf("descriptor carries more than asked: %+v", img.manifest)
	}
	// artifactType is carried.
	ref := putReferrer(t, s, img.manifest, "application/vnd.example.sig", nil)
	if ref.ArtifactType != "application/vnd.example.sig" {
		t.Errorf("artifactType = %q", ref.ArtifactType)
	}

	// The mediaType given and the one inside must agree (ROBUSTNESS row 7).
	if _, err := s.PutManifest(ctx, img.raw, ocispec.MediaTypeImageIndex, "x"); !errors.Is(err, ErrInvalidManifest) {
		t.Errorf("mediaType mismatch = %v, want ErrInvalidManifest", err)
	}
	both := []byte(`{"schemaVersion":2,"manifests":[],"layers":[{"mediaType":"x","digest":"` + string(img.layers[0].Digest) + `","size":1}]}`)
	if _, err := s.PutManifest(ctx, both, ocispec.MediaTypeImageManifest, "x"); !errors.Is(err, ErrInvalidManifest) {
		t.Errorf("ambiguous manifest = %v, want ErrInvalidManifest", err)
	}
	if _, err := s.PutManifest(ctx, []byte("not json"), ocispec.MediaTypeImageManifest, "x"); !errors.Is(err, ErrInvalidManifest) {
		t.Errorf("non-JSON = %v, want ErrInvalidManifest", err)
	}

	// A manifest whose layer is missing is refused and not tagged (row 27).
	missing := digest.FromString("missing layer")
	m := ocispec.Manifest{
		Versioned: specsVersioned(), MediaType: ocispec.MediaTypeImageManifest,
		Config: img.config,
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: missing, Size: 5}},
	}
	raw, _ := json.Marshal(m)
	_, err := s.PutManifest(ctx, raw, "", "broken")
	if !errors.Is(err, ErrManifestBlobUnknown) || !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), string(missing)) {
		t.Errorf("missing layer = %v, want ErrManifestBlobUnknown naming %s", err, missing)
	}
	if _, err := s.Resolve(ctx, "broken"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the broken manifest was tagged: %v", err)
	}
	// ... but a foreign layer may be absent.
	m.Layers[0].MediaType = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	m.Layers[0].URLs = []string{"https://example.com/layer"}
	raw, _ = json.Marshal(m)
	if _, err := s.PutManifest(ctx, raw, "", "foreign"); err != nil {
		t.Errorf("foreign layer: %v", err)
	}
	// An index needs its children.
	idxRaw, _ := json.Marshal(ocispec.Index{Versioned: specsVersioned(), MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{img.manifest, {MediaType: ocispec.MediaTypeImageManifest, Digest: missing, Size: 5}}})
	if _, err := s.PutManifest(ctx, idxRaw, "", "index"); !errors.Is(err, ErrManifestBlobUnknown) {
		t.Errorf("index with a missing child = %v, want ErrManifestBlobUnknown", err)
	}
}

// The helper process: run by tests that need a second process using the
// same layout. It does nothing in a normal test run.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("FERRY_STORE_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process for other tests")
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	switch mode := os.Getenv("FERRY_STORE_HELPER_MODE"); mode {
	case "tag":
		var desc ocispec.Descriptor
		if err := json.Unmarshal([]byte(os.Getenv("FERRY_STORE_HELPER_DESC")), &desc); err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(os.Getenv("FERRY_STORE_HELPER_N"))
		tagMany(t, s, desc, "proc2", n)
	case "referrer":
		var subject ocispec.Descriptor
		if err := json.Unmarshal([]byte(os.Getenv("FERRY_STORE_HELPER_DESC")), &subject); err != nil {
			t.Fatal(err)
		}
		putReferrerCtx(t, ctx, s, subject, "application/vnd.example.sbom", map[string]string{"from": "helper"})
	case "hold-upload":
		// Start an upload, say so, wait until stdin closes, then commit.
		u, err := s.NewUpload(digest.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		u.Write([]byte("written by the helper "))
		fmt.Println("started")
		io.Copy(io.Discard, os.Stdin)
		u.Write([]byte("process"))
		if err := u.Commit(ctx, digest.FromString("written by the helper process")); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown helper mode %q", mode)
	}
}

// runHelper runs TestHelperProcess in a new process of the test binary.
func runHelper(t *testing.T, dir, mode string, desc ocispec.Descriptor, n int) *exec.Cmd {
	t.Helper()
	raw, _ := json.Marshal(desc)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"FERRY_STORE_HELPER_DIR="+dir,
		"FERRY_STORE_HELPER_MODE="+mode,
		"FERRY_STORE_HELPER_DESC="+string(raw),
		"FERRY_STORE_HELPER_N="+strconv.Itoa(n),
	)
	return cmd
}

// tagMany tags desc as prefix-<g>-<i> from 8 goroutines, n tags each.
func tagMany(t testing.TB, s *Store, desc ocispec.Descriptor, prefix string, n int) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if err := s.Tag(context.Background(), fmt.Sprintf("%s-%d-%d", prefix, g, i), desc); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestConcurrentTagNoLostUpdate(t *testing.T) {
	s := newStore(t)
	img := putImage(t, s, "", "a")
	const n = 15 // per goroutine; 8 goroutines in each of 3 Stores, one in another process

	cmd := runHelper(t, s.Dir(), "tag", img.manifest, n)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A second Store value in this process, too: it locks independently.
	s2, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); tagMany(t, s, img.manifest, "proc1a", n) }()
	go func() { defer wg.Done(); tagMany(t, s2, img.manifest, "proc1b", n) }()
	wg.Wait()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, out.String())
	}

	names, err := s.Names(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, prefix := range []string{"proc1a", "proc1b", "proc2"} {
		for g := range 8 {
			for i := range n {
				name := fmt.Sprintf("%s-%d-%d", prefix, g, i)
				if _, ok := slices.BinarySearch(names, name); !ok {
					missing = append(missing, name)
				}
			}
		}
	}
	if len(missing) > 0 || len(names) != 3*8*n {
		t.Fatalf("lost updates: %d names, want %d; missing %d, e.g. %v", len(names), 3*8*n, len(missing), missing[:min(5, len(missing))])
	}
	assertNoTemp(t, s)
}
