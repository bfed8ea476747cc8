package bundle

import (
	"archive/tar"
	"bytes"
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

// copyBuf is the buffer a blob streams through into the bundle.
const copyBuf = 256 << 10

// hashWindow is how far past the done part of the stream a blob may start
// (tarTarget.window).
// Blobs complete in about the order they start, and the parts are hashed
// as the done part grows: the window bounds what is left to hash when the
// last blob is in, and the blobs streamed at once when they are large.
const hashWindow = 256 << 20

// tarTarget writes blobs and manifests into one tar stream: the copy
// engine's target for bundle create, seen through an imageTarget per
// image. Each entry gets its place in the stream when it starts (its
// header and the room for its content), so that many blobs stream in at
// once, each into its own place, as they arrive. A blob whose copy fails
// keeps its place, and the engine's next attempt writes it again there;
// an entry that never completes leaves a gap, and the bundle is not
// committed.
type tarTarget struct {
	name  string
	since *sinceSet
	out   *partWriter
	bufs  sync.Pool // copyBuf buffers: at most Jobs are in use
	// window is hashWindow, or a small one in tests.
	window int64

	mu      sync.Mutex
	broken  error
	next    int64 // where the next entry starts
	dirs    map[string]bool
	slots   map[digest.Digest]*slot // blobs placed but not yet written
	written map[digest.Digest]bool
	blobs   []Blob
	omitted map[digest.Digest]Blob
	onBreak func(error)
}

// slot is an entry's place in the stream: its header at start, its
// content at body, and its padding up to end. A blob's slot is held by
// one writer at a time: busy is closed when that writer returns.
type slot struct {
	start, body, end int64
	busy             chan struct{}
}

func newTarTarget(name string, out *partWriter, since *sinceSet) *tarTarget {
	return &tarTarget{
		name:    name,
		since:   since,
		out:     out,
		window:  hashWindow,
		dirs:    map[string]bool{},
		slots:   map[digest.Digest]*slot{},
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
	defer t.mu.Unlock()
	return t.failLocked(err)
}

func (t *tarTarget) failLocked(err error) error {
	if t.broken == nil {
		t.broken = err
		if t.onBreak != nil {
			t.onBreak(err)
		}
	}
	return err
}

func (t *tarTarget) brokenErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.broken
}

// place gives an entry of size bytes its place at the end of the stream
// and writes its header there; t.mu is held.
func (t *tarTarget) place(name string, typ byte, size int64) (*slot, error) {
	if t.broken != nil {
		return nil, t.broken
	}
	var hdr bytes.Buffer
	if err := tar.NewWriter(&hdr).WriteHeader(header(name, typ, size)); err != nil {
		return nil, t.failLocked(fmt.Errorf("writing %s into %s: %w", name, t.name, err))
	}
	s := &slot{start: t.next, body: t.next + int64(hdr.Len())}
	s.end = s.body + size + padding(size)
	if _, err := t.out.WriteAt(hdr.Bytes(), s.start); err != nil {
		return nil, t.failLocked(fmt.Errorf("writing %s into %s: %w", name, t.name, err))
	}
	t.next = s.end
	return s, nil
}

// padding is what follows size bytes of content to the next tar block.
func padding(size int64) int64 {
	return -size & (blockSize - 1)
}

const blockSize = 512

// zeros pads entries.
var zeros [2 * blockSize]byte

// writeFile writes a small file (oci-layout, index.json, the catalog).
func (t *tarTarget) writeFile(name string, data []byte) error {
	t.mu.Lock()
	s, err := t.place(name, tar.TypeReg, int64(len(data)))
	t.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := t.out.WriteAt(data, s.body); err != nil {
		return t.fail(fmt.Errorf("writing %s into %s: %w", name, t.name, err))
	}
	if _, err := t.out.WriteAt(zeros[:padding(int64(len(data)))], s.body+int64(len(data))); err != nil {
		return t.fail(fmt.Errorf("writing %s into %s: %w", name, t.name, err))
	}
	t.out.Done(s.start, s.end)
	return nil
}

// dir writes a directory entry once; t.mu is held.
func (t *tarTarget) dir(name string) error {
	if t.dirs[name] {
		return nil
	}
	s, err := t.place(name, tar.TypeDir, 0)
	if err != nil {
		return err
	}
	t.dirs[name] = true
	t.out.Done(s.start, s.end)
	return nil
}

// writeDirs writes directory entries.
func (t *tarTarget) writeDirs(names ...string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range names {
		if err := t.dir(n); err != nil {
			return err
		}
	}
	return nil
}

// close ends the tar stream with its two zero blocks and returns its size.
func (t *tarTarget) close() (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken != nil {
		return 0, t.broken
	}
	if _, err := t.out.WriteAt(zeros[:], t.next); err != nil {
		return 0, t.failLocked(fmt.Errorf("finishing %s: %w", t.name, err))
	}
	t.out.Done(t.next, t.next+int64(len(zeros)))
	t.next += int64(len(zeros))
	return t.next, nil
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

// claim returns desc's slot for the caller to write, placing it first when
// it has none; nil when the blob is written already. A slot another writer
// holds is waited for.
func (t *tarTarget) claim(ctx context.Context, desc ocispec.Descriptor) (*slot, error) {
	for {
		t.mu.Lock()
		if t.broken != nil {
			t.mu.Unlock()
			return nil, t.broken
		}
		if t.written[desc.Digest] {
			t.mu.Unlock()
			return nil, nil // written meanwhile, maybe under another name (a manifest)
		}
		s := t.slots[desc.Digest]
		if s == nil && t.next > t.window {
			// Too far ahead of what is done: wait, so that the part
			// hasher keeps up instead of hashing everything at the end.
			if ahead := t.next - t.window; !t.out.prefixAt(ahead) {
				t.mu.Unlock()
				if err := t.out.waitPrefix(ctx, ahead); err != nil {
					return nil, err
				}
				continue
			}
		}
		if s == nil {
			alg := desc.Digest.Algorithm().String()
			if err := t.dir("blobs/" + alg + "/"); err != nil {
				t.mu.Unlock()
				return nil, err
			}
			var err error
			if s, err = t.place("blobs/"+alg+"/"+desc.Digest.Encoded(), tar.TypeReg, desc.Size); err != nil {
				t.mu.Unlock()
				return nil, err
			}
			t.slots[desc.Digest] = s
		}
		busy := s.busy
		if busy == nil {
			s.busy = make(chan struct{})
			t.mu.Unlock()
			return s, nil
		}
		t.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// release ends the caller's hold on s; ok records the blob as written.
func (t *tarTarget) release(s *slot, desc ocispec.Descriptor, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	close(s.busy)
	s.busy = nil
	if ok {
		delete(t.slots, desc.Digest)
		t.written[desc.Digest] = true
		t.blobs = append(t.blobs, Blob{Digest: desc.Digest, Size: desc.Size, MediaType: desc.MediaType})
		t.out.Done(s.start, s.end)
	}
}

// writeBlob writes a blob of desc.Size bytes read from r, which the engine
// verifies as it is read, into the blob's place in the stream. The place
// counts as written only once r has ended with every byte verified; when
// a read fails, the engine may try again, into the same place. A failed
// write to the bundle's files breaks the tar.
func (t *tarTarget) writeBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) (err error) {
	if desc.Size < 0 {
		return fmt.Errorf("blob %s: negative size %d", desc.Digest, desc.Size)
	}
	s, err := t.claim(ctx, desc)
	if s == nil || err != nil {
		return err
	}
	defer func() { t.release(s, desc, err == nil) }()
	bp, _ := t.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, copyBuf)
		bp = &b
	}
	defer t.bufs.Put(bp)
	buf := *bp
	r = ctxReader{ctx, r}
	for n := int64(0); n < desc.Size; {
		k, rerr := io.ReadFull(r, buf[:min(int64(len(buf)), desc.Size-n)])
		if k > 0 {
			if _, err := t.out.WriteAt(buf[:k], s.body+n); err != nil {
				return t.fail(fmt.Errorf("writing blob %s into %s: %w", desc.Digest, t.name, err))
			}
			n += int64(k)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: blob %s: shorter than its %d bytes: the stream ended after %d", transfer.ErrSizeMismatch, desc.Digest, desc.Size, n)
		}
		if rerr != nil {
			return rerr
		}
	}
	// Read to the end: the engine's verifier reports a wrong digest or
	// extra bytes there.
	var one [1]byte
	if n, err := r.Read(one[:]); n > 0 {
		return fmt.Errorf("%w: blob %s: longer than its %d bytes", transfer.ErrSizeMismatch, desc.Digest, desc.Size)
	} else if err != io.EOF {
		if err == nil {
			err = fmt.Errorf("%w: blob %s: the stream did not end after %d bytes", transfer.ErrSizeMismatch, desc.Digest, desc.Size)
		}
		return err
	}
	if pad := padding(desc.Size); pad > 0 {
		if _, err := t.out.WriteAt(zeros[:pad], s.body+desc.Size); err != nil {
			return t.fail(fmt.Errorf("writing blob %s into %s: %w", desc.Digest, t.name, err))
		}
	}
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
