package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/ferry-oci/ferry/bundle"
	"github.com/ferry-oci/ferry/internal/progress"
	"github.com/ferry-oci/ferry/internal/signing"
	"github.com/ferry-oci/ferry/internal/transfer"
	"github.com/ferry-oci/ferry/mirror"
	"github.com/ferry-oci/ferry/registry"
)

func newBundleCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Carry images across an air gap in a bundle file",
		Long: `Air-gap bundles: images, with their signatures, attestations and SBOMs,
in one file (or in parts of a chosen size, for FAT32 media) that is an OCI
image layout in a plain tar, so skopeo reads it too. On the connected side
create one; carry it over; on the far side verify it and import it into a
registry or an OCI layout. Nothing on the far side needs the network.

A receipt, written by import, lists the blobs the far side holds: bring it
back, and the next bundle made with --since RECEIPT leaves those out.

The format is documented in docs/bundle-format.md.`,
		Example: `  ferry bundle create -o nginx.tar docker.io/library/nginx:1.27 docker.io/library/redis:7
  ferry bundle create --split 4G -o /media/usb/images.tar registry.example.com/app:1.4
  ferry bundle verify /media/usb/images.tar
  ferry bundle import /media/usb/images.tar --to registry.internal:5000/mirror
  ferry bundle create --since images.tar.receipt.json -o week2.tar registry.example.com/app:1.5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		newBundleCreateCmd(g),
		newBundleListCmd(g),
		newBundleVerifyCmd(g),
		newBundleImportCmd(g),
		newBundleReceiptCmd(g),
	)
	return cmd
}

// bundleOutputFlag defines -o/--output FILE on a bundle command. It
// shadows the global --output (text or json) there: these commands write
// a file, and print only its name.
func bundleOutputFlag(cmd *cobra.Command, p *string, usage string) {
	cmd.Flags().StringVarP(p, "output", "o", "", usage)
	_ = cmd.MarkFlagFilename("output")
}

type bundleCreateOptions struct {
	output       string
	mirrorConfig string
	platforms    []string
	split        string
	since        []string
	referrers    bool
	jobs         int
	images       int
	manifestSize string
}

func newBundleCreateCmd(g *globalOptions) *cobra.Command {
	o := &bundleCreateOptions{}
	cmd := &cobra.Command{
		Use:   "create -o FILE [REF...] [-c MIRROR.toml]",
		Short: "Write images from registries into a bundle",
		Long: `Write the images REF... name (HOST/REPO:TAG or HOST/REPO@DIGEST), every
platform or those --platform selects, with their signatures, attestations
and SBOMs, into the bundle FILE. Every reference is resolved before
anything is written. Content streams from the registries into the tar,
each blob once and verified against its digest, in constant memory and
with no staging copy: the disk holds the bundle once.

With -c, the images a mirror config (docs/mirror-config.md) selects are
bundled too: for each [[sync]] entry, the tags of its from repository that
its rules keep, with its platforms and referrers settings.

With --split SIZE the bundle is written in parts FILE.000, FILE.001, … of
exactly SIZE bytes (the last one shorter), for media such as FAT32 that
cap a file at 4 GiB, and SHA256SUMS beside them lists their checksums;
without it FILE.sha256 holds FILE's. Both are in sha256sum's format.

With --since RECEIPT (repeatable) the bundle is differential: blobs the
receipts list are left out, manifests always go in. Import it where those
receipts were written.

