package cli

import (
	"fmt"
	"maps"
	"slices"
	"text/template"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/ferry-oci/ferry/internal/image"
	"github.com/ferry-oci/ferry/internal/transfer"
)

type inspectOptions struct {
	raw, config, digest bool
	platform            string
	format              string
	maxManifestSize     string
}

func newInspectCmd(g *globalOptions) *cobra.Command {
	o := &inspectOptions{}
	cmd := &cobra.Command{
		Use:   "inspect REF",
		Short: "Show an image's digest, platforms, layers and labels",
		Long: `Show an image or index: its digest, media type and size, the platforms of an
index, and an image's creation time, layers and labels.

--raw prints the manifest exactly as the registry served it, --config the
image config blob, --digest only the digest. -o json prints a stable JSON
document and --format a Go template over the same document.`,
		Example: `  ferry inspect registry.example.com/app:1.2
  ferry inspect --platform linux/arm64 docker.io/library/alpine:3.20
  ferry inspect --raw registry.example.com/app@sha256:4f1c...
  ferry inspect --format '{{.Digest}} {{len .Layers}}' registry.example.com/app:1.2`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeReference(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, g, args[0])
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.raw, "raw", false, "print the manifest bytes exactly as served")
	f.BoolVar(&o.config, "config", false, "print the image config blob")
	f.BoolVar(&o.digest, "digest", false, "print only the digest")
	f.StringVar(&o.platform, "platform", "", "pick the image for os/arch[/variant] from an index")
	f.StringVar(&o.format, "format", "", "Go template over the JSON document, e.g. '{{.Digest}}'")
	f.StringVar(&o.maxManifestSize, "max-manifest-size", "4MiB", "refuse manifests larger than this")
	cmd.MarkFlagsMutuallyExclusive("raw", "config", "digest", "format")
	_ = cmd.RegisterFlagCompletionFunc("platform", fixedCompletion("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/386", "linux/ppc64le", "linux/s390x", "windows/amd64"))
	return cmd
}

func (o *inspectOptions) run(cmd *cobra.Command, g *globalOptions, arg string) error {
	ctx := cmd.Context()
	limit, err := parseSize(o.maxManifestSize)
	if err != nil {
		return usageErrorf("--max-manifest-size: %v", err)
	}
	var tmpl *template.Template
	if o.format != "" {
		if tmpl, err = parseTemplate(o.format); err != nil {
			return err
		}
	}
	var opts image.InspectOptions
	if o.platform != "" {
		p, err := transfer.ParsePlatform(o.platform)
		if err != nil {
			return err
		}
		opts.Platform = &p
	}
	opts.Config = !o.raw && !o.digest
	r, ref, closeSrc, err := g.openSource(ctx, arg, limit)
	if err != nil {
		return err
	}
	defer closeSrc()
	rep, err := image.Inspect(ctx, r, ref, opts)
	if err != nil {
		return err
	}
	out := g.streams.Out
	switch {
	case o.raw:
		_, err = out.Write(rep.Raw)
		return err
	case o.digest:
		_, err = fmt.Fprintln(out, rep.Digest)
		return err
	case o.config:
		if rep.RawConfig == nil {
			return fmt.Errorf("%s is an index (%s), which has no config; pick an image with --platform", ref, rep.MediaType)
		}
		_, err = out.Write(rep.RawConfig)
		return err
	case tmpl != nil:
		return executeTemplate(out, tmpl, rep)
	case g.json():
		return writeJSON(out, rep)
	}
	return writeInspectText(g, rep)
}

func writeInspectText(g *globalOptions, rep *image.Report) error {
	w := newTable(g.streams.Out)
	fmt.Fprintf(w, "Reference:\t%s\n", rep.Reference)
	if rep.Index != nil {
		fmt.Fprintf(w, "Index:\t%s\n", rep.Index.Digest)
	}
	fmt.Fprintf(w, "Digest:\t%s\n", rep.Digest)
	fmt.Fprintf(w, "Media type:\t%s\n", rep.MediaType)
	fmt.Fprintf(w, "Size:\t%d\n", rep.Size)
	if rep.ArtifactType != "" {
		fmt.Fprintf(w, "Artifact type:\t%s\n", rep.ArtifactType)
	}
	if rep.Platform != nil {
		fmt.Fprintf(w, "Platform:\t%s\n", transfer.FormatPlatform(rep.Platform))
	}
	if rep.Created != nil {
		fmt.Fprintf(w, "Created:\t%s\n", rep.Created.UTC().Format(time.RFC3339))
	}
	if rep.Subject != nil {
		fmt.Fprintf(w, "Subject:\t%s\n", rep.Subject.Digest)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	out := g.streams.Out
	if rep.Manifests != nil {
		fmt.Fprintf(out, "\nManifests (%d):\n", len(rep.Manifests))
		w = newTable(out)
		fmt.Fprintln(w, "  PLATFORM\tDIGEST\tSIZE\tMEDIA TYPE")
		for _, d := range rep.Manifests {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", platformOrDash(d.Platform), d.Digest, humanSize(d.Size), d.MediaType)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	if rep.Config != nil {
		var total int64
		for _, l := range rep.Layers {
			total += l.Size
		}
		fmt.Fprintf(out, "\nConfig: %s (%s)\n", rep.Config.Digest, humanSize(rep.Config.Size))
		fmt.Fprintf(out, "\nLayers (%d, %s):\n", len(rep.Layers), humanSize(total))
		w = newTable(out)
		for _, l := range rep.Layers {
			fmt.Fprintf(w, "  %s\t%s\t%s\n", l.Digest, humanSize(l.Size), l.MediaType)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	writeMap(g, "Labels", rep.Labels)
	writeMap(g, "Annotations", rep.Annotations)
	return nil
}

func writeMap(g *globalOptions, title string, m map[string]string) {
	if len(m) == 0 {
		return
	}
	fmt.Fprintf(g.streams.Out, "\n%s:\n", title)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(g.streams.Out, "  %s=%s\n", k, m[k])
	}
}

func platformOrDash(p *ocispec.Platform) string {
	if p == nil {
		return "-"
	}
	return transfer.FormatPlatform(p)
}
