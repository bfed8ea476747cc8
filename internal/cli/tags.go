package cli

import (
	"bufio"
	"fmt"

	"github.com/Masterminds/semver/v3"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-oci/ferry/internal/image"
	"github.com/ferry-oci/ferry/internal/transfer"
)

type tagsOptions struct {
	include, exclude []string
	semver           string
	sort             string
	last             int
	digests          bool
	omitSignatures   bool
	jobs             int
}

func newTagsCmd(g *globalOptions) *cobra.Command {
	o := &tagsOptions{}
	cmd := &cobra.Command{
		Use:   "tags REPO",
		Short: "List the tags of a repository",
		Long: `List every tag of a repository, following the registry's pagination.
Filters apply in order: --omit-signatures, --include, --exclude, --semver,
then --sort and --last.`,
		Example: `  ferry tags registry.example.com/app
  ferry tags --semver '>=1.25, <2' --sort semver --last 3 docker.io/library/nginx
  ferry tags --include '^v' --exclude '-rc' --digests registry.example.com/app
  ferry tags --omit-signatures -o json registry.example.com/app`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeReference(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, g, args[0])
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.include, "include", nil, "keep tags matching this regex (repeatable)")
	f.StringArrayVar(&o.exclude, "exclude", nil, "drop tags matching this regex (repeatable)")
	f.StringVar(&o.semver, "semver", "", "keep tags that are versions in this range, e.g. '>=1.2, <2'")
	f.StringVar(&o.sort, "sort", "name", "order: name or semver")
	f.IntVar(&o.last, "last", 0, "keep only the last N tags after sorting")
	f.BoolVar(&o.digests, "digests", false, "show the manifest digest of each tag")
	f.BoolVar(&o.omitSignatures, "omit-signatures", false, "hide cosign's sha256-....sig/.att/.sbom tags")
	f.IntVar(&o.jobs, "jobs", 8, "concurrent digest lookups with --digests")
	_ = cmd.RegisterFlagCompletionFunc("sort", fixedCompletion("name", "semver"))
	return cmd
}

func (o *tagsOptions) selector() (image.TagSelector, error) {
	s := image.TagSelector{Sort: o.sort, Last: o.last, OmitSignatures: o.omitSignatures}
	var err error
	if o.sort != "name" && o.sort != "semver" {
		return s, usageErrorf("--sort %q: expected name or semver", o.sort)
	}
	if o.last < 0 {
		return s, usageErrorf("--last %d: expected a positive number", o.last)
	}
	if s.Include, err = image.CompileRegexps("--include", o.include); err != nil {
		return s, &UsageError{Err: err}
	}
	if s.Exclude, err = image.CompileRegexps("--exclude", o.exclude); err != nil {
		return s, &UsageError{Err: err}
	}
	if o.semver != "" {
		if s.Semver, err = semver.NewConstraint(o.semver); err != nil {
			return s, usageErrorf("--semver %q: %v", o.semver, err)
		}
	}
	return s, nil
}

type tagEntry struct {
	Tag    string        `json:"tag"`
	Digest digest.Digest `json:"digest,omitempty"`
}

func (o *tagsOptions) run(cmd *cobra.Command, g *globalOptions, arg string) error {
	ctx := cmd.Context()
	sel, err := o.selector()
	if err != nil {
		return err
	}
	if o.jobs < 1 {
		return usageErrorf("--jobs %d: expected at least 1", o.jobs)
	}
	var repo transfer.Source
	if ref, err := g.parseReference(arg); err == nil && ref.Kind != transfer.KindRegistry {
		if ref.Tag != "" || ref.Digest != "" {
			return usageErrorf("%s: expected a layout without a tag, e.g. %s:%s", arg, ref.Kind, ref.Path)
		}
		src, closeSrc, err := g.remote(0).OpenSource(ctx, ref)
		if err != nil {
			return err
		}
		defer closeSrc()
		repo = src
	} else {
		repoName, err := transfer.ParseRepository(arg, g.insecure)
		if err != nil {
			return err
		}
		if repo, err = g.remote(0).Open(ctx, repoName, false); err != nil {
			return err
		}
	}
	all, err := repo.Tags(ctx, transfer.TagOptions{})
	if err != nil {
		return err
	}
	tags := sel.Select(all)
	entries := make([]tagEntry, len(tags))
	for i, t := range tags {
		entries[i].Tag = t
	}
	if o.digests {
		eg, ectx := errgroup.WithContext(ctx)
		eg.SetLimit(o.jobs)
		for i := range entries {
			eg.Go(func() error {
				d, err := repo.ManifestDigest(ectx, entries[i].Tag)
				entries[i].Digest = d
				return err
			})
		}
		if err := eg.Wait(); err != nil {
			return err
		}
	}
	if g.json() {
		return writeJSON(g.streams.Out, entries)
	}
	out := bufio.NewWriter(g.streams.Out) // one write, not one per tag
	for _, e := range entries {
		if o.digests {
			fmt.Fprintf(out, "%s\t%s\n", e.Tag, e.Digest)
		} else {
			fmt.Fprintln(out, e.Tag)
		}
	}
	return out.Flush()
}
