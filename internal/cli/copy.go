package cli

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-oci/ferry/internal/image"
	"github.com/ferry-oci/ferry/internal/progress"
	"github.com/ferry-oci/ferry/internal/transfer"
)

type copyOptions struct {
	platforms    []string
	allTags      bool
	noClobber    bool
	referrers    bool
	digestFile   string
	jobs         int
	manifestSize string
}

func newCopyCmd(g *globalOptions) *cobra.Command {
	o := &copyOptions{}
	cmd := &cobra.Command{
		Use:   "copy SRC DST",
		Short: "Copy an image, or a whole repository, between endpoints",
		Long: `Copy an image from SRC to DST, byte for byte: an index with all its
platforms, every layer once, and the image's signatures, attestations and
SBOMs (referrers and cosign tags). Either side can be a registry, an OCI
layout directory (oci:DIR[:TAG]) or an OCI archive (oci-archive:FILE[:TAG]).

Blobs the destination has are skipped; on the same registry they are
mounted from the source repository instead of copied. Everything is
verified against its digest as it streams.

DST's tag is the one it names; without one, SRC's tag is used, and a
digest-only SRC is written by digest. On success ferry prints DST@DIGEST.`,
		Example: `  ferry copy docker.io/library/alpine:3.20 registry.example.com/base/alpine:3.20
  ferry copy --platform linux/amd64 --platform linux/arm64 nginx:1.27 registry.example.com/nginx:1.27
  ferry copy --all-tags registry.example.com/app registry.backup.example.com/app
  ferry copy registry.example.com/app:1.4 oci:./images:app-1.4
  ferry copy oci-archive:app.tar:1.4 registry.internal:5000/app:1.4
  ferry copy --digest-file app.digest -o json app:1.4 registry.example.com/app:1.4`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeReference(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), g, args[0], args[1])
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.platforms, "platform", nil, "copy only this os/arch[/variant] of an index (repeatable; several make a new index)")
	f.BoolVar(&o.allTags, "all-tags", false, "copy every tag of the SRC repository")
	f.BoolVar(&o.noClobber, "no-clobber", false, "leave destination tags that already exist alone")
	f.BoolVar(&o.referrers, "referrers", true, "carry signatures, attestations and SBOMs along")
	f.StringVar(&o.digestFile, "digest-file", "", "write the digest written at DST to this file")
	f.IntVar(&o.jobs, "jobs", transfer.DefaultJobs, "blobs to move at once")
	f.StringVar(&o.manifestSize, "max-manifest-size", "4MiB", "refuse manifests larger than this")
	return cmd
}

