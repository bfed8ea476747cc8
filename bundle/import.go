package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-oci/ferry/internal/store"
	"github.com/ferry-oci/ferry/internal/transfer"
)

// Mapping sends the source repositories under From (a repository name
// with its registry host, e.g. docker.io/library, matched on whole path
// elements) to To under the import's target: docker.io/library/nginx with
// docker.io/library=base goes to TARGET/base/nginx. To may be empty.
type Mapping struct{ From, To string }

// ParseMapping parses SRC=DST.
func ParseMapping(s string) (Mapping, error) {
	from, to, ok := strings.Cut(s, "=")
	from, to = strings.Trim(from, "/"), strings.Trim(to, "/")
	if !ok || from == "" {
		return Mapping{}, fmt.Errorf("%w: mapping %q: expected SRC=DST, e.g. docker.io/library=base", transfer.ErrInvalidReference, s)
	}
	if to != "" && !store.ValidRepositoryName(to) {
		return Mapping{}, fmt.Errorf("%w: mapping %q: %q is not a valid repository path", transfer.ErrInvalidReference, s, to)
	}
	return Mapping{From: from, To: to}, nil
}

// ImportOptions tune Import.
type ImportOptions struct {
	// To is the target: REGISTRY[/PREFIX], or oci:DIR.
	To string
	// Map overrides where source repositories go; the longest matching
	// From wins. Without one, a repository goes to TARGET/PATH, PATH being
	// its name without the registry host.
	Map []Mapping
	// Remote opens the target repositories. It must not be nil for a
	// registry target.
	Remote *transfer.Remote
	// Insecure allows plain http to the target.
	Insecure bool
	// Jobs caps the blobs in flight (0: transfer.DefaultJobs), shared by
	// every image; Images caps the images copied at once (0:
	// DefaultImages).
	Jobs, Images int
	// ManifestLimit caps a manifest read from the bundle; 0 means
	// transfer.DefaultManifestLimit.
	ManifestLimit int64
	// Events receives the copy engine's progress; nil discards it.
	Events transfer.EventFunc
	// Receipt is where the receipt of what the target now holds is
	// written; empty means FILE.receipt.json beside the bundle. NoReceipt
	// writes none.
	Receipt   string
	NoReceipt bool
	// FerryVersion is recorded in the receipt.
	FerryVersion string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// ImportResult is what Import did.
type ImportResult struct {
	// Verify is the verification that ran first.
	Verify *Report `json:"verify"`
	// Images are the bundle's images, in the catalog's order.
	Images []ImportedImage `json:"images"`
	// Receipt is the receipt file written, if any.
	Receipt string `json:"receipt,omitempty"`
	// Failed counts the images that failed.
	Failed int `json:"failed"`
}

// ImportedImage is one image's import.
type ImportedImage struct {
	// Reference is the image's source reference; Target where it went.
	Reference    string        `json:"reference"`
	Target       string        `json:"target"`
	Digest       digest.Digest `json:"digest"`
	Referrers    int           `json:"referrers"`
	BlobsCopied  int           `json:"blobsCopied"`
	BlobsSkipped int           `json:"blobsSkipped"`
	BlobsMounted int           `json:"blobsMounted"`
	Bytes        int64         `json:"bytes"`
	Seconds      float64       `json:"seconds"`
	Error        string        `json:"error,omitempty"`
	// Err is the failure, when the image failed.
	Err error `json:"-"`
}

// Import verifies the bundle at path completely (Verify) and, only when
// nothing is wrong, copies every image of its catalog, with its
// referrers, to opts.To through one copy engine: images a few at once,
// blobs Jobs at once across them, each blob once per target repository,
// skipped when the target has it, mounted from another repository of the
// import when the target can. A rerun after an interruption skips what is
// there and finishes the job. For a differential bundle it checks first
// that the target holds every blob the bundle left out.
//
// The error is for a bundle that does not verify (wrapping ErrCorrupt; the
// Report in the result says why), a target that cannot be planned or
// opened, and a cancelled ctx; in all these cases nothing was imported.
// Images that fail are in the result (Failed), and the others are
// imported. The receipt lists the blobs the target holds for the images.
func Import(ctx context.Context, path string, opts ImportOptions) (*ImportResult, error) {
	loc, err := locate(path)
	if err != nil {
		return nil, err
	}
	rep, b, err := verifyLocated(ctx, loc)
	if err != nil {
		return nil, err
	}
	res := &ImportResult{Verify: rep, Images: []ImportedImage{}}
	if err := rep.Err(); err != nil {
		if b != nil {
			b.Close()
		}
		return res, err
	}
	defer b.Close()

	imp, err := newImporter(ctx, b, opts)
	if err != nil {
		return res, err
	}
	if err := imp.checkDifferential(ctx); err != nil {
		return res, err
	}
	res.Images = imp.run(ctx)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	for _, im := range res.Images {
		if im.Err != nil {
			res.Failed++
		}
	}
	if !opts.NoReceipt {
		p := opts.Receipt
		if p == "" {
			p = filepath.Join(loc.dir, loc.base+".receipt.json")
		}
		if err := WriteReceipt(p, imp.receipt(res.Images)); err != nil {
			return res, fmt.Errorf("the images were imported, but the receipt was not written: %w (use --receipt to write it elsewhere)", err)
		}
		res.Receipt = p
	}
	return res, nil
}

// importer is one Import's plan and state.
type importer struct {
	b      *Bundle
	opts   ImportOptions
	jobs   int
	now    func() time.Time
	layout *transfer.Layout // the bundle, read

	// A registry target: host and prefix; or an OCI layout.
	registry name.Registry
	prefix   string
	dir      *transfer.Layout

	items []*importItem
	rec   *recorder
	// repos are the opened target repositories, by full name; mountRepos
	// the repositories a receipt says hold omitted blobs.
	repos      map[string]*transfer.Repository
	mu         sync.Mutex
	mountRepos map[string]*transfer.Repository
	omitted    map[digest.Digest]Blob
}

type importItem struct {
	image  Image
	repo   string // target repository path (without host) or layout name prefix
	target string // the target reference, for messages
	dst    transfer.Target
}

func newImporter(ctx context.Context, b *Bundle, opts ImportOptions) (*importer, error) {
	imp := &importer{
		b:          b,
		opts:       opts,
		jobs:       cmpOr(opts.Jobs, transfer.DefaultJobs),
		now:        time.Now,
		layout:     transfer.NewReadOnlyLayout(b.Name(), b.Archive, opts.ManifestLimit),
		rec:        &recorder{byRepo: map[string]map[digest.Digest]Blob{}, where: map[digest.Digest][]string{}},
		repos:      map[string]*transfer.Repository{},
		mountRepos: map[string]*transfer.Repository{},
		omitted:    map[digest.Digest]Blob{},
	}
	if opts.Now != nil {
		imp.now = opts.Now
	}
	if d := b.Catalog.Differential; d != nil {
		for _, o := range d.Omitted {
			imp.omitted[o.Digest] = o
		}
	}
	if err := imp.parseTarget(); err != nil {
		return nil, err
	}
	// Map every image, and refuse two images that would land on one tag.
	byTarget := map[string]string{}
	for _, im := range b.Catalog.Images {
		path, err := imp.mapRepository(im.Repository)
		if err != nil {
			return nil, err
		}
		it := &importItem{image: im, repo: path}
		ident := "@" + string(im.Digest)
		if im.Tag != "" {
			ident = ":" + im.Tag
		}
		if imp.dir != nil {
			it.target = imp.opts.To + ":" + path + ident
		} else {
			it.target = imp.registry.Name() + "/" + path + ident
		}
		if prev, ok := byTarget[it.target]; ok && prev != im.Reference && im.Tag != "" {
			return nil, fmt.Errorf("%w: %s and %s would both be imported as %s: use --map to keep them apart", transfer.ErrInvalidReference, prev, im.Reference, it.target)
		}
		byTarget[it.target] = im.Reference
		imp.items = append(imp.items, it)
	}
	return imp, imp.openTargets(ctx)
}

// parseTarget reads opts.To: oci:DIR or REGISTRY[/PREFIX].
func (imp *importer) parseTarget() error {
	to := imp.opts.To
	if to == "" {
		return fmt.Errorf("%w: no target: give REGISTRY[/PREFIX] or oci:DIR", transfer.ErrInvalidReference)
	}
	if strings.HasPrefix(to, "oci-archive:") {
		return fmt.Errorf("%w: %s: a bundle is imported into a registry or an OCI layout (oci:DIR); it is an OCI archive already", transfer.ErrInvalidReference, to)
	}
	if dir, ok := strings.CutPrefix(to, "oci:"); ok {
		if dir == "" {
			return fmt.Errorf("%w: %s: missing directory, e.g. oci:./images", transfer.ErrInvalidReference, to)
		}
		s, err := store.Open(dir)
		if err != nil {
			return fmt.Errorf("opening %s: %w", to, err)
		}
		imp.dir = transfer.NewLayout(to, s, 0)
		return nil
	}
	host, prefix, _ := strings.Cut(strings.TrimSuffix(to, "/"), "/")
	var nopts []name.Option
	if imp.opts.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, append(nopts, name.StrictValidation)...)
	if err != nil || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return fmt.Errorf("%w: --to %s: expected REGISTRY[/PREFIX] with a registry host such as registry.example.com:5000", transfer.ErrInvalidReference, to)
	}
	if prefix != "" && !store.ValidRepositoryName(prefix) {
		return fmt.Errorf("%w: --to %s: %q is not a valid repository path", transfer.ErrInvalidReference, to, prefix)
	}
	imp.registry, imp.prefix = reg, prefix
	return nil
}

