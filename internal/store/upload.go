package store

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
)

// ErrUploadClosed is returned by Write, Commit and Cancel on an upload that
// was already committed or cancelled.
var ErrUploadClosed = errors.New("upload already committed or cancelled")

// Upload is a blob being written whose digest is known only at the end, as
// with the chunked uploads of the distribution spec. It is safe for
// concurrent use, though writes from several goroutines interleave in no
// defined order. An Upload that is neither committed nor cancelled keeps its
// temp file until the process ends; the next Open or GC removes it then.
type Upload struct {
	s   *Store
	alg digest.Algorithm

	mu   sync.Mutex
	t    *tempFile
	h    hash.Hash
	n    int64
	done bool
}

// NewUpload starts an upload hashed with alg (sha256 or sha512). If the
// digest given to Commit uses another algorithm, Commit re-reads the data.
func (s *Store) NewUpload(alg digest.Algorithm) (*Upload, error) {
	if err := validateAlg(alg); err != nil {
		return nil, err
	}
	t, err := s.createTemp("upload")
	if err != nil {
		return nil, err
	}
	return &Upload{s: s, alg: alg, t: t, h: alg.Hash()}, nil
}

// Write appends p to the upload.
func (u *Upload) Write(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return 0, ErrUploadClosed
	}
	n, err := u.t.f.Write(p)
	u.h.Write(p[:n])
	u.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("writing upload to OCI layout %s: %w", u.s.dir, err)
	}
	return n, nil
}

// Size returns the number of bytes written so far.
func (u *Upload) Size() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n
}

// Digest returns the digest, in the upload's algorithm, of the bytes
// written so far. A caller can check the content with it before Commit
// makes it durable, to act on good content without waiting for the disk.
func (u *Upload) Digest() digest.Digest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return digest.NewDigest(u.alg, u.h) // Sum leaves the hash running
}

// Commit checks that the data hashes to want, makes it durable and moves it
// to its digest path. The upload is finished whatever the outcome: on a
// mismatch (an error wrapping ErrDigestMismatch and naming want) or any
// other error nothing is left behind. If the blob is already present the
// data is dropped and the present blob's mtime refreshed.
func (u *Upload) Commit(ctx context.Context, want digest.Digest) error {
	if err := ValidateDigest(want); err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return ErrUploadClosed
	}
	u.done = true
	if err := ctx.Err(); err != nil {
		u.t.abort()
		return fmt.Errorf("committing upload of blob %s: %w", want, err)
	}
	got := digest.NewDigest(u.alg, u.h)
	if want.Algorithm() != u.alg {
		if _, err := u.t.f.Seek(0, io.SeekStart); err != nil {
			u.t.abort()
			return fmt.Errorf("committing upload of blob %s: %w", want, err)
		}
		h := want.Algorithm().Hash()
		if _, err := copyHashing(ctx, io.Discard, h, u.t.f); err != nil {
			u.t.abort()
			return fmt.Errorf("committing upload of blob %s: %w", want, err)
		}
		got = digest.NewDigest(want.Algorithm(), h)
	}
	if got != want {
		u.t.abort()
		return fmt.Errorf("%w: blob %s: the %d uploaded bytes hash to %s: upload the content again", ErrDigestMismatch, want, u.n, got)
	}
	if done, err := u.s.existing(want, u.n); done || err != nil {
		u.t.abort()
		return err
	}
	final := u.s.blobPath(want)
	if err := ensureDir(filepath.Dir(final)); err != nil {
		u.t.abort()
		return fmt.Errorf("committing upload of blob %s to OCI layout %s: %w", want, u.s.dir, err)
	}
	if err := u.t.commit(final); err != nil {
		if fi, serr := os.Stat(final); serr == nil && fi.Size() == u.n {
			return nil
		}
		return fmt.Errorf("committing upload of blob %s: %w", want, err)
	}
	return nil
}

// Cancel drops the upload and its temp file. Cancelling a finished upload
// returns ErrUploadClosed.
func (u *Upload) Cancel() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return ErrUploadClosed
	}
	u.done = true
	u.t.abort()
	return nil
}
