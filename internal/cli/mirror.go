package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"

	"github.com/ferry-oci/ferry/internal/progress"
	"github.com/ferry-oci/ferry/mirror"
)

type mirrorOptions struct {
	file         string
	dryRun       bool
	recheck      bool
	shard        string
	jobs         int
	images       int
	manifestSize string
}

func newMirrorCmd(g *globalOptions) *cobra.Command {
	o := &mirrorOptions{}
	cmd := &cobra.Command{
		Use:   "mirror -c FILE",
		Short: "Keep copies of many repositories in step, as a TOML config says",
		Long: `Mirror the repositories a TOML config lists (docs/mirror-config.md): for
each [[sync]] entry, select the source's tags (regex, glob, semver range,
newest N), copy those the target lacks or that changed, and with prune
delete target tags that are no longer selected, never a signature of an
image that stays.

Reruns are cheap: a tag the target has is compared by digest with HEAD
requests, which registries such as Docker Hub do not count as pulls; no
unchanged manifest is ever fetched from the source, and tags matching an
immutable pattern that the target has cost no request at all. Platform
subsets and referrers are copied as ferry copy copies them.

Images are copied a few at once with one shared blob budget. A failing
image does not stop the others: the report lists copied, skipped, pruned
and failed images with digests and bytes, and ferry exits 3.`,
		Example: `  ferry mirror -c mirror.toml --dry-run
  ferry mirror -c mirror.toml
  ferry mirror -c mirror.toml -o json > report.json
  ferry mirror -c mirror.toml --shard 2/4      # one of four CI runners`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), g)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "c", "", "the mirror config (TOML); required")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the plan (copy, skip and why, prune, bytes to move) and change nothing")
	f.BoolVar(&o.recheck, "recheck", false, "copy every selected tag that is not immutable through the engine, whatever the digests say")
	f.StringVar(&o.shard, "shard", "", "run only slice I of N of the images (I/N, e.g. 2/4), stable across runs")
	f.IntVar(&o.jobs, "jobs", 0, "blobs in flight, shared by every image (default: the config's jobs, else 16)")
	f.IntVar(&o.images, "images", 0, "images copied at once (default: the config's images, else 8)")
	f.StringVar(&o.manifestSize, "max-manifest-size", "4MiB", "refuse manifests larger than this")
	_ = cmd.MarkFlagFilename("file", "toml")
	return cmd
}

func (o *mirrorOptions) run(ctx context.Context, g *globalOptions) error {
	if o.file == "" {
		return usageErrorf("-c FILE is required: the mirror config, see docs/mirror-config.md")
	}
	if o.jobs < 0 || o.images < 0 {
		return usageErrorf("--jobs and --images: expected at least 1")
	}
	limit, err := parseSize(o.manifestSize)
	if err != nil {
		return usageErrorf("--max-manifest-size: %v", err)
	}
	var shard mirror.Shard
	if o.shard != "" {
		if shard, err = mirror.ParseShard(o.shard); err != nil {
			return usageErrorf("--shard: %v", err)
		}
	}
	cfg, err := mirror.Load(o.file)
	if errors.Is(err, fs.ErrNotExist) {
		return usageErrorf("-c %s: no such file", o.file)
	}
	if err != nil {
		return err
	}
	g.registries = cfg.Registry

	mode := g.progressMode()
	if o.dryRun {
		mode = progress.ModeNone // nothing moves
	}
	bar := progress.New(g.streams.Err, mode)
	defer bar.Close()
	rep, err := mirror.Run(ctx, cfg, mirror.Options{
		Remote:   g.remote(limit),
		Insecure: func(host string) bool { return g.insecure || g.registryConfig(host).Insecure },
		DryRun:   o.dryRun,
		Recheck:  o.recheck,
		Shard:    shard,
		Jobs:     o.jobs,
		Images:   o.images,
		Events:   bar.Event,
	})
	bar.Close()
	if err != nil {
		return err
	}
	if err := printMirror(g, rep); err != nil {
		return err
	}
	if n := rep.Failed(); n > 0 {
		if n == rep.Total() {
			return fmt.Errorf("%d of %d images failed", n, n) // none succeeded: not partial
		}
		return &PartialError{Failed: n, Total: rep.Total(), What: "images"}
	}
	return nil
}

// printMirror writes the report: JSON, or one line per image on stdout
// and the errors and a summary on stderr.
func printMirror(g *globalOptions, rep *mirror.Report) error {
	if g.json() {
		return writeJSON(g.streams.Out, rep)
	}
	verbs := map[string]string{mirror.ActionCopy: "copied", mirror.ActionSkip: "skipped", mirror.ActionPrune: "pruned"}
	if rep.DryRun {
		verbs = map[string]string{mirror.ActionCopy: "copy", mirror.ActionSkip: "skip", mirror.ActionPrune: "prune"}
	}
	tw := newTable(g.streams.Out)
	for _, it := range rep.Items {
		verb, size, d := verbs[it.Action], "-", string(it.Digest)
		if it.Err != nil {
			verb = "failed"
		}
		if it.Action == mirror.ActionCopy && it.Err == nil {
			size = humanSize(it.Bytes)
		}
		if d == "" {
			d = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", verb, it.Target, d, size, it.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range rep.Failures {
		fmt.Fprintf(g.streams.Err, "ferry: [[sync]] %d (%s → %s): %v\n", f.Sync, f.Source, f.Target, f.Err)
	}
	for _, it := range rep.Items {
		if it.Err != nil {
			fmt.Fprintf(g.streams.Err, "ferry: %s: %v\n", it.Target, it.Err)
		}
	}
	s := rep.Summary
	if rep.DryRun {
		fmt.Fprintf(g.streams.Err, "dry run: would copy %d images (%s to move), skip %d, prune %d; %d failed\n",
			s.Copied, humanSize(s.Bytes), s.Skipped, s.Pruned, s.Failed)
	} else {
		fmt.Fprintf(g.streams.Err, "mirror: copied %d images (%s), skipped %d, pruned %d, failed %d in %.1fs\n",
			s.Copied, humanSize(s.Bytes), s.Skipped, s.Pruned, s.Failed, s.Seconds)
	}
	return nil
}
