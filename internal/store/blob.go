package store

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// copyBufSize is the buffer used to stream blobs to disk.
const copyBufSize = 256 << 10

// Stat returns the size of blob d. The error wraps ErrNotFound when the
// layout does not hold it, and ErrInvalidDigest when d is malformed.
func (s *Store) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	if err := ValidateDigest(d); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	fi, err := os.Stat(s.blobPath(d))
	if err != nil {
		return 0, s.blobErr(d, err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("blob %s in OCI layout %s: %s is not a regular file: remove it", d, s.dir, s.blobPath(d))
	}
	return fi.Size(), nil
}

// blobErr turns a file error about blob d into one that names it.
func (s *Store) blobErr(d digest.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: blob %s in OCI layout %s", ErrNotFound, d, s.dir)
	}
	return fmt.Errorf("blob %s in OCI layout %s: %w", d, s.dir, err)
}

// ReadBlob opens blob d and returns it with its size. The reader is an
// *os.File, so it also implements io.ReaderAt; seek for Range requests.
// ReadBlob does not re-hash the content: it was verified when it was
// written, and Check verifies everything on demand; a caller that does not
// trust the directory verifies the digest as it streams.
func (s *Store) ReadBlob(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, int64, error) {
	if err := ValidateDigest(d); err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(s.blobPath(d))
	if err != nil {
		return nil, 0, s.blobErr(d, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, s.blobErr(d, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("blob %s in OCI layout %s: %s is not a regular file: remove it", d, s.dir, s.blobPath(d))
	}
	return f, fi.Size(), nil
}

// WriteBlob stores the content of r as blob d. size is the declared size, or
// negative when unknown.
//
// If the blob is already present, r is not read: its modification time is
// refreshed (so that the GC grace period protects it until the manifest that
// uses it is stored) and WriteBlob returns nil, or an error wrapping
// ErrSizeMismatch when the present blob has another size than declared.
//
// Otherwise r is streamed into a temp file while it is hashed, reading at
// most size+1 bytes; the digest and the size are checked, the file is
// fsynced and renamed to blobs/<alg>/<hex>. When the content is wrong the
// error wraps ErrDigestMismatch or ErrSizeMismatch, names d, and nothing is
// left behind. Cancelling ctx stops the copy at the next read of r.
//
// Several goroutines or processes may write the same blob at once; each
// verifies its own copy and the last rename wins with identical bytes.
func (s *Store) WriteBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	if err := ValidateDigest(d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("writing blob %s: %w", d, err)
	}
	final := s.blobPath(d)
	if done, err := s.existing(d, size); done || err != nil {
		return err
	}

	t, err := s.createTemp("blob")
	if err != nil {
		return err
	}
	h := d.Algorithm().Hash()
	src := r
	if size >= 0 {
		src = io.LimitReader(r, size+1)
	}
	n, err := copyHashing(ctx, t.f, h, src)
	if err != nil {
		t.abort()
		return fmt.Errorf("writing blob %s to OCI layout %s: %w", d, s.dir, err)
	}
	if err := verify(d, size, n, h); err != nil {
		t.abort()
		return err
	}
	if err := ensureDir(filepath.Dir(final)); err != nil {
		t.abort()
		return fmt.Errorf("writing blob %s to OCI layout %s: %w", d, s.dir, err)
	}
	if err := t.commit(final); err != nil {
		// Another writer may have renamed the same blob into place, which
		// some platforms refuse to replace: that is success.
		if fi, serr := os.Stat(final); serr == nil && fi.Size() == n {
			return nil
		}
		return fmt.Errorf("writing blob %s: %w", d, err)
	}
	return nil
}

// existing reports whether blob d is present; if so it refreshes its mtime
// and checks the declared size.
func (s *Store) existing(d digest.Digest, size int64) (bool, error) {
	p := s.blobPath(d)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, s.blobErr(d, err)
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("blob %s in OCI layout %s: %s is not a regular file: remove it", d, s.dir, p)
	}
	if size >= 0 && fi.Size() != size {
		return true, fmt.Errorf("%w: blob %s: the layout %s holds %d bytes, the descriptor says %d: the descriptor is wrong or the file is damaged (run a check of the layout)", ErrSizeMismatch, d, s.dir, fi.Size(), size)
	}
	if err := touch(p); err != nil {
		return true, s.blobErr(d, err)
	}
	return true, nil
}