A failure removes every file written: a bundle is complete or absent.
Prints the files written.`,
		Example: `  ferry bundle create -o images.tar docker.io/library/nginx:1.27 docker.io/library/redis:7
  ferry bundle create --platform linux/amd64 -o nginx.tar docker.io/library/nginx:1.27
  ferry bundle create --split 4G -o /media/usb/images.tar registry.example.com/app:1.4
  ferry bundle create -c mirror.toml --split 4G -o /media/usb/mirror.tar
  ferry bundle create --since images.tar.receipt.json -o update.tar registry.example.com/app:1.5`,
		Args:              cobra.ArbitraryArgs,
		ValidArgsFunction: completeReference(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), g, args)
		},
	}
	bundleOutputFlag(cmd, &o.output, "the bundle file to write (required)")
	f := cmd.Flags()
	f.StringVarP(&o.mirrorConfig, "mirror-config", "c", "", "also bundle what this mirror config selects: each [[sync]] entry's from, tags, platforms and referrers")
	f.StringArrayVar(&o.platforms, "platform", nil, "keep only this os/arch[/variant] of an index (repeatable; several make a new index)")
	f.StringVar(&o.split, "split", "", "write parts of this size, e.g. 4G (powers of 1024), with SHA256SUMS")
	f.StringArrayVar(&o.since, "since", nil, "leave out the blobs this receipt lists (repeatable): a differential bundle")
	f.BoolVar(&o.referrers, "referrers", true, "carry signatures, attestations and SBOMs along")
	f.IntVar(&o.jobs, "jobs", transfer.DefaultJobs, "blobs to read at once")
	f.IntVar(&o.images, "images", bundle.DefaultImages, "images to copy at once")
	f.StringVar(&o.manifestSize, "max-manifest-size", "4MiB", "refuse manifests larger than this")
	_ = cmd.MarkFlagFilename("since", "json")
	_ = cmd.MarkFlagFilename("mirror-config", "toml")
	return cmd
}

func (o *bundleCreateOptions) run(ctx context.Context, g *globalOptions, args []string) error {
	if o.output == "" {
		return usageErrorf("-o FILE is required: the bundle to write")
	}
	if fi, err := os.Stat(o.output); err == nil && fi.IsDir() {
		return usageErrorf("-o %s is a directory: give the bundle's file name, e.g. %s", o.output, filepath.Join(o.output, "images.tar"))
	}
	if len(args) == 0 && o.mirrorConfig == "" {
		return usageErrorf("name at least one image to bundle, or a mirror config with -c, e.g. ferry bundle create -o images.tar docker.io/library/nginx:1.27")
	}
	if o.jobs < 1 || o.images < 1 {
		return usageErrorf("--jobs and --images: expected at least 1")
	}
	limit, err := parseSize(o.manifestSize)
	if err != nil {
		return usageErrorf("--max-manifest-size: %v", err)
	}
	var split int64
	if o.split != "" {
		if split, err = parseSize(o.split); err != nil {
			return usageErrorf("--split: %v", err)
		}
		if split < 1<<10 {
			return usageErrorf("--split %s: parts must be at least 1KiB", o.split)
		}
	}
	platforms, err := parsePlatforms(o.platforms)
	if err != nil {
		return err
	}
	for _, s := range o.since {
		if _, err := os.Stat(s); err != nil {
			return usageErrorf("--since %s: %v", s, errors.Unwrap(err))
		}
	}
	var reqs []bundle.Request
	for _, a := range args {
		reqs = append(reqs, bundle.Request{Reference: a, Platforms: platforms, NoReferrers: !o.referrers})
	}
	if o.mirrorConfig != "" {
		selected, err := o.mirrorSelection(ctx, g, limit, platforms)
		if err != nil {
			return err
		}
		reqs = append(reqs, selected...)
		if len(reqs) == 0 {
			return fmt.Errorf("-c %s selects no tags: nothing to bundle", o.mirrorConfig)
		}
	}

	mode := g.progressMode()
	bar := progress.New(g.streams.Err, mode)
	defer bar.Close()
	defer softMemoryLimit(o.jobs)()
	res, err := bundle.Create(ctx, reqs, bundle.CreateOptions{
		Output:       o.output,
		Split:        split,
		Since:        o.since,
		Remote:       g.remote(limit),
		Insecure:     g.insecure,
		Jobs:         o.jobs,
		Images:       o.images,
		Events:       bar.Event,
		FerryVersion: version,
	})
	bar.Close()
	if err != nil {
		return err
	}
	for _, f := range res.Files {
		fmt.Fprintln(g.streams.Out, f)
	}
	cat := res.Catalog
	referrers := 0
	for _, im := range cat.Images {
		referrers += len(im.Referrers)
	}
	fmt.Fprintf(g.streams.Err, "bundle: %d images, %d referrers, %d blobs, %s in %d file(s); checksums in %s\n",
		len(cat.Images), referrers, len(cat.Blobs), humanSize(res.Size), len(res.Files), res.Checksums)
	if d := cat.Differential; d != nil {
		var n int64
		for _, b := range d.Omitted {
			n += b.Size
		}
		fmt.Fprintf(g.streams.Err, "differential: left out %d blobs (%s) the receipts list\n", len(d.Omitted), humanSize(n))
	}
	return nil
}

// softMemoryLimit sets the garbage collector's soft memory limit for a
// bundle create or import moving blobs jobs at once, unless GOMEMLIMIT
// sets one, and returns what restores the previous limit. Each job may
// hold a blob of up to 1 MiB; without a limit the collector lets the heap
// grow to twice what is live before it runs, which takes a bundle of many
// small layers past the 64 MiB these commands keep to.
func softMemoryLimit(jobs int) func() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return func() {}
	}
	prev := debug.SetMemoryLimit(int64(16+jobs) << 20)
	return func() { debug.SetMemoryLimit(prev) }
}

// mirrorSelection lists what a mirror config selects: for each [[sync]]
// entry, the tags of its from repository that its rules keep, with its
// platforms (unless --platform is given) and referrers. to, prune and
// immutable do not matter to a bundle.
func (o *bundleCreateOptions) mirrorSelection(ctx context.Context, g *globalOptions, limit int64, platforms []ocispec.Platform) ([]bundle.Request, error) {
	cfg, err := mirror.Load(o.mirrorConfig)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, usageErrorf("-c %s: no such file", o.mirrorConfig)
	}
	if err != nil {
		return nil, err
	}
	g.registries = cfg.Registry
	var reqs []bundle.Request
	for _, s := range cfg.Syncs {
		if strings.HasPrefix(s.From, "oci:") || strings.HasPrefix(s.From, "oci-archive:") {
			return nil, usageErrorf("-c %s: [[sync]] %d: from = %q: a bundle is made from registries", o.mirrorConfig, s.Index, s.From)
		}
		repo, err := transfer.ParseRepository(s.From, g.insecure)
		if err != nil {
			return nil, err
		}
		r, err := g.remote(limit).Open(ctx, repo, false)
		if err != nil {
			return nil, err
		}
		tags, err := r.Tags(ctx, transfer.TagOptions{})
		if err != nil {
			return nil, fmt.Errorf("[[sync]] %d: listing the tags of %s: %w", s.Index, s.From, err)
		}
		pl := s.Platforms
		if len(platforms) > 0 {
			pl = platforms
		}
		for _, t := range s.SelectTags(tags) {
			reqs = append(reqs, bundle.Request{Reference: s.From + ":" + t, Platforms: pl, NoReferrers: !s.Referrers || !o.referrers})
		}
	}
	return reqs, nil
}

func newBundleListCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "list FILE",
		Short: "List the images in a bundle",
		Long: `List the images of a bundle from its catalog (ferry-bundle.json): source
