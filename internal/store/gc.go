package store

import (
	"context"
	"errors"
	"fmt"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
)

// DefaultGrace is the grace period of GC when GCOptions.Grace is zero.
const DefaultGrace = 10 * time.Minute

// GCOptions tunes GC.
type GCOptions struct {
	// Grace protects blobs modified within this duration: they are never
	// swept, so that a blob uploaded just before its manifest survives a GC
	// that runs in between (ROBUSTNESS row 29). Zero means DefaultGrace; a
	// negative value means no grace at all.
	Grace time.Duration
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
	// Untagged drops the index.json entries without a ref.name that
	// nothing kept needs (an image pushed by digest and never tagged),
	// and then sweeps what only they used. An untagged entry stays when
	// it is reachable from a tagged one or refers (subject) to something
	// kept: signatures and SBOMs of kept images survive.
	Untagged bool
	// Partial accepts manifests that are listed but missing, as in a
	// pull-through cache that holds only the platforms of an index that
	// were asked for: they are skipped instead of stopping GC.
	Partial bool
}

// GCReport says what GC removed (or, with DryRun, would remove).
type GCReport struct {
	// Removed lists the swept blobs, sorted.
	Removed []digest.Digest
	// RemovedBytes is the sum of their sizes.
	RemovedBytes int64
	// Kept counts the blobs left in place: reachable, or within the grace
	// period.
	Kept int
	// TempRemoved counts stale temp files removed (never with DryRun).
	TempRemoved int
	// Dropped lists the untagged index.json entries removed (Untagged).
	Dropped []ocispec.Descriptor
}

// GC removes the blobs that nothing reachable from index.json uses.
//
// It marks, starting from every entry of index.json: manifests, the child
// manifests of indexes, the config and layers of images, and, recursively,
// every manifest whose subject is a marked manifest (referrers, found among
// the blobs of at most 4 MiB). It then sweeps the unmarked blobs of
// blobs/sha256 and blobs/sha512 that are older than the grace period, and
// removes stale temp files.
//
// Safety first: if a reachable manifest is missing or cannot be parsed, GC
// removes nothing and returns an error naming it. GC holds the index lock
// while it marks and sweeps, so no index.json update interleaves with it.
func (s *Store) GC(ctx context.Context, opts GCOptions) (GCReport, error) {
	grace := opts.Grace
	switch {
	case grace == 0:
		grace = DefaultGrace
	case grace < 0:
		grace = 0
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return GCReport{}, err
	}
	defer unlock()

	idx, err := s.readIndexFile()
	if err != nil {
		return GCReport{}, err
	}
	blobs, _, err := s.listBlobs(ctx)
	if err != nil {
		return GCReport{}, err
	}
	w := newWalker(s, false, func(p Problem) error {
		if opts.Partial && errors.Is(p.Err, ErrNotFound) {
			return nil
		}
		return fmt.Errorf("garbage collection of OCI layout %s stopped before removing anything: %w (restore or remove the index.json entry that needs it, then retry)", s.dir, p.Err)
	})
	cutoff := time.Now().Add(-grace)
	recent := map[digest.Digest]bool{}
	for _, b := range blobs {
		if b.mtime.After(cutoff) {
			recent[b.digest] = true
		}
	}
	roots := idx
	if opts.Untagged {
		// Tagged entries are roots, and so are untagged ones written within
		// the grace period: a push by digest whose tag is yet to come.
		kept := *idx
		kept.Manifests = nil
		for _, d := range idx.Manifests {
			if d.Annotations[ocispec.AnnotationRefName] != "" || recent[d.Digest] {
				kept.Manifests = append(kept.Manifests, d)
			}
		}
		roots = &kept
	}
	w.addRoots(roots)
	if err := w.run(ctx); err != nil {
		return GCReport{}, err
	}
	if err := w.addReferrers(ctx, blobs); err != nil {
		return GCReport{}, err
	}

	var rep GCReport
	if opts.Untagged {
		if err := s.dropUntagged(ctx, idx, w.marked, opts.DryRun, &rep); err != nil {
			return rep, err
		}
	}
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("garbage collection of OCI layout %s: %w", s.dir, err)
		}
		if _, ok := w.marked[b.digest]; ok || b.mtime.After(cutoff) {
			rep.Kept++
			continue
		}
		if !opts.DryRun {
			p := filepath.Join(s.dir, filepath.FromSlash(b.path))
			// A writer may have touched the blob since it was listed.
			fi, err := os.Lstat(p)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err == nil && fi.ModTime().After(cutoff) {
				rep.Kept++
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				slices.Sort(rep.Removed)
				return rep, fmt.Errorf("garbage collection of OCI layout %s: removing blob %s: %w", s.dir, b.digest, err)
			}
		}
		rep.Removed = append(rep.Removed, b.digest)
		rep.RemovedBytes += b.size
	}
	slices.Sort(rep.Removed)
	if !opts.DryRun {
		n, err := s.cleanTemp()
		rep.TempRemoved = n
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// dropUntagged removes the untagged index entries GC did not mark (the
// recent ones were roots, so they are marked). The caller holds the lock.
func (s *Store) dropUntagged(ctx context.Context, idx *ocispec.Index, marked map[digest.Digest]struct{}, dryRun bool, rep *GCReport) error {
	keep := idx.Manifests[:0:0]
	for _, d := range idx.Manifests {
		if _, ok := marked[d.Digest]; ok || d.Annotations[ocispec.AnnotationRefName] != "" {
			keep = append(keep, d)
			continue
		}
		rep.Dropped = append(rep.Dropped, d)
	}
	if len(rep.Dropped) == 0 || dryRun {
		return nil
	}
	return s.updateLocked(ctx, func(cur *ocispec.Index) error {
		cur.Manifests = keep
		return nil
	})
}