// mapRepository maps a source repository (with its host) to the target
// repository path: the longest --map match, else the path without host,
// under the target's prefix.
func (imp *importer) mapRepository(src string) (string, error) {
	best := -1
	for i, m := range imp.opts.Map {
		if src == m.From || strings.HasPrefix(src, m.From+"/") {
			if best < 0 || len(m.From) > len(imp.opts.Map[best].From) {
				best = i
			}
		}
	}
	var path string
	if best >= 0 {
		m := imp.opts.Map[best]
		path = joinPath(m.To, strings.TrimPrefix(strings.TrimPrefix(src, m.From), "/"))
	} else {
		_, path, _ = strings.Cut(src, "/")
	}
	path = joinPath(imp.prefix, path)
	if path == "" || !store.ValidRepositoryName(path) {
		return "", fmt.Errorf("%w: %s maps to the repository %q, which is not valid: use --map", transfer.ErrInvalidReference, src, path)
	}
	return path, nil
}

func joinPath(parts ...string) string {
	var kept []string
	for _, p := range parts {
		if p = strings.Trim(p, "/"); p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, "/")
}

// maxMountScopes caps the repositories a target asks pull access to for
// mounting (each is a scope of the registry token).
const maxMountScopes = 16

// openTargets opens every target repository for push, before anything is
// written, so that a refused login fails the import as a whole.
func (imp *importer) openTargets(ctx context.Context) error {
	if imp.dir != nil {
		for _, it := range imp.items {
			it.dst = &layoutTarget{l: imp.dir, repo: it.repo, rec: imp.rec}
		}
		return nil
	}
	if imp.opts.Remote == nil {
		return errors.New("bundle: ImportOptions.Remote is nil")
	}
	// Repositories to mount from: the import's own, and where receipts
	// say omitted blobs are.
	var others []name.Repository
	seen := map[string]bool{}
	add := func(full string) {
		if seen[full] || len(others) >= maxMountScopes {
			return
		}
		r, err := transfer.ParseRepository(full, imp.opts.Insecure)
		if err == nil && r.RegistryStr() == imp.registry.RegistryStr() {
			seen[full] = true
			others = append(others, r)
		}
	}
	for _, it := range imp.items {
		add(imp.registry.Name() + "/" + it.repo)
	}
	for _, o := range imp.omitted {
		if o.Repository != "" {
			add(o.Repository)
		}
	}
	for _, it := range imp.items {
		full := imp.registry.Name() + "/" + it.repo
		if r, ok := imp.repos[full]; ok {
			it.dst = &registryTarget{Repository: r, imp: imp}
			continue
		}
		repo, err := transfer.ParseRepository(full, imp.opts.Insecure)
		if err != nil {
			return err
		}
		r, err := imp.opts.Remote.Open(ctx, repo, true, others...)
		if err != nil {
			return fmt.Errorf("opening %s for push: %w", full, err)
		}
		imp.repos[full] = r
		it.dst = &registryTarget{Repository: r, imp: imp}
	}
	return nil
}

