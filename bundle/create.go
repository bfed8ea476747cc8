package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// Request is one image for Create.
type Request struct {
	// Reference names the image in a registry: HOST/REPO:TAG or
	// HOST/REPO@DIGEST (a bundle names images by where they came from,
	// so oci: and oci-archive: sources are refused).
	Reference string
	// Platforms selects images from an index, as ferry copy does.
	Platforms []ocispec.Platform
	// NoReferrers leaves signatures, attestations and SBOMs behind.
	NoReferrers bool
}

// DefaultImages is how many images Create and Import copy at once; the
// engine's blob budget (Jobs) is shared between them.
const DefaultImages = 4

// CreateOptions tune Create.
type CreateOptions struct {
	// Output is the bundle file. With Split the parts are Output.000,
	// Output.001, …, and SHA256SUMS beside them lists them; otherwise
	// Output.sha256 holds the file's checksum. Files are written under
	// temporary names and renamed when the bundle is complete.
	Output string
	// Split is the size of each part (every part but the last has
	// exactly this many bytes); 0 writes one file.
	Split int64
	// Since are receipts (see Receipt) of what the far side holds: their
	// blobs are left out, and the bundle is differential.
	Since []string
	// Remote opens the source repositories. It must not be nil.
	Remote *transfer.Remote
	// Insecure allows plain http to the sources.
	Insecure bool
	// Jobs caps the blobs read at once (0: transfer.DefaultJobs); Images
	// the images copied at once (0: DefaultImages).
	Jobs, Images int
	// Events receives the copy engine's progress; nil discards it.
	Events transfer.EventFunc
	// FerryVersion is recorded in the catalog.
	FerryVersion string
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// window replaces hashWindow when set: tests make blobs wait for it.
	window int64
}

// CreateResult is what Create wrote.
type CreateResult struct {
	// Files are the bundle's files in order (the file, or its parts),
	// and Checksums the checksum file.
	Files     []string
	Checksums string
	// Size is the bytes of the tar stream.
	Size    int64
	Catalog *Catalog
	// Copies are the copy engine's results, one per image.
	Copies []transfer.Result
}

// createItem is one image being bundled.
type createItem struct {
	req  Request
	ref  transfer.Reference
	repo string // full repository name, docker.io for Docker Hub
	name string // the index.json name
	src  transfer.Source
	dgst digest.Digest
	view *imageTarget
	res  transfer.Result
}