reference, digest, platforms, size, and the signatures, attestations and
SBOMs that travel with each. FILE may be a split bundle's FILE or FILE.000.
Nothing is verified: run ferry bundle verify for that. With -o json the
whole catalog is printed.`,
		Example: `  ferry bundle list images.tar
  ferry bundle list -o json /media/usb/images.tar.000`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := bundle.Open(args[0])
			if err != nil {
				return err
			}
			defer b.Close()
			cat := b.Catalog
			if g.json() {
				return writeJSON(g.streams.Out, cat)
			}
			tw := newTable(g.streams.Out)
			fmt.Fprintln(tw, "REFERENCE\tDIGEST\tPLATFORMS\tSIZE\tREFERRERS")
			for _, im := range cat.Images {
				plats := strings.Join(im.Platforms, ",")
				if plats == "" {
					plats = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", im.Reference, im.Digest, plats, humanSize(im.Size), referrerSummary(im.Referrers))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.streams.Err, "%s: %d images, %d blobs, %s in %d file(s); written %s by ferry %s\n",
				b.Name(), len(cat.Images), len(cat.Blobs), humanSize(b.Size()), len(b.Parts()), cat.Created.Format("2006-01-02 15:04:05Z"), cat.FerryVersion)
			if d := cat.Differential; d != nil {
				fmt.Fprintf(g.streams.Err, "differential: %d blobs left out, held by the far side per receipt(s) %s\n", len(d.Omitted), joinDigests(d.Receipts))
			}
			return nil
		},
	}
}

// referrerSummary says, e.g., "1 signature, 1 sbom", or "-".
func referrerSummary(rs []bundle.Referrer) string {
	if len(rs) == 0 {
		return "-"
	}
	counts := map[string]int{}
	var kinds []string
	for _, r := range rs {
		if counts[r.Kind] == 0 {
			kinds = append(kinds, r.Kind)
		}
		counts[r.Kind]++
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%d %s", counts[k], k)
		if counts[k] > 1 && k != "sbom" {
			parts[i] += "s"
		}
	}
	return strings.Join(parts, ", ")
}

func joinDigests[T ~string](ds []T) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = string(d)
	}
	return strings.Join(s, ", ")
}

type bundleVerifyOptions struct {
	key string
}

func newBundleVerifyCmd(g *globalOptions) *cobra.Command {
	o := &bundleVerifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify FILE [--key PUB]",
		Short: "Check a bundle completely before importing it",
		Long: `Verify a bundle: every part (or the one file) against SHA256SUMS (or
FILE.sha256), naming a missing, corrupt or truncated part and the offset
where the bundle breaks off; every tar entry (no links, no paths out of the
bundle, no sizes the file cannot hold); every blob's digest and size; every
manifest's references; and the catalog against index.json. It reads the
whole bundle, twice.

