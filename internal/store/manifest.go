package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Limits on what is read as a manifest.
const (
	// maxWalkManifest caps a manifest read while walking the graph (GC,
	// Check, WriteArchive). Larger ones stop the walk with an error rather
	// than being skipped, because skipping could sweep what they reference.
	maxWalkManifest = 32 << 20
	// maxReferrerManifest: larger blobs are not considered as referrers.
	maxReferrerManifest = 4 << 20
)

// manifestDoc is the union of the manifest formats whose references the
// store follows: OCI image manifest and index, Docker schema 2 manifest and
// manifest list, the withdrawn OCI artifact manifest, Docker schema 1.
type manifestDoc struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType,omitempty"`
	ArtifactType  string               `json:"artifactType,omitempty"`
	Config        *ocispec.Descriptor  `json:"config,omitempty"`
	Layers        []ocispec.Descriptor `json:"layers,omitempty"`
	Manifests     []ocispec.Descriptor `json:"manifests,omitempty"`
	Blobs         []ocispec.Descriptor `json:"blobs,omitempty"`
	FSLayers      []struct {
		BlobSum digest.Digest `json:"blobSum"`
	} `json:"fsLayers,omitempty"`
	Subject     *ocispec.Descriptor `json:"subject,omitempty"`
	Annotations map[string]string   `json:"annotations,omitempty"`
}

// parseManifest decodes a manifest. It must be a JSON object.
func parseManifest(data []byte) (*manifestDoc, error) {
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	var m manifestDoc
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// isIndex reports whether the manifest lists other manifests.
func (m *manifestDoc) isIndex() bool { return len(m.Manifests) > 0 }

// blobRefs returns the descriptors of the non-manifest blobs m references.
func (m *manifestDoc) blobRefs() []ocispec.Descriptor {
	var refs []ocispec.Descriptor
	if m.Config != nil {
		refs = append(refs, *m.Config)
	}
	refs = append(refs, m.Layers...)
	refs = append(refs, m.Blobs...)
	for _, l := range m.FSLayers {
		refs = append(refs, ocispec.Descriptor{Digest: l.BlobSum, Size: -1})
	}
	return refs
}

// isForeign reports whether a layer may legitimately be absent: a
// non-distributable (foreign) layer, or one with download URLs.
func isForeign(d ocispec.Descriptor) bool {
	return len(d.URLs) > 0 || strings.Contains(d.MediaType, "nondistributable") || strings.Contains(d.MediaType, "foreign")
}

// blobSource is the part of Reader the graph code needs.
type blobSource interface {
	Stat(ctx context.Context, d digest.Digest) (int64, error)
	ReadBlob(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, int64, error)
}

// errTooLarge marks a blob beyond a read limit.
var errTooLarge = errors.New("too large")

// readSmallBlob reads blob d if it is at most limit bytes.
func readSmallBlob(ctx context.Context, src blobSource, d digest.Digest, limit int64) ([]byte, error) {
	rc, size, err := src.ReadBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > limit {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", errTooLarge, size, limit)
	}
	data, err := io.ReadAll(io.LimitReader(ctxReader{ctx, rc}, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", errTooLarge, limit)
	}
	return data, nil
}

// walker marks everything reachable from a set of manifests.
type walker struct {
	src blobSource
	// check: also Stat every referenced blob and compare sizes (Check);
	// otherwise only manifests are read (GC, WriteArchive).
	check bool
	// report is called for every problem found; a non-nil return stops the
	// walk with that error.
	report func(Problem) error

	marked     map[digest.Digest]struct{}
	required   map[digest.Digest]bool // marked and not a foreign layer
	isManifest map[digest.Digest]bool
	manifests  []digest.Digest // reachable manifests in the order found
	sizes      map[digest.Digest]int64
	queue      []pendingManifest
}

type pendingManifest struct {
	desc ocispec.Descriptor
	from string // who references it, for messages
}

func newWalker(src blobSource, check bool, report func(Problem) error) *walker {
	return &walker{
		src:        src,
		check:      check,
		report:     report,
		marked:     map[digest.Digest]struct{}{},
		required:   map[digest.Digest]bool{},
		isManifest: map[digest.Digest]bool{},
		sizes:      map[digest.Digest]int64{},
	}
}

// addRoots queues the entries of an index.json.
func (w *walker) addRoots(idx *ocispec.Index) {
	for i, desc := range idx.Manifests {
		from := fmt.Sprintf("index.json entry %d", i)
		if name := desc.Annotations[ocispec.AnnotationRefName]; name != "" {
			from = fmt.Sprintf("index.json entry %q", name)
		}
		w.queue = append(w.queue, pendingManifest{desc, from})
	}
}

// run walks until the queue is empty.
func (w *walker) run(ctx context.Context) error {
	for len(w.queue) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := w.queue[0]
		w.queue = w.queue[1:]
		if err := w.manifest(ctx, p.desc, p.from); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) manifest(ctx context.Context, desc ocispec.Descriptor, from string) error {
	d := desc.Digest
	if err := ValidateDigest(d); err != nil {
		return w.report(Problem{Digest: d, Err: fmt.Errorf("manifest referenced by %s: %w", from, err)})
	}
	if w.isManifest[d] {
		return nil
	}
	w.isManifest[d] = true
	w.marked[d] = struct{}{}
	w.required[d] = true
	w.manifests = append(w.manifests, d)
	path := blobRelPath(d)

	data, err := readSmallBlob(ctx, w.src, d, maxWalkManifest)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrNotFound) {
			return w.report(Problem{Digest: d, Path: path, Err: fmt.Errorf("%w: manifest %s referenced by %s is missing", ErrNotFound, d, from)})
		}
		return w.report(Problem{Digest: d, Path: path, Err: fmt.Errorf("reading manifest %s referenced by %s: %w", d, from, err)})
	}
	if w.check && desc.Size != int64(len(data)) {
		if err := w.report(Problem{Digest: d, Path: path, Err: fmt.Errorf("%w: manifest %s is %d bytes, %s says %d", ErrSizeMismatch, d, len(data), from, desc.Size)}); err != nil {
			return err
		}
	}
	m, err := parseManifest(data)
	if err != nil {
		return w.report(Problem{Digest: d, Path: path, Err: fmt.Errorf("%w: manifest %s referenced by %s cannot be parsed: %v", ErrInvalidManifest, d, from, err)})
	}
	self := "manifest " + string(d)
	for _, child := range m.Manifests {
		w.queue = append(w.queue, pendingManifest{child, self})
	}
	for _, b := range m.blobRefs() {
		if err := w.blob(ctx, b, self); err != nil {
			return err
		}
	}
	return nil
}