// repoName is a target repository's full name for receipts.
func (imp *importer) repoName(r *transfer.Repository) string { return repositoryName(r.Name) }

// checkDifferential makes sure, before anything is imported, that the
// target holds (or can mount) every blob a differential bundle left out
// that the images need.
func (imp *importer) checkDifferential(ctx context.Context) error {
	if len(imp.omitted) == 0 {
		return nil
	}
	type need struct {
		it   *importItem
		blob ocispec.Descriptor
	}
	var needs []need
	for _, it := range imp.items {
		blobs, err := imp.graphBlobs(ctx, it.image)
		if err != nil {
			return err
		}
		for _, bl := range blobs {
			if _, ok := imp.omitted[bl.Digest]; ok {
				needs = append(needs, need{it, bl})
			}
		}
	}
	var mu sync.Mutex
	var missing []string
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(imp.jobs)
	for _, n := range needs {
		g.Go(func() error {
			ok, err := n.it.dst.BlobExists(gctx, n.blob)
			if err != nil {
				return err
			}
			if !ok && imp.dir == nil {
				if from := imp.mountSource(gctx, imp.omitted[n.blob.Digest].Repository); from != nil {
					if ok, err = from.BlobExists(gctx, n.blob); err != nil {
						ok = false
					}
				}
			}
			if !ok {
				mu.Lock()
				missing = append(missing, fmt.Sprintf("%s (%d bytes) for %s", n.blob.Digest, n.blob.Size, n.it.target))
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		if len(missing) > 5 {
			missing = append(missing[:5], fmt.Sprintf("and %d more", len(missing)-5))
		}
		var receipts []string
		for _, d := range imp.b.Catalog.Differential.Receipts {
			receipts = append(receipts, string(d))
		}
		return fmt.Errorf("%s is a differential bundle, and %s does not hold blobs it left out: %s; import first the bundles whose receipts it was made against (%s), or make a full bundle", imp.b.Name(), imp.opts.To, strings.Join(missing, ", "), strings.Join(receipts, ", "))
	}
	return nil
}

// graphBlobs lists the configs and layers of an image and its referrers,
// read from the bundle's manifests.
func (imp *importer) graphBlobs(ctx context.Context, im Image) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	seen := map[digest.Digest]bool{}
	var walk func(d digest.Digest) error
	walk = func(d digest.Digest) error {
		if seen[d] {
			return nil
		}
		seen[d] = true
		m, err := imp.layout.Manifest(ctx, string(d))
		if err != nil {
			return err
		}
		if m.IsIndex() {
			for _, c := range m.Manifests {
				if err := walk(c.Digest); err != nil {
					return err
				}
			}
			return nil
		}
		for _, c := range m.Children() {
			if !seen[c.Digest] && len(c.URLs) == 0 {
				seen[c.Digest] = true
				out = append(out, c)
			}
		}
		return nil
	}
	if err := walk(im.Digest); err != nil {
		return nil, err
	}
	for _, r := range im.Referrers {
		if err := walk(r.Digest); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// mountSource opens, once, a repository a receipt names, when it is on
// the target registry.
func (imp *importer) mountSource(ctx context.Context, full string) *transfer.Repository {
	if full == "" || imp.dir != nil {
		return nil
	}
	imp.mu.Lock()
	defer imp.mu.Unlock()
	if r, ok := imp.repos[full]; ok {
		return r
	}
	if r, ok := imp.mountRepos[full]; ok {
		return r
	}
	var r *transfer.Repository
	if repo, err := transfer.ParseRepository(full, imp.opts.Insecure); err == nil && repo.RegistryStr() == imp.registry.RegistryStr() {
		r, _ = imp.opts.Remote.Open(ctx, repo, false)
	}
	imp.mountRepos[full] = r
	return r
}

// run copies every image, a few at once, with one engine.
func (imp *importer) run(ctx context.Context) []ImportedImage {
	engine := transfer.NewEngine(transfer.Options{Referrers: true, Jobs: imp.jobs, Events: imp.opts.Events})
	out := make([]ImportedImage, len(imp.items))
	g := new(errgroup.Group)
	g.SetLimit(cmpOr(imp.opts.Images, DefaultImages))
	for i, it := range imp.items {
		g.Go(func() error {
			src := &repoSource{l: imp.layout, a: imp.b.Archive, repo: it.image.Repository, omitted: imp.omitted, verified: true}
			req := transfer.Request{Source: string(it.image.Digest), Tag: it.image.Tag}
			if it.image.Tag != "" {
				req.Source = it.image.Tag
			}
			r, err := engine.Copy(ctx, src, it.dst, req)
			out[i] = ImportedImage{
				Reference: it.image.Reference, Target: it.target, Digest: r.Digest,
				Referrers: r.Referrers, BlobsCopied: r.BlobsCopied, BlobsSkipped: r.BlobsSkipped,
				BlobsMounted: r.BlobsMounted, Bytes: r.Bytes, Seconds: r.Duration.Seconds(),
			}
			if err == nil && r.Digest != it.image.Digest {
				err = fmt.Errorf("%w: %s was written as %s, the bundle says %s", transfer.ErrDigestMismatch, it.image.Reference, r.Digest, it.image.Digest)
			}
			if err != nil {
				out[i].Err = fmt.Errorf("importing %s as %s: %w", it.image.Reference, it.target, err)
				out[i].Error = out[i].Err.Error()
			}
			return nil
		})
	}
	g.Wait()
	return out
}

// receipt lists what the target holds now for the images.
func (imp *importer) receipt(images []ImportedImage) *Receipt {
	r := &Receipt{
		FerryVersion: imp.opts.FerryVersion,
		Created:      imp.now().UTC().Truncate(time.Second),
		Target:       imp.opts.To,
		Bundle:       imp.b.CatalogDigest,
		Images:       []string{},
	}
	for _, im := range images {
		if im.Err == nil {
			r.Images = append(r.Images, im.Target)
		}
	}
	imp.rec.mu.Lock()
	defer imp.rec.mu.Unlock()
	for _, blobs := range imp.rec.byRepo {
		for _, b := range blobs {
			r.Blobs = append(r.Blobs, b)
		}
	}
	return r
}

// recorder remembers which blobs the target holds, by repository.
type recorder struct {
	mu     sync.Mutex
	byRepo map[string]map[digest.Digest]Blob
	where  map[digest.Digest][]string
}

func (r *recorder) add(repo string, desc ocispec.Descriptor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.byRepo[repo]
	if m == nil {
		m = map[digest.Digest]Blob{}
		r.byRepo[repo] = m
	}
	if _, ok := m[desc.Digest]; ok {
		return
	}
	m[desc.Digest] = Blob{Digest: desc.Digest, Size: desc.Size, MediaType: desc.MediaType, Repository: repo}
	r.where[desc.Digest] = append(r.where[desc.Digest], repo)
}

func (r *recorder) holders(d digest.Digest) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.where[d]...)
}

// registryTarget is a target repository that records what it holds, and
// mounts blobs from the import's other repositories (and from those a
// receipt names for omitted blobs) rather than uploading them again.
type registryTarget struct {
	*transfer.Repository
	imp *importer
}

func (t *registryTarget) BlobExists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	ok, err := t.Repository.BlobExists(ctx, desc)
	if ok {
		t.imp.rec.add(t.imp.repoName(t.Repository), desc)
	}
	return ok, err
}

func (t *registryTarget) WriteBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	err := t.Repository.WriteBlob(ctx, desc, r)
	if err == nil {
		t.imp.rec.add(t.imp.repoName(t.Repository), desc)
	}
	return err
}