// copyReport is the -o json document for one image.
type copyReport struct {
	Source       string  `json:"source"`
	Target       string  `json:"target"`
	SourceDigest string  `json:"sourceDigest"`
	Digest       string  `json:"digest"`
	MediaType    string  `json:"mediaType,omitempty"`
	Kept         bool    `json:"kept,omitempty"`
	Manifests    int     `json:"manifests"`
	Referrers    int     `json:"referrers"`
	BlobsCopied  int     `json:"blobsCopied"`
	BlobsSkipped int     `json:"blobsSkipped"`
	BlobsMounted int     `json:"blobsMounted"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	Error        string  `json:"error,omitempty"`
}

func reportOf(r transfer.Result) copyReport {
	return copyReport{
		Source: r.Source, Target: r.Target,
		SourceDigest: string(r.SourceDigest), Digest: string(r.Digest), MediaType: r.MediaType,
		Kept: r.Kept, Manifests: r.Manifests, Referrers: r.Referrers,
		BlobsCopied: r.BlobsCopied, BlobsSkipped: r.BlobsSkipped, BlobsMounted: r.BlobsMounted,
		Bytes: r.Bytes, Seconds: r.Duration.Seconds(),
	}
}

func (o *copyOptions) run(ctx context.Context, g *globalOptions, srcArg, dstArg string) (err error) {
	if o.jobs < 1 {
		return usageErrorf("--jobs %d: expected at least 1", o.jobs)
	}
	limit, err := parseSize(o.manifestSize)
	if err != nil {
		return usageErrorf("--max-manifest-size: %v", err)
	}
	platforms, err := parsePlatforms(o.platforms)
	if err != nil {
		return err
	}
	src, err := g.parseReference(srcArg)
	if err != nil {
		return err
	}
	dst, err := g.parseReference(dstArg)
	if err != nil {
		return err
	}
	srcTagged := explicitTag(src)
	dstTagged := explicitTag(dst)
	if o.allTags && (srcTagged || src.Digest != "" || dstTagged || dst.Digest != "") {
		return usageErrorf("--all-tags copies whole repositories: give SRC and DST without a tag or digest")
	}

	mode := g.progressMode()
	bar := progress.New(g.streams.Err, mode)
	defer bar.Close()

	remote := g.remote(limit)
	source, closeSrc, target, finish, err := openEnds(ctx, remote, src, dst)
	if err != nil {
		return err
	}
	defer closeSrc()
	ok := false
	defer func() {
		if ferr := finish(ok); ferr != nil && err == nil {
			err = ferr
		}
	}()

	engine := transfer.NewEngine(transfer.Options{
		Platforms: platforms,
		Referrers: o.referrers,
		NoClobber: o.noClobber,
		Jobs:      o.jobs,
		Events:    bar.Event,
	})

	var reqs []transfer.Request
	if o.allTags {
		tags, err := source.Tags(ctx, transfer.TagOptions{})
		if err != nil {
			return err
		}
		sort.Strings(tags)
		for _, t := range tags {
			if o.referrers && image.IsSignatureTag(t) {
				continue // carried with the image it signs
			}
			reqs = append(reqs, transfer.Request{Source: t, Tag: t})
		}
		if len(reqs) == 0 {
			return fmt.Errorf("%s has no tags to copy", srcArg)
		}
	} else {
		req := transfer.Request{Source: src.Identifier()}
		switch {
		case dst.Digest != "":
		case dstTagged:
			req.Tag = dst.Tag
		case src.Digest == "" && src.Tag != "":
			req.Tag = src.Tag
		}
		reqs = append(reqs, req)
	}

	results := make([]transfer.Result, len(reqs))
	errs := make([]error, len(reqs))
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(imageJobs(len(reqs)))
	for i, req := range reqs {
		eg.Go(func() error {
			results[i], errs[i] = engine.Copy(ectx, source, target, req)
			if errs[i] != nil && !o.allTags {
				return errs[i]
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if dst.Digest != "" && results[0].Digest != dst.Digest {
		return fmt.Errorf("%w: %s was written as %s, not the %s DST names", transfer.ErrDigestMismatch, srcArg, results[0].Digest, dst.Digest)
	}
	bar.Close()
	ok = true
	if ferr := finish(true); ferr != nil {
		return ferr
	}
	finish = func(bool) error { return nil }

	failed := 0
	for i := range results {
		if errs[i] != nil {
			failed++
		}
	}
	if err := o.print(g, target.String(), results, errs); err != nil {
		return err
	}
	if o.digestFile != "" && failed < len(results) {
		var b strings.Builder
		for i, r := range results {
			if errs[i] == nil {
				fmt.Fprintln(&b, r.Digest)
			}
		}
		if err := os.WriteFile(o.digestFile, []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("--digest-file: %w", err)
		}
	}
	if failed > 0 {
		for i, e := range errs {
			if e != nil {
				fmt.Fprintf(g.streams.Err, "ferry: %s: %v\n", reqs[i].Source, e)
			}
		}
		return &PartialError{Failed: failed, Total: len(results), What: "tags"}
	}
	return nil
}

// imageJobs is how many images of --all-tags copy at once; the engine's
// blob budget is shared between them.
func imageJobs(n int) int { return min(n, 4) }

func (o *copyOptions) print(g *globalOptions, base string, results []transfer.Result, errs []error) error {
	if g.json() {
		reps := make([]copyReport, len(results))
		for i, r := range results {
			reps[i] = reportOf(r)
			if errs[i] != nil {
				reps[i].Error = errs[i].Error()
			}
		}
		if !o.allTags {
			return writeJSON(g.streams.Out, reps[0])
		}
		return writeJSON(g.streams.Out, reps)
	}
	for i, r := range results {
		if errs[i] != nil {
			continue
		}
		fmt.Fprintln(g.streams.Out, base+"@"+string(r.Digest))
		switch {
		case r.Kept:
			fmt.Fprintf(g.streams.Err, "%s exists; kept it (--no-clobber)\n", r.Target)
		case r.SourceDigest != r.Digest:
			fmt.Fprintf(g.streams.Err, "selected from %s@%s\n", strings.SplitN(r.Source, "@", 2)[0], r.SourceDigest)
		}
	}
	return nil
}

// explicitTag reports whether the user wrote a tag in the reference.
func explicitTag(r transfer.Reference) bool {
	if r.Tag == "" {
		return false
	}
	s := r.Original
	if i := strings.LastIndex(s, "@"); i >= 0 {
		s = s[:i]
	}
	return strings.HasSuffix(s, ":"+r.Tag)
}

// openEnds opens a copy's source and target. A registry target is opened
// while the source is, since each may take a few round trips (ping,
// token); a layout or archive target only once the source is open, since
// opening one for writing creates it. On error nothing is left open.
func openEnds(ctx context.Context, remote *transfer.Remote, src, dst transfer.Reference) (source transfer.Source, closeSrc func() error, target transfer.Target, finish func(bool) error, err error) {
	if dst.Kind != transfer.KindRegistry {
		if source, closeSrc, err = remote.OpenSource(ctx, src); err != nil {
			return nil, nil, nil, nil, err
		}
		if target, finish, err = remote.OpenTarget(ctx, dst, src); err != nil {
			closeSrc()
			return nil, nil, nil, nil, err
		}
		return source, closeSrc, target, finish, nil
	}
	var srcErr error
	opened := make(chan struct{})
	go func() {
		defer close(opened)
		source, closeSrc, srcErr = remote.OpenSource(ctx, src)
	}()
	target, finish, err = remote.OpenTarget(ctx, dst, src)
	<-opened
	switch {
	case srcErr != nil:
		if err == nil {
			finish(false)
		}
		return nil, nil, nil, nil, srcErr
	case err != nil:
		closeSrc()
		return nil, nil, nil, nil, err
	}
	return source, closeSrc, target, finish, nil
}