// ensureDir creates dir (blobs/<alg>) if needed, durably.
func ensureDir(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

func touch(p string) error {
	now := time.Now()
	return os.Chtimes(p, now, now)
}

// verify checks what was read against the expected digest and size.
func verify(d digest.Digest, size, n int64, h hash.Hash) error {
	if size >= 0 && n > size {
		return fmt.Errorf("%w: blob %s: the content is longer than the declared %d bytes: the source sent more than its descriptor says", ErrSizeMismatch, d, size)
	}
	if size >= 0 && n < size {
		return fmt.Errorf("%w: blob %s: got %d bytes, expected %d: the content was cut short; retry", ErrSizeMismatch, d, n, size)
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		return fmt.Errorf("%w: blob %s: the content hashes to %s: the source sent other content than it names", ErrDigestMismatch, d, got)
	}
	return nil
}

// copyHashing copies src to w and h, checking ctx before every read.
func copyHashing(ctx context.Context, w io.Writer, h hash.Hash, src io.Reader) (int64, error) {
	buf := make([]byte, copyBufSize)
	return io.CopyBuffer(io.MultiWriter(w, h), ctxReader{ctx, src}, buf)
}

// ctxReader stops a copy when its context is done.
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

// DeleteBlob removes blob d. It does not check whether a manifest still uses
// it; GC is the safe way to free space. The error wraps ErrNotFound when the
// blob is absent.
func (s *Store) DeleteBlob(ctx context.Context, d digest.Digest) error {
	if err := ValidateDigest(d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Remove(s.blobPath(d)); err != nil {
		return s.blobErr(d, err)
	}
	return nil
}

// Touch refreshes the modification time of blob d, so that GC's grace
// period protects it from now on. The error wraps ErrNotFound when the blob
// is absent.
func (s *Store) Touch(ctx context.Context, d digest.Digest) error {
	if err := ValidateDigest(d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := touch(s.blobPath(d)); err != nil {
		return s.blobErr(d, err)
	}
	return nil
}

// blobInfo is one file found under blobs/.
type blobInfo struct {
	digest digest.Digest
	path   string // slash-separated, relative to the layout
	size   int64
	mtime  time.Time
}

// listBlobs lists the blobs of the supported algorithms. Files whose names
// are not valid digests, and entries that are not regular files, are
// returned as problems rather than blobs, so that nothing acts on them.
func (s *Store) listBlobs(ctx context.Context) ([]blobInfo, []Problem, error) {
	var blobs []blobInfo
	var problems []Problem
	for _, alg := range supportedAlgs() {
		dir := filepath.Join(s.dir, ocispec.ImageBlobsDir, string(alg))
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("listing blobs of OCI layout %s: %w", s.dir, err)
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			rel := ocispec.ImageBlobsDir + "/" + string(alg) + "/" + e.Name()
			d := digest.NewDigestFromEncoded(alg, e.Name())
			if err := ValidateDigest(d); err != nil {
				problems = append(problems, Problem{Path: rel, Err: fmt.Errorf("%s in OCI layout %s: the name is not a digest (%w): remove the file", rel, s.dir, err)})
				continue
			}
			if !e.Type().IsRegular() {
				problems = append(problems, Problem{Digest: d, Path: rel, Err: fmt.Errorf("%s in OCI layout %s is not a regular file: remove it", rel, s.dir)})
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed meanwhile
			}
			if err != nil {
				return nil, nil, fmt.Errorf("listing blobs of OCI layout %s: %w", s.dir, err)
			}
			blobs = append(blobs, blobInfo{digest: d, path: rel, size: fi.Size(), mtime: fi.ModTime()})
		}
	}
	return blobs, problems, nil
}
