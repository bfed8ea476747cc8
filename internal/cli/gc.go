package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferry-oci/ferry/internal/gc"
	"github.com/ferry-oci/ferry/internal/image"
	"github.com/ferry-oci/ferry/internal/transfer"
)

type gcOptions struct {
	dryRun    bool
	grace     time.Duration
	keepLast  int
	keep      []string
	olderThan string
	untagged  bool
	orphans   bool
	file      string
	jobs      int
}

func newGCCmd(g *globalOptions) *cobra.Command {
	o := &gcOptions{}
	cmd := &cobra.Command{
		Use:   "gc REPO|oci:DIR...",
		Short: "Delete old tags, untagged images and orphaned signatures; reclaim space in OCI layouts",
		Long: `Collect garbage in registry repositories and OCI image layouts.

Rules say what goes:
  --keep-last N      keep the newest N tags (by version when every tag is
                     one, else by the image's created time)
  --older-than D     delete tags whose image is older than D (90d, 2w, 36h);
                     with --keep-last, only tags both rules let go
  --keep REGEX       never delete matching tags (repeatable)
  --untagged         delete the images of deleted indexes that nothing kept
                     references (in a layout: every untagged manifest)
  --orphans          delete signatures, attestations, SBOMs and referrers
                     whose image is gone or deleted
or come from the [[retention]] tables of a TOML file (-c, docs/gc.md),
the first whose repository pattern matches. On a registry, no rule means
nothing to do, and gc refuses to run.

Every run builds its plan first; --dry-run prints it and stops. A
manifest with a kept tag, an image a kept index references, and the
signatures of kept images are never deleted. Deleting a manifest deletes
every tag on it; when only some of its tags go, they are deleted one by
one, where the registry can.

On oci:DIR, the rules apply to its tags, then untagged manifests that
nothing kept needs and blobs nothing reachable uses are removed, as with
no rule. Content written within --grace stays, so a push in progress
(ferry serve on the same root) is safe.`,
		Example: `  ferry gc --keep-last 10 --keep '^stable' --orphans --dry-run registry.example.com/team/app
  ferry gc --older-than 90d --untagged --orphans registry.example.com/team/app
  ferry gc -c mirror.toml registry.internal:5000/mirror/nginx
  ferry gc --dry-run oci:./images
  ferry gc --keep-last 3 -o json oci:/srv/registry`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeReference(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), g, args)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.dryRun, "dry-run", false, "print the plan and delete nothing")
	f.DurationVar(&o.grace, "grace", 10*time.Minute, "oci:DIR: never remove content written within this long")
	f.IntVar(&o.keepLast, "keep-last", 0, "keep the newest N tags; the others may go")
	f.StringArrayVar(&o.keep, "keep", nil, "never delete tags matching this regexp (repeatable)")
	f.StringVar(&o.olderThan, "older-than", "", "delete tags whose image is older than this (90d, 2w, 36h)")
	f.BoolVar(&o.untagged, "untagged", false, "delete the manifests this run leaves untagged that nothing kept references")
	f.BoolVar(&o.orphans, "orphans", false, "delete signatures, attestations, SBOMs and referrers of images that are gone or deleted")
	f.StringVarP(&o.file, "file", "c", "", "read rules from the [[retention]] tables of this TOML file")
	f.IntVar(&o.jobs, "jobs", 8, "requests at once")
	_ = cmd.MarkFlagFilename("file", "toml")
	return cmd
}

// flagRules are the rules the command line gives.
func (o *gcOptions) flagRules() (gc.Rules, error) {
	r := gc.Rules{KeepLast: o.keepLast, Untagged: o.untagged, Orphans: o.orphans}
	var err error
	if r.Keep, err = image.CompileRegexps("--keep", o.keep); err != nil {
		return r, usageErrorf("%v", err)
	}
	if o.olderThan != "" {
		if r.OlderThan, err = gc.ParseAge(o.olderThan); err != nil {
			return r, usageErrorf("--older-than %v", err)
		}
	}
	if err := r.Check(); err != nil {
		return r, usageErrorf("--%v", err)
	}
	return r, nil
}

func (o *gcOptions) run(ctx context.Context, g *globalOptions, args []string) error {
	if o.grace < 0 {
		return usageErrorf("--grace %s: expected a duration of zero or more", o.grace)
	}
	if o.jobs < 1 {
		return usageErrorf("--jobs %d: expected 1 or more", o.jobs)
	}
	flags, err := o.flagRules()
	if err != nil {
		return err
	}
	var file []gc.Retention
	if o.file != "" {
		if file, err = gc.LoadRetention(o.file); err != nil {
			return err
		}
	}
	type job struct {
		ref   transfer.Reference
		rules gc.Rules
	}
	var jobs []job
	for _, arg := range args {
		ref, err := g.parseReference(arg)
		if err == nil && ref.Kind == transfer.KindRegistry {
			// Without the "latest" a bare repository gets.
			ref.Repo, err = transfer.ParseRepository(arg, g.insecure)
			ref.Tag = ""
		}
		if err != nil || ref.Tag != "" || ref.Digest != "" || ref.Kind == transfer.KindArchive {
			return usageErrorf("%s: gc works on a repository or an OCI layout: give REPO or oci:DIR, without a tag or digest", arg)
		}
		rules := flags
		if rules.Empty() && file != nil {
			name := "oci:" + ref.Path
			if ref.Kind == transfer.KindRegistry {
				name = ref.Repo.Name()
			}
			if r, ok := gc.RulesFor(file, name); ok {
				rules = r
			} else if ref.Kind == transfer.KindRegistry {
				return usageErrorf("%s: no [[retention]] table of %s matches %q, and no rule flag is given", arg, o.file, name)
			}
		}
		if rules.Empty() && ref.Kind == transfer.KindRegistry {
			return usageErrorf("%s: no rule given, so nothing would be deleted: use --keep-last N, --older-than D, --untagged or --orphans (with --keep to protect tags), or -c FILE", arg)
		}
		jobs = append(jobs, job{ref, rules})
	}

	var plans []*gc.Plan
	failed, total := 0, 0
	for _, j := range jobs {
		p, err := o.collect(ctx, g, j.ref, j.rules)
		if err != nil {
			return err
		}
		plans = append(plans, p)
		failed += p.Failed
		total += len(p.Delete)
	}
	if g.json() {
		var v any = plans
		if len(plans) == 1 {
			v = plans[0]
		}
		if err := writeJSON(g.streams.Out, v); err != nil {
			return err
		}
	} else {
		for _, p := range plans {
			printPlan(g.streams.Out, g.streams.Err, p)
		}
	}
	if failed > 0 {
		return &PartialError{Failed: failed, Total: total, What: "deletes"}
	}
	return nil
}