// Create writes a bundle of the images reqs name. It resolves every
// reference first (a typo fails before anything is written), then copies
// the images through one copy engine into a tar stream: blobs (each once,
// verified) several at once, each into the place it took in the tar when
// its fetch started; manifests once their content is in; index.json and
// ferry-bundle.json last. Memory does not grow with the size of the
// images, and nothing is staged on disk. On any error every
// file written is removed and the error is returned: a bundle is complete
// or absent.
func Create(ctx context.Context, reqs []Request, opts CreateOptions) (res *CreateResult, err error) {
	if len(reqs) == 0 {
		return nil, errors.New("no images to bundle")
	}
	if opts.Remote == nil {
		return nil, errors.New("bundle: CreateOptions.Remote is nil")
	}
	if opts.Split < 0 {
		return nil, fmt.Errorf("split size %d: expected a positive size", opts.Split)
	}
	jobs := cmpOr(opts.Jobs, transfer.DefaultJobs)
	images := cmpOr(opts.Images, DefaultImages)
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	since, err := loadSince(opts.Since)
	if err != nil {
		return nil, err
	}
	pw, err := newPartWriter(opts.Output, opts.Split) // creates nothing yet
	if err != nil {
		return nil, err
	}
	items, err := planCreate(ctx, reqs, opts, jobs)
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			pw.abort()
		}
	}()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t := newTarTarget("bundle "+opts.Output, pw, since)
	if opts.window > 0 {
		t.window = opts.window
	}
	t.onBreak = cancel

	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := t.writeFile(ocispec.ImageLayoutFile, layout); err != nil {
		return nil, err
	}
	if err := t.writeDirs("blobs/", "blobs/sha256/"); err != nil {
		return nil, err
	}

	base := transfer.NewEngine(transfer.Options{Jobs: jobs, Events: opts.Events})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(images)
	for _, it := range items {
		g.Go(func() error {
			eng := base.Derive(transfer.Options{Platforms: it.req.Platforms, Referrers: !it.req.NoReferrers, Events: opts.Events})
			it.view = &imageTarget{t: t, manifests: map[digest.Digest]*transfer.Manifest{}}
			r, err := eng.Copy(gctx, it.src, it.view, transfer.Request{Source: string(it.dgst), Tag: it.ref.Tag})
			it.res = r
			if err != nil {
				return fmt.Errorf("bundling %s: %w", it.req.Reference, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		if b := t.brokenErr(); b != nil && !errors.Is(err, b) && errors.Is(err, context.Canceled) {
			err = b
		}
		return nil, fmt.Errorf("creating bundle %s: %w", opts.Output, err)
	}

	cat := &Catalog{MediaType: MediaTypeCatalog, FerryVersion: opts.FerryVersion, Created: now().UTC().Truncate(time.Second), PartSize: opts.Split}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	seenEntry := map[string]bool{}
	addEntry := func(d ocispec.Descriptor) {
		key := string(d.Digest) + " " + d.Annotations[ocispec.AnnotationRefName] + " " + d.Annotations[AnnotationRepository]
		if !seenEntry[key] {
			seenEntry[key] = true
			idx.Manifests = append(idx.Manifests, d)
		}
	}
	var referrerEntries []ocispec.Descriptor
	for _, it := range items {
		im, err := it.image(ctx)
		if err != nil {
			return nil, err
		}
		cat.Images = append(cat.Images, im)
		addEntry(indexEntry(im.MediaType, im.Digest, it.view.manifests[im.Digest].Descriptor.Size, "", it.name, nil))
		for _, r := range im.Referrers {
			var ann map[string]string
			if r.Tag == "" {
				ann = map[string]string{AnnotationRepository: it.repo}
			}
			referrerEntries = append(referrerEntries, indexEntry(r.MediaType, r.Digest, r.Size, r.ArtifactType, r.refName(it.repo), ann))
		}
	}
	for _, d := range referrerEntries {
		addEntry(d)
	}
	t.mu.Lock()
	cat.Blobs = append([]Blob{}, t.blobs...)
	if since != nil {
		cat.Differential = &Differential{Receipts: since.digests, Omitted: []Blob{}}
		for _, b := range t.omitted {
			cat.Differential.Omitted = append(cat.Differential.Omitted, b)
		}
		cat.Differential.Omitted = sortBlobs(cat.Differential.Omitted)
	}
	t.mu.Unlock()

	indexData, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	catData, err := json.MarshalIndent(cat, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := t.writeFile(ocispec.ImageIndexFile, indexData); err != nil {
		return nil, err
	}
	if err := t.writeFile(CatalogFile, append(catData, '\n')); err != nil {
		return nil, err
	}
	size, err := t.close()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	files, err := pw.commit(size)
	if err != nil {
		return nil, err
	}
	committed = true
	res = &CreateResult{Files: files[:len(files)-1], Checksums: files[len(files)-1], Size: size, Catalog: cat}
	for _, it := range items {
		res.Copies = append(res.Copies, it.res)
	}
	return res, nil
}

func cmpOr(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}

// planCreate parses the references, opens each repository once and
// resolves every reference to a digest, so that a reference that does not
// exist fails before anything is written, and a tag that moves while the
// bundle is written does not mix two images.
func planCreate(ctx context.Context, reqs []Request, opts CreateOptions, jobs int) ([]*createItem, error) {
	var items []*createItem
	seen := map[string]bool{}
	sources := map[string]transfer.Source{}
	for _, req := range reqs {
		ref, err := transfer.ParseReference(req.Reference, opts.Insecure)
		if err != nil {
			return nil, err
		}
		if ref.Kind != transfer.KindRegistry {
			return nil, fmt.Errorf("%w: %s: a bundle is made from registry references (HOST/REPO:TAG); copy an OCI layout to a registry first, or use ferry copy to an oci-archive: file instead", transfer.ErrInvalidReference, req.Reference)
		}
		it := &createItem{req: req, ref: ref, repo: repositoryName(ref.Repo)}
		if ref.Digest != "" {
			it.name = it.repo + "@" + string(ref.Digest)
			it.ref.Tag = "" // a digest wins over a tag
		} else {
			it.name = it.repo + ":" + ref.Tag
		}
		if seen[it.name] {
			continue
		}
		seen[it.name] = true
		if src, ok := sources[it.repo]; ok {
			it.src = src
		} else {
			r, err := opts.Remote.Open(ctx, ref.Repo, false)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", req.Reference, err)
			}
			sources[it.repo], it.src = r, r
		}
		items = append(items, it)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for _, it := range items {
		g.Go(func() error {
			d, err := it.src.ManifestDigest(gctx, it.ref.Identifier())
			if err != nil {
				return fmt.Errorf("%s: %w", it.req.Reference, err)
			}
			it.dgst = d
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return items, nil
}

// image makes the catalog entry of a copied image from the manifests the
// copy wrote.
func (it *createItem) image(ctx context.Context) (Image, error) {
	v := it.view
	v.mu.Lock()
	defer v.mu.Unlock()
	top := v.manifests[it.res.Digest]
	if top == nil {
		return Image{}, fmt.Errorf("bundling %s: the copy did not write its manifest %s", it.req.Reference, it.res.Digest)
	}
	im := Image{
		Reference:    it.name,
		Repository:   it.repo,
		Tag:          it.ref.Tag,
		Digest:       it.res.Digest,
		MediaType:    top.Descriptor.MediaType,
		SourceDigest: it.res.SourceDigest,
		Size:         graphSize(v.manifests, top, map[digest.Digest]bool{}),
	}
	if top.IsIndex() {
		for _, c := range top.Manifests {
			if c.Platform != nil {
				im.Platforms = append(im.Platforms, transfer.FormatPlatform(c.Platform))
			}
		}
	} else if p := configPlatform(ctx, it.src, top); p != "" {
		im.Platforms = []string{p}
	}
	seen := map[digest.Digest]bool{}
	for _, r := range v.roots {
		d := r.m.Descriptor.Digest
		if d == top.Descriptor.Digest || seen[d] {
			continue
		}
		seen[d] = true
		ref := Referrer{
			Digest:       d,
			MediaType:    r.m.Descriptor.MediaType,
			ArtifactType: r.m.Descriptor.ArtifactType,
			Size:         r.m.Descriptor.Size,
			Tag:          r.tag,
		}
		if r.m.Subject != nil {
			ref.Subject = r.m.Subject.Digest
		}
		ref.Kind = referrerKind(r.tag, r.m)
		im.Referrers = append(im.Referrers, ref)
	}
	slices.SortStableFunc(im.Referrers, func(a, b Referrer) int {
		if a.Tag != b.Tag {
			return strings.Compare(b.Tag, a.Tag) // cosign tags first
		}
		return strings.Compare(string(a.Digest), string(b.Digest))
	})
	return im, nil
}

// graphSize adds up the bytes of m's graph: manifests, configs and
// layers, each once.
func graphSize(manifests map[digest.Digest]*transfer.Manifest, m *transfer.Manifest, seen map[digest.Digest]bool) int64 {
	if seen[m.Descriptor.Digest] {
		return 0
	}
	seen[m.Descriptor.Digest] = true
	size := m.Descriptor.Size
	if m.IsIndex() {
		for _, c := range m.Manifests {
			if cm := manifests[c.Digest]; cm != nil {
				size += graphSize(manifests, cm, seen)
			}
		}
		return size
	}
	for _, b := range m.Children() {
		if !seen[b.Digest] {
			seen[b.Digest] = true
			size += b.Size
		}
	}
	return size
}

// configPlatform reads an image's platform from its config.
func configPlatform(ctx context.Context, src transfer.Source, m *transfer.Manifest) string {
	if m.Config == nil || m.Config.Size > 4<<20 {
		return ""
	}
	switch m.Config.MediaType {
	case ocispec.MediaTypeImageConfig, "application/vnd.docker.container.image.v1+json":
	default:
		return ""
	}
	data, err := src.FetchBlob(ctx, m.Config.Digest, m.Config.Size, 4<<20)
	if err != nil {
		return ""
	}
	var p ocispec.Platform
	if json.Unmarshal(data, &p) != nil || p.OS == "" || p.Architecture == "" {
		return ""
	}
	return transfer.FormatPlatform(&p)
}

// referrerKind classifies a referrer for people: signature, attestation,
// sbom or artifact.
func referrerKind(tag string, m *transfer.Manifest) string {
	switch {
	case strings.HasSuffix(tag, ".sig"):
		return "signature"
	case strings.HasSuffix(tag, ".att"):
		return "attestation"
	case strings.HasSuffix(tag, ".sbom"):
		return "sbom"
	}
	t := m.Descriptor.ArtifactType
	if t == "" && m.Config != nil {
		t = m.Config.MediaType
	}
	t = strings.ToLower(t)
	switch {
	case strings.Contains(t, "signature") || strings.Contains(t, "sigstore.bundle") || strings.Contains(t, "notary"):
		return "signature"
	case strings.Contains(t, "in-toto") || strings.Contains(t, "attestation") || strings.Contains(t, "provenance"):
		return "attestation"
	case strings.Contains(t, "sbom") || strings.Contains(t, "spdx") || strings.Contains(t, "cyclonedx"):
		return "sbom"
	}
	return "artifact"
}