// Mount tries the repositories known to hold desc; false, nil lets the
// engine upload it.
func (t *registryTarget) Mount(ctx context.Context, desc ocispec.Descriptor, _ transfer.Source) (bool, error) {
	self := t.imp.repoName(t.Repository)
	candidates := t.imp.rec.holders(desc.Digest)
	if o, ok := t.imp.omitted[desc.Digest]; ok && o.Repository != "" {
		candidates = append(candidates, o.Repository)
	}
	for _, c := range candidates {
		if c == self {
			continue
		}
		from := t.imp.mountSource(ctx, c)
		if from == nil {
			continue
		}
		ok, err := t.Repository.Mount(ctx, desc, from)
		if err != nil && ctx.Err() != nil {
			return false, ctx.Err()
		}
		if err == nil && ok {
			t.imp.rec.add(self, desc)
			return true, nil
		}
	}
	return false, nil
}

// layoutTarget is an OCI layout seen by one repository of the import:
// tags are REPOSITORY:TAG (as ferry serve names them), blobs are shared.
type layoutTarget struct {
	l    *transfer.Layout
	repo string
	rec  *recorder
}

func (t *layoutTarget) String() string { return t.l.String() }

func (t *layoutTarget) BlobExists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	ok, err := t.l.BlobExists(ctx, desc)
	if ok {
		t.rec.add("", desc)
	}
	return ok, err
}