With --key, every image must also carry a signature in the bundle that
verifies with the public key (a file, or env://VAR), as ferry verify
checks it: offline, failing closed.

Exits 4 when anything is wrong, listing every problem on stderr (or in the
JSON report with -o json).`,
		Example: `  ferry bundle verify /media/usb/images.tar
  ferry bundle verify --key cosign.pub images.tar
  ferry bundle verify -o json images.tar.000`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), g, args[0])
		},
	}
	cmd.Flags().StringVar(&o.key, "key", "", "also require a valid signature of every image by this public key (a file, or env://VAR)")
	_ = cmd.MarkFlagFilename("key", "pub", "pem")
	return cmd
}

func (o *bundleVerifyOptions) run(ctx context.Context, g *globalOptions, file string) error {
	var sigOpts signing.VerifyOptions
	if o.key != "" {
		pem, err := signing.ReadKeyRef(o.key, nil)
		if err != nil {
			return &UsageError{Err: fmt.Errorf("--key: %w", err)}
		}
		if sigOpts.Key, err = signing.LoadPublicKey(o.key, pem); err != nil {
			return keyError(err)
		}
		sigOpts.KeyName = o.key
	}
	rep, err := bundle.Verify(ctx, file)
	if err != nil {
		return err
	}
	var verified []signing.Verified
	if o.key != "" && len(rep.Problems) == 0 {
		if verified, err = verifyBundleSignatures(ctx, file, rep, sigOpts); err != nil {
			return err
		}
	}
	if g.json() {
		out := struct {
			*bundle.Report
			Signatures []signing.Verified `json:"signatures,omitempty"`
		}{rep, verified}
		if err := writeJSON(g.streams.Out, out); err != nil {
			return err
		}
	} else {
		printProblems(g.streams.Err, rep)
		for _, v := range verified {
			fmt.Fprintf(g.streams.Err, "verified %s: %d valid signature(s)\n", v.Image, len(v.Signatures))
		}
		if len(rep.Problems) == 0 {
			fmt.Fprintf(g.streams.Out, "%s: OK: %d images, %d referrers, %d blobs, %s in %d file(s)\n",
				rep.Bundle, rep.Images, rep.Referrers, rep.Blobs, humanSize(rep.Size), len(rep.Parts))
		}
	}
	return rep.Err()
}

// verifyBundleSignatures checks every image's signatures in the bundle;
// an image without a valid one becomes a problem of the report.
func verifyBundleSignatures(ctx context.Context, file string, rep *bundle.Report, opts signing.VerifyOptions) ([]signing.Verified, error) {
	b, err := bundle.Open(file)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	var all []signing.Verified
	for _, im := range b.Catalog.Images {
		res, err := signing.Verify(ctx, b.Source(im.Repository), b.Reference(im), opts)
		all = append(all, res...)
		var verr *signing.VerificationError
		switch {
		case errors.As(err, &verr):
			rep.Problems = append(rep.Problems, bundle.Problem{Offset: -1, Digest: im.Digest, Message: fmt.Sprintf("%s: %v", im.Reference, err)})
		case err != nil:
			return nil, err
		}
	}
	return all, nil
}

func printProblems(w io.Writer, rep *bundle.Report) {
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "problem: %s\n", p.Message)
	}
}

type bundleImportOptions struct {
	to           string
	maps         []string
	receipt      string
	noReceipt    bool
	jobs         int
	images       int
	manifestSize string
}

func newBundleImportCmd(g *globalOptions) *cobra.Command {
	o := &bundleImportOptions{}
	cmd := &cobra.Command{
		Use:   "import FILE --to REGISTRY[/PREFIX]|oci:DIR",
		Short: "Verify a bundle, then copy its images into a registry or OCI layout",
		Long: `Import a bundle. It is verified completely first, as ferry bundle verify
does, and nothing is imported when anything is wrong (exit 4).

Each image goes to the target under its source repository without the
registry host: docker.io/library/nginx:1.27 imported --to
registry.internal:5000/mirror becomes
registry.internal:5000/mirror/library/nginx:1.27. --map SRC=DST (repeatable;
the longest SRC wins) sends the repositories under SRC to DST under the
target instead: --map docker.io/library=hub gives mirror/hub/nginx. Into an
OCI layout (oci:DIR) images are tagged REPOSITORY:TAG, as ferry serve names
them.

Images are pushed a few at once with one blob budget, with their
signatures, attestations and SBOMs; blobs the target holds are skipped,
so a rerun after an interruption finishes the job. A failing image does not
stop the others: ferry exits 3.

Then a receipt of the blobs the target now holds is written (--receipt,
default FILE.receipt.json beside the bundle): take it back to make the next
bundle differential with ferry bundle create --since.`,
		Example: `  ferry bundle import /media/usb/images.tar --to registry.internal:5000/mirror
  ferry bundle import images.tar.000 --to registry.internal:5000 --map docker.io/library=hub
  ferry bundle import images.tar --to oci:/srv/registry --receipt /tmp/receipt.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), g, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.to, "to", "", "where to import: REGISTRY[/PREFIX] or oci:DIR (required)")
	f.StringArrayVar(&o.maps, "map", nil, "send the source repositories under SRC to DST under the target: SRC=DST (repeatable)")
	f.StringVar(&o.receipt, "receipt", "", "write the receipt here (default FILE.receipt.json beside the bundle)")
	f.BoolVar(&o.noReceipt, "no-receipt", false, "write no receipt")
	f.IntVar(&o.jobs, "jobs", transfer.DefaultJobs, "blobs to push at once, across images")
	f.IntVar(&o.images, "images", bundle.DefaultImages, "images to push at once")
	f.StringVar(&o.manifestSize, "max-manifest-size", "4MiB", "refuse manifests larger than this")
	_ = cmd.MarkFlagFilename("receipt", "json")
	return cmd
}

