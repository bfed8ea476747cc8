package bundle

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// smallBlob is the largest blob read into memory by the engine's job
// before the tar is locked; larger ones stream straight into the tar
// while it is locked. Jobs × smallBlob bounds the memory create uses for
// content.
const smallBlob = 1 << 20

// copyBuf is the buffer a large blob streams through.
const copyBuf = 256 << 10

// tarTarget writes blobs and manifests into one tar stream: the copy
// engine's target for bundle create, seen through an imageTarget per
// image. Writes are serialized; a write that fails after its header went
// out leaves the tar unusable, and every later write fails.
type tarTarget struct {
	name  string
	since *sinceSet

	writeMu sync.Mutex // held while an entry is written
	tw      *tar.Writer
	buf     []byte
	dirs    map[string]bool
	// small holds smallBlob buffers, reused so that reading many small
	// blobs makes no garbage: memory stays at Jobs buffers.
	small sync.Pool

	mu      sync.Mutex
	broken  error
	written map[digest.Digest]bool
	blobs   []Blob
	omitted map[digest.Digest]Blob
	onBreak func(error)
}

func newTarTarget(name string, w io.Writer, since *sinceSet) *tarTarget {
	return &tarTarget{
		name:    name,
		since:   since,
		tw:      tar.NewWriter(w),
		buf:     make([]byte, copyBuf),
		dirs:    map[string]bool{},
		written: map[digest.Digest]bool{},
		omitted: map[digest.Digest]Blob{},
	}
}

// header describes an entry. Every entry has the same mtime and owner, so
// the same content gives the same bytes.
func header(name string, typ byte, size int64) *tar.Header {
	mode := int64(0o644)
	if typ == tar.TypeDir {
		mode = 0o755
	}
	return &tar.Header{Typeflag: typ, Name: name, Size: size, Mode: mode, ModTime: time.Unix(0, 0)}
}

// fail records that the tar is broken.
func (t *tarTarget) fail(err error) error {
	t.mu.Lock()
	if t.broken == nil {
		t.broken = err
		if t.onBreak != nil {
			t.onBreak(err)
		}
	}
	t.mu.Unlock()
	return err
}

func (t *tarTarget) brokenErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.broken
}

// writeFile writes a small file (oci-layout, index.json, the catalog).
func (t *tarTarget) writeFile(name string, data []byte) error {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	if err := t.brokenErr(); err != nil {
		return err
	}
	if err := t.tw.WriteHeader(header(name, tar.TypeReg, int64(len(data)))); err != nil {
		return t.fail(fmt.Errorf("writing %s into %s: %w", name, t.name, err))
	}
	if _, err := t.tw.Write(data); err != nil {
		return t.fail(fmt.Errorf("writing %s into %s: %w", name, t.name, err))
	}
	return nil
}

// dir writes a directory entry once; writeMu is held.
func (t *tarTarget) dir(name string) error {
	if t.dirs[name] {
		return nil
	}
	if err := t.tw.WriteHeader(header(name, tar.TypeDir, 0)); err != nil {
		return t.fail(fmt.Errorf("writing %s into %s: %w", name, t.name, err))
	}
	t.dirs[name] = true
	return nil
}

// close ends the tar stream.
func (t *tarTarget) close() error {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	if err := t.brokenErr(); err != nil {
		return err
	}
	if err := t.tw.Close(); err != nil {
		return t.fail(fmt.Errorf("finishing %s: %w", t.name, err))
	}
	return nil
}

// has reports whether d is in the tar.
func (t *tarTarget) has(d digest.Digest) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.written[d]
}

// blobExists: a blob is there when it is in the tar already, or when a
// receipt says the far side has it (then it is recorded as omitted).
func (t *tarTarget) blobExists(desc ocispec.Descriptor) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken != nil {
		return false, t.broken
	}
	if t.written[desc.Digest] {
		return true, nil
	}
	if b, ok := t.since.has(desc); ok {
		if _, done := t.omitted[desc.Digest]; !done {
			t.omitted[desc.Digest] = Blob{Digest: desc.Digest, Size: desc.Size, MediaType: desc.MediaType, Repository: b.Repository}
		}
		return true, nil
	}
	return false, nil
}