func (t *layoutTarget) WriteBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	err := t.l.WriteBlob(ctx, desc, r)
	if err == nil {
		t.rec.add("", desc)
	}
	return err
}

func (t *layoutTarget) ChecksDigests() {}

func (t *layoutTarget) ManifestExists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	return t.l.ManifestExists(ctx, desc)
}

func (t *layoutTarget) PutManifest(ctx context.Context, m *transfer.Manifest, tag string) error {
	return t.PutRoot(ctx, m, tag, tag != "" || m.Subject != nil)
}

func (t *layoutTarget) PutRoot(ctx context.Context, m *transfer.Manifest, tag string, root bool) error {
	if tag != "" {
		tag = t.repo + ":" + tag
	}
	return t.l.PutRoot(ctx, m, tag, root)
}

func (t *layoutTarget) TagDigest(ctx context.Context, tag string) (digest.Digest, error) {
	return t.l.TagDigest(ctx, t.repo+":"+tag)
}

// repoSource is the bundle as one source repository sees it: tags are the
// index.json names REPOSITORY:TAG with the repository taken off, so that
// the engine finds cosign's signature tags of the repository's images.
type repoSource struct {
	l       *transfer.Layout
	a       store.Reader
	repo    string
	omitted map[digest.Digest]Blob
	// verified: Import checked every blob of the bundle just before.
	verified bool
}

