package bundle

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-oci/ferry/internal/store"
	"github.com/ferry-oci/ferry/internal/transfer"
)

// MediaTypeReceipt is the mediaType of a receipt, version 1.
const MediaTypeReceipt = "application/vnd.ferry.bundle.receipt.v1+json"

// maxReceipt caps what is read of a receipt file.
const maxReceipt = 256 << 20

// Receipt lists the blobs the far side of an air gap holds, so that a
// differential bundle can leave them out (CreateOptions.Since).
// `ferry bundle import` writes one for what it imported, and
// ReceiptFromRegistry makes one from repositories of a registry.
// docs/bundle-format.md documents it.
type Receipt struct {
	MediaType    string    `json:"mediaType"`
	FerryVersion string    `json:"ferryVersion,omitempty"`
	Created      time.Time `json:"created"`
	// Target is what the blobs are in: REGISTRY[/PREFIX], a list of
	// repositories, or oci:DIR.
	Target string `json:"target,omitempty"`
	// Bundle is the SHA-256 of the ferry-bundle.json of the bundle whose
	// import wrote the receipt, if one did.
	Bundle digest.Digest `json:"bundle,omitempty"`
	// Images are the references the far side now has, at the far side.
	Images []string `json:"images,omitempty"`
	// Blobs are configs and layers (manifests are never left out of a
	// bundle, so they are not listed), sorted by digest, once each.
	Blobs []Blob `json:"blobs"`
}

// ReadReceipt reads and validates the receipt at path, and returns it with
// the SHA-256 digest of the file.
func ReadReceipt(path string) (*Receipt, digest.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("reading receipt: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxReceipt+1))
	if err != nil {
		return nil, "", fmt.Errorf("reading receipt %s: %w", path, err)
	}
	if len(data) > maxReceipt {
		return nil, "", fmt.Errorf("receipt %s is larger than %d bytes", path, maxReceipt)
	}
	var r Receipt
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&r); err != nil {
		return nil, "", fmt.Errorf("receipt %s: %w", path, err)
	}
	if r.MediaType != MediaTypeReceipt {
		return nil, "", fmt.Errorf("receipt %s: mediaType %q, expected %q: is it a receipt written by ferry bundle import or ferry bundle receipt?", path, r.MediaType, MediaTypeReceipt)
	}
	for _, b := range r.Blobs {
		if err := store.ValidateDigest(b.Digest); err != nil {
			return nil, "", fmt.Errorf("receipt %s: %w", path, err)
		}
		if b.Size < 0 {
			return nil, "", fmt.Errorf("receipt %s: blob %s has size %d", path, b.Digest, b.Size)
		}
	}
	return &r, digest.FromBytes(data), nil
}

// WriteReceipt writes r to path, replacing any file there atomically.
func WriteReceipt(path string, r *Receipt) error {
	r.MediaType = MediaTypeReceipt
	r.Blobs = sortBlobs(r.Blobs)
	if r.Blobs == nil {
		r.Blobs = []Blob{}
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'))
}

// sortBlobs sorts by digest and keeps the first of each digest.
func sortBlobs(bs []Blob) []Blob {
	slices.SortStableFunc(bs, func(a, b Blob) int { return cmp.Compare(a.Digest, b.Digest) })
	return slices.CompactFunc(bs, func(a, b Blob) bool { return a.Digest == b.Digest })
}

// ReceiptOptions tune ReceiptFromRegistry.
type ReceiptOptions struct {
	// Remote opens the repositories. It must not be nil.
	Remote *transfer.Remote
	// Insecure allows plain http.
	Insecure bool
	// Jobs caps the manifests read at once; 0 means transfer.DefaultJobs.
	Jobs int
	// FerryVersion is recorded in the receipt.
	FerryVersion string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// ReceiptFromRegistry makes a receipt of the repositories named (each
// REGISTRY/REPOSITORY, without tag): it lists every tag of each, cosign's
// signature tags included, and walks every tag's manifests to collect the
// configs and layers they reference. Referrers reachable only through the
// OCI 1.1 referrers API are not walked: their blobs are small, and a
// bundle made against the receipt just carries them again.
func ReceiptFromRegistry(ctx context.Context, repos []string, opts ReceiptOptions) (*Receipt, error) {
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = transfer.DefaultJobs
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	rec := &Receipt{FerryVersion: opts.FerryVersion, Created: now().UTC()}
	var mu sync.Mutex
	blobs := map[digest.Digest]Blob{}
	for _, s := range repos {
		repo, err := transfer.ParseRepository(s, opts.Insecure)
		if err != nil {
			return nil, err
		}
		r, err := opts.Remote.Open(ctx, repo, false)
		if err != nil {
			return nil, err
		}
		tags, err := r.Tags(ctx, transfer.TagOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing the tags of %s: %w", s, err)
		}
		full := repositoryName(repo)
		seen := map[digest.Digest]bool{}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(jobs)
		var walk func(id string) error
		walk = func(id string) error {
			m, err := r.Manifest(gctx, id)
			if err != nil {
				return err
			}
			mu.Lock()
			if seen[m.Descriptor.Digest] {
				mu.Unlock()
				return nil
			}
			seen[m.Descriptor.Digest] = true
			if !m.IsIndex() {
				for _, b := range m.Children() {
					if len(b.URLs) == 0 {
						if _, ok := blobs[b.Digest]; !ok {
							blobs[b.Digest] = Blob{Digest: b.Digest, Size: b.Size, MediaType: b.MediaType, Repository: full}
						}
					}
				}
			}
			mu.Unlock()
			for _, c := range m.Manifests {
				if err := walk(string(c.Digest)); err != nil {
					return err
				}
			}
			return nil
		}
		for _, t := range tags {
			g.Go(func() error {
				if err := walk(t); err != nil && !errors.Is(err, transfer.ErrNotFound) {
					return fmt.Errorf("%s:%s: %w", s, t, err)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		rec.Images = append(rec.Images, full)
		if rec.Target != "" {
			rec.Target += " "
		}
		rec.Target += full
	}
	for _, b := range blobs {
		rec.Blobs = append(rec.Blobs, b)
	}
	rec.Blobs = sortBlobs(rec.Blobs)
	return rec, nil
}

// sinceSet is the union of the receipts given to --since.
type sinceSet struct {
	digests []digest.Digest
	blobs   map[digest.Digest]Blob
}

func loadSince(paths []string) (*sinceSet, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	s := &sinceSet{blobs: map[digest.Digest]Blob{}}
	for _, p := range paths {
		r, d, err := ReadReceipt(p)
		if err != nil {
			return nil, err
		}
		s.digests = append(s.digests, d)
		for _, b := range r.Blobs {
			if _, ok := s.blobs[b.Digest]; !ok {
				s.blobs[b.Digest] = b
			}
		}
	}
	return s, nil
}

// has reports whether the far side holds desc, with its size.
func (s *sinceSet) has(desc ocispec.Descriptor) (Blob, bool) {
	if s == nil {
		return Blob{}, false
	}
	b, ok := s.blobs[desc.Digest]
	return b, ok && b.Size == desc.Size
}