// writeBlob writes a blob of desc.Size bytes read from r, which the engine
// verifies as it is read: small blobs are read whole before the tar is
// locked (a bad one leaves the tar as it was, and the engine may retry),
// large ones are streamed into it under the lock.
func (t *tarTarget) writeBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	if desc.Size < 0 {
		return fmt.Errorf("blob %s: negative size %d", desc.Digest, desc.Size)
	}
	var data []byte
	if desc.Size <= smallBlob {
		bp, _ := t.small.Get().(*[]byte)
		if bp == nil {
			b := make([]byte, smallBlob)
			bp = &b
		}
		defer t.small.Put(bp)
		data = (*bp)[:desc.Size]
		if _, err := io.ReadFull(r, data); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w: blob %s: shorter than its %d bytes", transfer.ErrSizeMismatch, desc.Digest, desc.Size)
			}
			return err
		}
		// Read to the end: the engine's verifier reports a wrong digest
		// or extra bytes there.
		var one [1]byte
		if n, err := r.Read(one[:]); n > 0 {
			return fmt.Errorf("%w: blob %s: longer than its %d bytes", transfer.ErrSizeMismatch, desc.Digest, desc.Size)
		} else if err != io.EOF {
			if err == nil {
				err = fmt.Errorf("%w: blob %s: the stream did not end after %d bytes", transfer.ErrSizeMismatch, desc.Digest, desc.Size)
			}
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	if err := t.brokenErr(); err != nil {
		return err
	}
	if t.has(desc.Digest) {
		return nil // written meanwhile under another name (a manifest)
	}
	if err := t.dir("blobs/" + desc.Digest.Algorithm().String() + "/"); err != nil {
		return err
	}
	entry := "blobs/" + desc.Digest.Algorithm().String() + "/" + desc.Digest.Encoded()
	if err := t.tw.WriteHeader(header(entry, tar.TypeReg, desc.Size)); err != nil {
		return t.fail(fmt.Errorf("writing blob %s into %s: %w", desc.Digest, t.name, err))
	}
	if desc.Size <= smallBlob {
		if _, err := t.tw.Write(data); err != nil {
			return t.fail(fmt.Errorf("writing blob %s into %s: %w", desc.Digest, t.name, err))
		}
	} else {
		n, err := io.CopyBuffer(t.tw, ctxReader{ctx, r}, t.buf)
		if err == nil && n != desc.Size {
			err = fmt.Errorf("%w: blob %s: %d bytes, expected %d", transfer.ErrSizeMismatch, desc.Digest, n, desc.Size)
		}
		if err != nil {
			// Half an entry is in the tar: it cannot be taken back.
			return t.fail(fmt.Errorf("writing blob %s into %s failed after %d of %d bytes, so the bundle cannot be finished: %w", desc.Digest, t.name, n, desc.Size, err))
		}
	}
	t.mu.Lock()
	t.written[desc.Digest] = true
	t.blobs = append(t.blobs, Blob{Digest: desc.Digest, Size: desc.Size, MediaType: desc.MediaType})
	t.mu.Unlock()
	return nil
}

// writeManifest writes a manifest once.
func (t *tarTarget) writeManifest(ctx context.Context, m *transfer.Manifest) error {
	d := m.Descriptor
	if t.has(d.Digest) {
		return nil
	}
	return t.writeBlob(ctx, d, &manifestReader{raw: m.Raw})
}

// manifestReader reads a manifest's bytes, which the engine verified when
// it fetched them.
type manifestReader struct {
	raw []byte
	off int
}

func (r *manifestReader) Read(p []byte) (int, error) {
	if r.off >= len(r.raw) {
		return 0, io.EOF
	}
	n := copy(p, r.raw[r.off:])
	r.off += n
	return n, nil
}

// ctxReader stops reading when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// root is a manifest the engine wrote as a root: the image, or a referrer.
type root struct {
	m   *transfer.Manifest
	tag string
}

// imageTarget is the tar target as one image's copy sees it: it shares
// the tar (and its name, so the engine moves each blob once across
// images) and records the manifests written for this image.
type imageTarget struct {
	t *tarTarget

	mu        sync.Mutex
	manifests map[digest.Digest]*transfer.Manifest
	roots     []root
}

var _ transfer.Target = (*imageTarget)(nil)

func (v *imageTarget) String() string { return v.t.name }

// WritesSerially marks a bundle as a transfer.SerialTarget: one tar
// stream takes one blob at a time.
func (v *imageTarget) WritesSerially() {}

func (v *imageTarget) BlobExists(_ context.Context, desc ocispec.Descriptor) (bool, error) {
	return v.t.blobExists(desc)
}

func (v *imageTarget) WriteBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	return v.t.writeBlob(ctx, desc, r)
}

func (v *imageTarget) ManifestExists(_ context.Context, desc ocispec.Descriptor) (bool, error) {
	return v.t.has(desc.Digest), nil
}

func (v *imageTarget) PutManifest(ctx context.Context, m *transfer.Manifest, tag string) error {
	return v.PutRoot(ctx, m, tag, tag != "" || m.Subject != nil)
}

// PutRoot writes m into the tar (once, however many images have it) and
// records it, and whether it is a root, for index.json and the catalog.
func (v *imageTarget) PutRoot(ctx context.Context, m *transfer.Manifest, tag string, isRoot bool) error {
	if err := v.t.writeManifest(ctx, m); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.manifests[m.Descriptor.Digest] = m
	if isRoot {
		v.roots = append(v.roots, root{m: m, tag: tag})
	}
	return nil
}

func (v *imageTarget) TagDigest(_ context.Context, tag string) (digest.Digest, error) {
	return "", fmt.Errorf("%w: %s:%s", transfer.ErrNotFound, v.t.name, tag)
}