func (s *repoSource) String() string { return s.repo }

var (
	_ transfer.VerifiedSource       = (*repoSource)(nil)
	_ transfer.DigestCheckingTarget = (*registryTarget)(nil)
	_ transfer.DigestCheckingTarget = (*layoutTarget)(nil)
)

// BlobsVerified marks the bundle of an import as a transfer.VerifiedSource:
// its blobs are not hashed a second time on their way to the target.
func (s *repoSource) BlobsVerified() bool { return s.verified }

// resolve turns a tag into the digest index.json names REPOSITORY:TAG
// with (the layout endpoint would take a name with a colon for a digest).
func (s *repoSource) resolve(ctx context.Context, identifier string) (string, error) {
	if strings.HasPrefix(identifier, "sha256:") || strings.HasPrefix(identifier, "sha512:") {
		return identifier, nil
	}
	d, err := s.a.Resolve(ctx, s.repo+":"+identifier)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return "", fmt.Errorf("%w: %s:%s is not in the bundle", transfer.ErrNotFound, s.repo, identifier)
		}
		return "", err
	}
	return string(d.Digest), nil
}

func (s *repoSource) Manifest(ctx context.Context, identifier string) (*transfer.Manifest, error) {
	id, err := s.resolve(ctx, identifier)
	if err != nil {
		return nil, err
	}
	return s.l.Manifest(ctx, id)
}

