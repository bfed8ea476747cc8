// Package gc is garbage collection: retention on registries, and the front
// end to the mark-and-sweep of local OCI layouts (internal/store). Every
// run builds its plan first; a dry run stops there.
package gc

import (
	"context"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/store"
)

// LocalOptions tune the collection of a local layout.
type LocalOptions struct {
	// Grace protects content written within it; 0 means store.DefaultGrace.
	Grace time.Duration
	// DryRun reports what would go and removes nothing.
	DryRun bool
}

// LocalReport says what a collection removed, or would remove.
type LocalReport struct {
	Dir          string          `json:"dir"`
	DryRun       bool            `json:"dryRun"`
	Manifests    []digest.Digest `json:"untaggedManifests"` // untagged index.json entries dropped
	Blobs        []digest.Digest `json:"blobs"`             // blobs swept
	Bytes        int64           `json:"bytes"`
	Kept         int             `json:"keptBlobs"`
	TempRemoved  int             `json:"tempFilesRemoved"`
	DurationSecs float64         `json:"seconds"`
}

// Local collects the OCI layout in dir: it drops untagged manifests that
// nothing kept needs and sweeps the blobs nothing reachable uses. Tags,
// what they reach, and the referrers (signatures, SBOMs) of kept manifests
// stay. It is safe while other processes, such as ferry serve, use the
// layout.
func Local(ctx context.Context, dir string, opts LocalOptions) (LocalReport, error) {
	start := time.Now()
	rep := LocalReport{Dir: dir, DryRun: opts.DryRun}
	s, err := store.OpenExisting(dir)
	if err != nil {
		return rep, fmt.Errorf("opening oci:%s: %w", dir, err)
	}
	r, err := s.GC(ctx, store.GCOptions{Grace: opts.Grace, DryRun: opts.DryRun, Untagged: true})
	if err != nil {
		return rep, err
	}
	for _, d := range r.Dropped {
		rep.Manifests = append(rep.Manifests, d.Digest)
	}
	rep.Blobs, rep.Bytes, rep.Kept, rep.TempRemoved = r.Removed, r.RemovedBytes, r.Kept, r.TempRemoved
	if rep.Blobs == nil {
		rep.Blobs = []digest.Digest{}
	}
	if rep.Manifests == nil {
		rep.Manifests = []digest.Digest{}
	}
	rep.DurationSecs = time.Since(start).Seconds()
	return rep, nil
}