// collect plans one repository or layout, applies the plan unless this
// is a dry run, and sweeps a layout.
func (o *gcOptions) collect(ctx context.Context, g *globalOptions, ref transfer.Reference, rules gc.Rules) (*gc.Plan, error) {
	opts := gc.Options{Jobs: o.jobs}
	p := &gc.Plan{Repository: ref.String(), DryRun: o.dryRun, Delete: []*gc.Item{}, Keep: []*gc.Item{}}
	if !rules.Empty() {
		ep, finish, err := o.open(ctx, g, ref)
		if err != nil {
			return nil, err
		}
		p, err = gc.NewPlan(ctx, ep, rules, opts)
		if err == nil {
			p.DryRun = o.dryRun
			if !o.dryRun {
				gc.Apply(ctx, ep, p, opts)
			}
		}
		if ferr := finish(err == nil); err == nil {
			err = ferr
		}
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	if ref.Kind == transfer.KindLayout {
		grace := o.grace
		if grace == 0 {
			grace = -1 // the store reads 0 as its default
		}
		rep, err := gc.Local(ctx, ref.Path, gc.LocalOptions{Grace: grace, DryRun: o.dryRun})
		if err != nil {
			return nil, err
		}
		p.Layout = &rep
	}
	return p, nil
}

// open opens a registry repository, with delete access, or an existing
// layout for reading and deleting.
func (o *gcOptions) open(ctx context.Context, g *globalOptions, ref transfer.Reference) (gc.Endpoint, func(bool) error, error) {
	remote := g.remote(0)
	if ref.Kind == transfer.KindRegistry {
		r, err := remote.OpenForDelete(ctx, ref.Repo)
		return r, func(bool) error { return nil }, err
	}
	if ref.Kind == transfer.KindLayout {
		// Opening a layout for writing would create it: make sure it is there.
		_, closeSrc, err := remote.OpenSource(ctx, ref)
		if err != nil {
			return nil, nil, err
		}
		closeSrc()
	}
	dst, finish, err := remote.OpenTarget(ctx, ref, transfer.Reference{})
	if err != nil {
		return nil, nil, err
	}
	ep, ok := dst.(gc.Endpoint)
	if !ok {
		finish(false)
		return nil, nil, errors.New(dst.String() + " cannot be collected")
	}
	return ep, finish, nil
}

// printPlan writes a plan's items to out, one line each, and its notes
// and summary to errw.
func printPlan(out, errw io.Writer, p *gc.Plan) {
	for _, it := range p.Delete {
		verb := "delete"
		if it.UntagOnly {
			verb = "untag"
		}
		switch {
		case p.DryRun:
			verb = "would " + verb
		case it.Deleted && it.UntagOnly:
			verb = "untagged"
		case it.Deleted:
			verb = "deleted"
		default:
			verb = "failed to " + verb
		}
		fmt.Fprintf(out, "%s %s %s%s: %s\n", verb, it.Kind, it.Digest, tagSuffix(it.Tags), it.Reason)
		if it.Error != "" {
			fmt.Fprintf(errw, "ferry gc: %s@%s: %s\n", p.Repository, it.Digest, it.Error)
		}
	}
	for _, it := range p.Keep {
		fmt.Fprintf(out, "keep %s %s%s: %s\n", it.Kind, it.Digest, tagSuffix(it.Tags), it.Reason)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(errw, "%s: note: %s\n", p.Repository, n)
	}
	if len(p.Delete) > 0 || len(p.Keep) > 0 {
		if p.DryRun {
			fmt.Fprintf(errw, "%s: would delete %d, keep %d\n", p.Repository, len(p.Delete), len(p.Keep))
		} else {
			fmt.Fprintf(errw, "%s: deleted %d, failed %d, kept %d\n", p.Repository, p.Deleted, p.Failed, len(p.Keep))
		}
	}
	if r := p.Layout; r != nil {
		verb := "removed"
		if r.DryRun {
			verb = "would remove"
		}
		for _, d := range r.Manifests {
			fmt.Fprintf(out, "%s untagged manifest %s\n", verb, d)
		}
		for _, d := range r.Blobs {
			fmt.Fprintf(out, "%s blob %s\n", verb, d)
		}
		fmt.Fprintf(errw, "oci:%s: %s %d blobs (%s) and %d untagged manifests; kept %d blobs\n",
			r.Dir, verb, len(r.Blobs), humanSize(r.Bytes), len(r.Manifests), r.Kept)
	}
}

func tagSuffix(tags []string) string {
	if len(tags) == 0 {
		return ""
	}
	return " (" + strings.Join(tags, ", ") + ")"
}