func (s *repoSource) ManifestDigest(ctx context.Context, identifier string) (digest.Digest, error) {
	id, err := s.resolve(ctx, identifier)
	if err != nil {
		return "", err
	}
	return s.l.ManifestDigest(ctx, id)
}

func (s *repoSource) FetchBlob(ctx context.Context, d digest.Digest, size, limit int64) ([]byte, error) {
	return s.l.FetchBlob(ctx, d, size, limit)
}

func (s *repoSource) Tags(ctx context.Context, opts transfer.TagOptions) ([]string, error) {
	names, err := s.l.Tags(ctx, transfer.TagOptions{})
	if err != nil {
		return nil, err
	}
	var tags []string
	for _, n := range names {
		if t, ok := strings.CutPrefix(n, s.repo+":"); ok && !strings.ContainsAny(t, "/@:") {
			tags = append(tags, t)
		}
	}
	return tags, nil
}

func (s *repoSource) OpenBlob(ctx context.Context, desc ocispec.Descriptor, offset int64) (io.ReadCloser, error) {
	rc, err := s.l.OpenBlob(ctx, desc, offset)
	if err != nil && errors.Is(err, transfer.ErrNotFound) {
		if _, ok := s.omitted[desc.Digest]; ok {
			return nil, fmt.Errorf("blob %s was left out of this differential bundle, and the target does not hold it: %w", desc.Digest, err)
		}
	}
	return rc, err
}

func (s *repoSource) Referrers(ctx context.Context, subject ocispec.Descriptor, limit int) ([]ocispec.Descriptor, error) {
	return s.l.Referrers(ctx, subject, limit)
}

// Source returns the bundle as a copy-engine source for one repository of
// its images (an Image's Repository): tags are the index.json names
// REPOSITORY:TAG without the repository, so that cosign's signature tags
// of the repository's images are found, and referrers are found through
// their subjects. Blobs are read in place, and verified as they stream.
func (b *Bundle) Source(repository string) transfer.Source {
	var omitted map[digest.Digest]Blob
	if d := b.Catalog.Differential; d != nil {
		omitted = map[digest.Digest]Blob{}
		for _, o := range d.Omitted {
			omitted[o.Digest] = o
		}
	}
	return &repoSource{l: transfer.NewReadOnlyLayout(b.Name(), b.Archive, 0), a: b.Archive, repo: repository, omitted: omitted}
}

// Reference names an image of the bundle, by digest, the way messages
// about it should: oci-archive:FILE:REPOSITORY[:TAG]@DIGEST.
func (b *Bundle) Reference(im Image) transfer.Reference {
	return transfer.Reference{Kind: transfer.KindArchive, Path: b.Name() + ":" + im.Repository, Tag: im.Tag, Digest: im.Digest, Original: im.Reference}
}