func (o *bundleImportOptions) run(ctx context.Context, g *globalOptions, file string) error {
	if o.to == "" {
		return usageErrorf("--to is required: REGISTRY[/PREFIX] or oci:DIR")
	}
	if o.jobs < 1 || o.images < 1 {
		return usageErrorf("--jobs and --images: expected at least 1")
	}
	limit, err := parseSize(o.manifestSize)
	if err != nil {
		return usageErrorf("--max-manifest-size: %v", err)
	}
	var maps []bundle.Mapping
	for _, s := range o.maps {
		m, err := bundle.ParseMapping(s)
		if err != nil {
			return &UsageError{Err: fmt.Errorf("--map: %w", err)}
		}
		maps = append(maps, m)
	}
	mode := g.progressMode()
	if mode != progress.ModeNone && mode != progress.ModeJSON {
		fmt.Fprintf(g.streams.Err, "verifying %s before importing anything\n", file)
	}
	bar := progress.New(g.streams.Err, mode)
	defer bar.Close()
	defer softMemoryLimit(o.jobs)()
	res, err := bundle.Import(ctx, file, bundle.ImportOptions{
		To:            o.to,
		Map:           maps,
		Remote:        g.remote(limit),
		Insecure:      g.insecure,
		Jobs:          o.jobs,
		Images:        o.images,
		ManifestLimit: limit,
		Events:        bar.Event,
		Receipt:       o.receipt,
		NoReceipt:     o.noReceipt,
		FerryVersion:  version,
	})
	bar.Close()
	if err != nil {
		if res != nil && res.Verify != nil {
			printProblems(g.streams.Err, res.Verify)
		}
		return err
	}
	if g.json() {
		if err := writeJSON(g.streams.Out, res); err != nil {
			return err
		}
	} else {
		for _, im := range res.Images {
			if im.Err == nil {
				fmt.Fprintln(g.streams.Out, strings.SplitN(im.Target, "@", 2)[0]+"@"+string(im.Digest))
			}
		}
	}
	var copied, skipped, mounted int
	var bytes int64
	for _, im := range res.Images {
		copied += im.BlobsCopied
		skipped += im.BlobsSkipped
		mounted += im.BlobsMounted
		bytes += im.Bytes
		if im.Err != nil {
			fmt.Fprintf(g.streams.Err, "ferry: %v\n", im.Err)
		}
	}
	fmt.Fprintf(g.streams.Err, "import: %d of %d images; copied %d blobs (%s), skipped %d, mounted %d\n",
		len(res.Images)-res.Failed, len(res.Images), copied, humanSize(bytes), skipped, mounted)
	if res.Receipt != "" {
		fmt.Fprintf(g.streams.Err, "receipt: %s\n", res.Receipt)
	}
	if res.Failed > 0 {
		if res.Failed == len(res.Images) {
			for _, im := range res.Images {
				return fmt.Errorf("all %d images failed: %w", res.Failed, im.Err)
			}
		}
		return &PartialError{Failed: res.Failed, Total: len(res.Images), What: "images"}
	}
	return nil
}