// blob marks a non-manifest blob and, when checking, verifies that it is
// present with the declared size.
func (w *walker) blob(ctx context.Context, desc ocispec.Descriptor, from string) error {
	d := desc.Digest
	if err := ValidateDigest(d); err != nil {
		return w.report(Problem{Digest: d, Err: fmt.Errorf("blob referenced by %s: %w", from, err)})
	}
	w.marked[d] = struct{}{}
	if !isForeign(desc) {
		w.required[d] = true
	}
	if !w.check {
		return nil
	}
	size, ok := w.sizes[d]
	if !ok {
		var err error
		size, err = w.src.Stat(ctx, d)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrNotFound):
			size = -1
		case err != nil:
			return w.report(Problem{Digest: d, Path: blobRelPath(d), Err: fmt.Errorf("blob %s referenced by %s: %w", d, from, err)})
		}
		w.sizes[d] = size
	}
	if size < 0 {
		if isForeign(desc) {
			return nil
		}
		return w.report(Problem{Digest: d, Path: blobRelPath(d), Err: fmt.Errorf("%w: blob %s (%s) referenced by %s is missing", ErrNotFound, d, desc.MediaType, from)})
	}
	if desc.Size >= 0 && desc.Size != size {
		return w.report(Problem{Digest: d, Path: blobRelPath(d), Err: fmt.Errorf("%w: blob %s is %d bytes, %s says %d", ErrSizeMismatch, d, size, from, desc.Size)})
	}
	return nil
}

// addReferrers marks, recursively, the manifests among blobs that are not
// marked yet and whose subject is a reachable manifest (with everything
// they reference). blobs is every blob the layout holds; each unmarked one
// of at most maxReferrerManifest bytes that looks like JSON is read once.
func (w *walker) addReferrers(ctx context.Context, blobs []blobInfo) error {
	bySubject := map[digest.Digest][]ocispec.Descriptor{}
	for _, b := range blobs {
		if _, ok := w.marked[b.digest]; ok || b.size > maxReferrerManifest || b.size < 2 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := sniffManifest(ctx, w.src, b.digest, b.size)
		if err != nil || m == nil || m.Subject == nil || ValidateDigest(m.Subject.Digest) != nil {
			continue // not a referrer: layers, configs, garbage
		}
		bySubject[m.Subject.Digest] = append(bySubject[m.Subject.Digest], ocispec.Descriptor{MediaType: m.MediaType, Digest: b.digest, Size: b.size})
	}
	if len(bySubject) == 0 {
		return nil
	}
	for i := 0; i < len(w.manifests); i++ {
		subject := w.manifests[i]
		for _, r := range bySubject[subject] {
			w.queue = append(w.queue, pendingManifest{r, "the subject relation to manifest " + string(subject)})
		}
		delete(bySubject, subject)
		if err := w.run(ctx); err != nil {
			return err
		}
	}
	return nil
}

// sniffManifest parses blob d as a manifest if it starts like a JSON
// object; it returns nil, nil for anything else.
func sniffManifest(ctx context.Context, src blobSource, d digest.Digest, size int64) (*manifestDoc, error) {
	rc, _, err := src.ReadBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var head [64]byte
	n, _ := io.ReadFull(rc, head[:min(int64(len(head)), size)])
	if t := bytes.TrimLeft(head[:n], " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, nil
	}
	if _, err := rc.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(ctxReader{ctx, rc}, maxReferrerManifest+1))
	if err != nil || len(data) > maxReferrerManifest {
		return nil, err
	}
	m, err := parseManifest(data)
	if err != nil {
		return nil, nil
	}
	return m, nil
}
