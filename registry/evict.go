package registry

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// evictionGrace is the grace period of the garbage collection that frees
// evicted images, and the age below which an image is never evicted: a
// blob written or used more recently may belong to a pull or a push in
// progress (ROBUSTNESS row 29). The cache can exceed its cap by what was
// fetched within it.
const evictionGrace = store.DefaultGrace

// evictor keeps a cache under Options.CacheMaxSize: when the blobs of the
// layout grow past it, the cached index.json entries used least recently
// are removed until the estimate is under nine tenths of the cap, and the
// store's garbage collection frees their blobs. The last use of an entry
// is its manifest blob's modification time (see cache.used). Only entries
// of cached repositories are evicted; pushed content stays.
type evictor struct {
	c    *cache
	size atomic.Int64 // bytes of blobs, estimated between runs
	kick chan struct{}
	done sync.WaitGroup
}

// startEvictor runs the evictor in the background until the cache's
// context ends; it runs once at the start, for a layout filled before.
func startEvictor(c *cache) *evictor {
	e := &evictor{c: c, kick: make(chan struct{}, 1)}
	e.kick <- struct{}{}
	e.done.Add(1)
	go e.loop()
	return e
}

func (e *evictor) loop() {
	defer e.done.Done()
	for {
		select {
		case <-e.c.ctx.Done():
			return
		case <-e.kick:
		}
		if err := e.run(e.c.ctx); err != nil && e.c.ctx.Err() == nil {
			e.c.s.log.Error("evicting from the cache", "error", err)
		}
	}
}

// wait returns when the loop has stopped.
func (e *evictor) wait() { e.done.Wait() }

// grew counts n more bytes and wakes the loop when the cap is passed.
func (e *evictor) grew(n int64) {
	if e.size.Add(n) <= e.c.maxSize {
		return
	}
	select {
	case e.kick <- struct{}{}:
	default: // a run is due already
	}
}

// blobFile is a blob on disk.
type blobFile struct {
	size  int64
	mtime time.Time
}

// run evicts until the layout is under the cap, if it is over.
func (e *evictor) run(ctx context.Context) error {
	c := e.c
	blobs, total, err := listBlobFiles(c.s.dir)
	if err != nil {
		return err
	}
	e.size.Store(total)
	if total <= c.maxSize {
		return nil
	}
	idx, err := c.s.rw.Index(ctx)
	if err != nil {
		return err
	}
	victims, err := e.choose(ctx, idx, blobs, total-c.maxSize/10*9)
	if err != nil || len(victims) == 0 {
		return err
	}
	err = c.s.rw.Update(ctx, func(idx *ocispec.Index) error {
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(e ocispec.Descriptor) bool { return victims[entryKey(e)] })
		return nil
	})
	c.s.gen.Add(1)
	if err != nil {
		return err
	}
	rep, err := c.s.rw.GC(ctx, store.GCOptions{Grace: evictionGrace, Partial: true})
	if err != nil {
		return err
	}
	e.size.Store(total - rep.RemovedBytes)
	c.s.log.Info("evicted from the cache", "entries", len(victims), "blobs", len(rep.Removed), "bytes", rep.RemovedBytes, "max", c.maxSize)
	return nil
}

// choose picks cached entries, least recently used first, until removing
// them frees at least excess bytes of blobs that no other entry uses.
// Entries used within the grace period are never picked.
func (e *evictor) choose(ctx context.Context, idx *ocispec.Index, blobs map[digest.Digest]blobFile, excess int64) (map[string]bool, error) {
	type candidate struct {
		key   string
		used  time.Time
		blobs []digest.Digest
	}
	users := map[digest.Digest]int{}
	var cands []candidate
	cutoff := time.Now().Add(-evictionGrace)
	for _, entry := range idx.Manifests {
		reach, err := e.c.s.closure(ctx, entry.Digest)
		if err != nil {
			return nil, err
		}
		for _, d := range reach {
			users[d]++
		}
		repo, _, ok := entryRepo(entry)
		if !ok || !e.c.cached(repo) {
			continue
		}
		if b, ok := blobs[entry.Digest]; ok && b.mtime.Before(cutoff) {
			cands = append(cands, candidate{entryKey(entry), b.mtime, reach})
		}
	}
	slices.SortStableFunc(cands, func(a, b candidate) int { return a.used.Compare(b.used) })
	victims := map[string]bool{}
	var freed int64
	for _, cand := range cands {
		if freed >= excess {
			break
		}
		victims[cand.key] = true
		for _, d := range cand.blobs {
			users[d]--
			if b, ok := blobs[d]; ok && users[d] == 0 && b.mtime.Before(cutoff) {
				freed += b.size
			}
		}
	}
	return victims, nil
}

// entryKey identifies an index.json entry: its digest and the annotations
// that place it in a repository.
func entryKey(e ocispec.Descriptor) string {
	return string(e.Digest) + "\x00" + e.Annotations[ocispec.AnnotationRefName] + "\x00" + e.Annotations[RepositoryAnnotation]
}

// closure lists manifest d, the manifests its indexes list (recursively)
// and the blobs they all reference, as far as the layout holds them.
func (s *Server) closure(ctx context.Context, d digest.Digest) ([]digest.Digest, error) {
	seen := map[digest.Digest]bool{}
	var out []digest.Digest
	queue := []digest.Digest{d}
	for depth := 0; len(queue) > 0 && depth < maxIndexDepth; depth++ {
		var next []digest.Digest
		for _, m := range queue {
			if seen[m] || store.ValidateDigest(m) != nil {
				continue
			}
			seen[m] = true
			out = append(out, m)
			refs, err := s.refs(ctx, m)
			if errors.Is(err, store.ErrNotFound) || errors.Is(err, errNotManifest) {
				continue
			}
			if err != nil {
				return nil, err
			}
			for _, b := range refs.blobs {
				if !seen[b.Digest] {
					seen[b.Digest] = true
					out = append(out, b.Digest)
				}
			}
			for _, child := range refs.children {
				next = append(next, child.Digest)
			}
		}
		queue = next
	}
	return out, nil
}

// listBlobFiles returns the blobs under dir/blobs (sha256 and sha512, the
// layout's paths of the OCI image-layout spec) and their total size.
func listBlobFiles(dir string) (map[digest.Digest]blobFile, int64, error) {
	out := map[digest.Digest]blobFile{}
	var total int64
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		entries, err := os.ReadDir(filepath.Join(dir, ocispec.ImageBlobsDir, string(alg)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		for _, de := range entries {
			d := digest.NewDigestFromEncoded(alg, de.Name())
			if !de.Type().IsRegular() || store.ValidateDigest(d) != nil {
				continue
			}
			fi, err := de.Info()
			if err != nil {
				continue // removed meanwhile
			}
			out[d] = blobFile{size: fi.Size(), mtime: fi.ModTime()}
			total += fi.Size()
		}
	}
	return out, total, nil
}