type bundleReceiptOptions struct {
	output string
	jobs   int
}

func newBundleReceiptCmd(g *globalOptions) *cobra.Command {
	o := &bundleReceiptOptions{}
	cmd := &cobra.Command{
		Use:   "receipt REGISTRY/REPO... [-o FILE]",
		Short: "Write a receipt of the blobs repositories hold",
		Long: `Write a receipt of what the far side holds, from its registry: every tag
of each REGISTRY/REPO (cosign's signature tags too) is walked, and the
configs and layers its manifests reference are listed with their sizes.
A bundle made with --since FILE leaves them out.

ferry bundle import writes a receipt itself; this is for a far side that
was filled some other way, or to start over from what is really there.
The receipt goes to FILE, or to stdout without -o.`,
		Example: `  ferry bundle receipt registry.internal:5000/mirror/library/nginx -o receipt.json
  ferry bundle receipt registry.internal:5000/app registry.internal:5000/base > receipt.json`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeReference(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.jobs < 1 {
				return usageErrorf("--jobs: expected at least 1")
			}
			for _, a := range args {
				if _, err := transfer.ParseRepository(a, g.insecure); err != nil {
					return err
				}
			}
			rec, err := bundle.ReceiptFromRegistry(cmd.Context(), args, bundle.ReceiptOptions{
				Remote:       g.remote(0),
				Insecure:     g.insecure,
				Jobs:         o.jobs,
				FerryVersion: version,
			})
			if err != nil {
				return err
			}
			if o.output == "" || o.output == "-" {
				rec.MediaType = bundle.MediaTypeReceipt
				return writeJSON(g.streams.Out, rec)
			}
			if err := bundle.WriteReceipt(o.output, rec); err != nil {
				return err
			}
			fmt.Fprintln(g.streams.Out, o.output)
			fmt.Fprintf(g.streams.Err, "receipt: %d blobs in %d repositories\n", len(rec.Blobs), len(args))
			return nil
		},
	}
	bundleOutputFlag(cmd, &o.output, "write the receipt to this file (default stdout)")
	cmd.Flags().IntVar(&o.jobs, "jobs", 8, "manifests to read at once")
	return cmd
}

// serveBundle makes the registry of ferry serve --bundle: the bundle read
// in place, read-only, with images named as an import into the root of a
// registry names them (bundle.ServeReader).
func serveBundle(path string, opts registry.Options) (*registry.Server, func() error, error) {
	b, err := bundle.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("--bundle: %w", err)
	}
	r, err := b.ServeReader()
	if err == nil {
		var h *registry.Server
		if h, err = registry.NewReadOnly(r, opts); err == nil {
			return h, b.Close, nil
		}
	}
	b.Close()
	return nil, nil, fmt.Errorf("--bundle %s: %w", path, err)
}
