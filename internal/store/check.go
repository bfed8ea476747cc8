package store

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Problem is one integrity problem found by Check.
type Problem struct {
	// Digest is the blob concerned, when there is one.
	Digest digest.Digest
	// Path is the slash-separated path of the file inside the layout (or
	// archive), when there is one.
	Path string
	// Err says what is wrong and names the blob and who references it. It
	// wraps ErrDigestMismatch, ErrSizeMismatch, ErrNotFound,
	// ErrInvalidManifest or ErrInvalidDigest.
	Err error
}

// Check verifies the whole layout: every blob under blobs/sha256 and
// blobs/sha512 hashes to its name, and every manifest reachable from
// index.json is present and parseable and has every blob and child manifest
// it references present with the declared size (foreign layers may be
// absent). It reads every byte of every blob. The problems come sorted by
// path; the error is only for failures to read the layout at all, or a
// cancelled ctx.
func (s *Store) Check(ctx context.Context) ([]Problem, error) {
	idx, err := s.readIndexFile()
	if err != nil {
		return nil, err
	}
	blobs, problems, err := s.listBlobs(ctx)
	if err != nil {
		return nil, err
	}
	return checkLayout(ctx, s, idx, blobs, problems, runtime.GOMAXPROCS(0))
}

// checkLayout hashes every blob of a layout, workers at a time, and walks
// its graph.
func checkLayout(ctx context.Context, src blobSource, idx *ocispec.Index, blobs []blobInfo, problems []Problem, workers int) ([]Problem, error) {
	found, err := hashBlobs(ctx, src, blobs, workers)
	if err != nil {
		return nil, err
	}
	problems = append(problems, found...)
	w := newWalker(src, true, func(p Problem) error {
		problems = append(problems, p)
		return nil
	})
	w.addRoots(idx)
	if err := w.run(ctx); err != nil {
		return nil, err
	}
	slices.SortStableFunc(problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Path, b.Path), cmp.Compare(a.Digest, b.Digest))
	})
	return problems, nil
}

// hashBlobs runs hashBlob on each of blobs, workers (at least one) at a
// time, and returns the problems in the order of blobs; the error is the
// first failure to read at all.
func hashBlobs(ctx context.Context, src blobSource, blobs []blobInfo, workers int) ([]Problem, error) {
	found := make([]*Problem, len(blobs))
	errs := make([]error, len(blobs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(max(workers, 1), len(blobs)) {
		wg.Go(func() {
			for i := range next {
				found[i], errs[i] = hashBlob(ctx, src, blobs[i])
			}
		})
	}
feed:
	for i := range blobs {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	var problems []Problem
	for _, p := range found {
		if p != nil {
			problems = append(problems, *p)
		}
	}
	return problems, nil
}

// hashBlob checks that blob b hashes to its name and has its listed size.
func hashBlob(ctx context.Context, src blobSource, b blobInfo) (*Problem, error) {
	rc, _, err := src.ReadBlob(ctx, b.digest)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return &Problem{Digest: b.digest, Path: b.path, Err: fmt.Errorf("reading blob %s: %w", b.digest, err)}, nil
	}
	defer rc.Close()
	h := b.digest.Algorithm().Hash()
	n, err := copyHashing(ctx, io.Discard, h, rc)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return &Problem{Digest: b.digest, Path: b.path, Err: fmt.Errorf("reading blob %s: %w", b.digest, err)}, nil
	}
	if n != b.size {
		return &Problem{Digest: b.digest, Path: b.path, Err: fmt.Errorf("%w: blob %s: read %d bytes, the file is %d bytes", ErrSizeMismatch, b.digest, n, b.size)}, nil
	}
	if got := digest.NewDigest(b.digest.Algorithm(), h); got != b.digest {
		return &Problem{Digest: b.digest, Path: b.path, Err: fmt.Errorf("%w: blob %s: its content hashes to %s: the file is corrupt; copy the image again", ErrDigestMismatch, b.digest, got)}, nil
	}
	return nil, nil
}
