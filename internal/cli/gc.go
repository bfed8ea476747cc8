package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferry-oci/ferry/internal/gc"
	"github.com/ferry-oci/ferry/internal/transfer"
)

type gcOptions struct {
	dryRun bool
	grace  time.Duration
}

func newGCCmd(g *globalOptions) *cobra.Command {
	o := &gcOptions{}
	cmd := &cobra.Command{
		Use:   "gc oci:DIR...",
		Short: "Reclaim space in OCI layouts",
		Long: `Collect garbage in OCI image layouts, including the root of a running
ferry serve: untagged manifests that nothing kept needs are dropped, and
blobs that nothing reachable uses are removed. Tags, everything they
reach, and the signatures, attestations and SBOMs of kept images stay.
Content written within --grace is never removed, so a push in progress
is safe.`,
		Example: `  ferry gc --dry-run oci:./images
  ferry gc oci:/srv/registry
  ferry gc --grace 1h -o json oci:/mnt/usb/mirror`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeReference(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			var reports []gc.LocalReport
			for _, arg := range args {
				ref, err := g.parseReference(arg)
				if err != nil {
					return err
				}
				if ref.Kind != transfer.KindLayout || ref.Tag != "" || ref.Digest != "" {
					return usageErrorf("%s: gc works on OCI layouts: give oci:DIR", arg)
				}
				if o.grace < 0 {
					return usageErrorf("--grace %s: expected a duration of zero or more", o.grace)
				}
				grace := o.grace
				if grace == 0 {
					grace = -1 // the store reads 0 as its default
				}
				rep, err := gc.Local(cmd.Context(), ref.Path, gc.LocalOptions{Grace: grace, DryRun: o.dryRun})
				if err != nil {
					return err
				}
				reports = append(reports, rep)
			}
			if g.json() {
				if len(reports) == 1 {
					return writeJSON(g.streams.Out, reports[0])
				}
				return writeJSON(g.streams.Out, reports)
			}
			for _, r := range reports {
				verb := "removed"
				if r.DryRun {
					verb = "would remove"
				}
				for _, d := range r.Manifests {
					fmt.Fprintf(g.streams.Out, "%s untagged manifest %s\n", verb, d)
				}
				for _, d := range r.Blobs {
					fmt.Fprintf(g.streams.Out, "%s blob %s\n", verb, d)
				}
				fmt.Fprintf(g.streams.Err, "oci:%s: %s %d blobs (%s) and %d untagged manifests; kept %d blobs\n",
					r.Dir, verb, len(r.Blobs), humanSize(r.Bytes), len(r.Manifests), r.Kept)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "show what would be removed and remove nothing")
	cmd.Flags().DurationVar(&o.grace, "grace", 10*time.Minute, "never remove content written within this long")
	return cmd
}
