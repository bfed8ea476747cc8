// Package cli is ferry's command tree. It turns flags into options, makes
// one call into the engine packages, and prints the result; every error
// becomes an exit code in exit.go.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Set at build time with -ldflags -X.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// IOStreams are the streams a command reads and writes. Data goes to Out;
// messages for people, progress and errors go to Err.
type IOStreams struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
	// InTTY and ErrTTY say whether In and Err are terminals.
	InTTY, ErrTTY bool
}

// StdStreams returns the process's standard streams.
func StdStreams() IOStreams {
	return IOStreams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, InTTY: isTerminal(os.Stdin), ErrTTY: isTerminal(os.Stderr)}
}

// Main runs ferry with args (without the program name) and returns the
// exit code.
func Main(ctx context.Context, args []string, streams IOStreams) int {
	g := &globalOptions{streams: streams, cmd: "ferry"}
	root := NewRootCmd(g)
	root.SetArgs(args)
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.Err)
	err := root.ExecuteContext(ctx)
	if err != nil && !g.started {
		// Flag parsing, argument counts and unknown commands fail before
		// any command runs: all of them are usage errors.
		var usage *UsageError
		if !errors.As(err, &usage) {
			err = &UsageError{Err: err}
		}
	}
	code := ExitCode(ctx, err)
	if err != nil {
		if code == ExitInterrupted {
			fmt.Fprintln(streams.Err, "ferry: interrupted")
		} else {
			fmt.Fprintf(streams.Err, "ferry: %v\n", err)
		}
		if code == ExitUsage && g.cmd != "" {
			fmt.Fprintf(streams.Err, "Run '%s --help' for usage.\n", g.cmd)
		}
	}
	return code
}

// NewRootCmd builds the whole command tree. It is built fresh for every
// call so that state never leaks between runs.
func NewRootCmd(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:   "ferry",
		Short: "Copy, mirror, sign and serve container images",
		Long: `ferry moves container images between registries, OCI layouts and air-gap
bundles, inspects them, signs and verifies them, and serves them.

References name an endpoint:
  host/repo:tag, host/repo@sha256:...   a registry (the default)
  oci:DIR[:TAG]                         an OCI image layout directory
  oci-archive:FILE[:TAG]                an OCI image layout in a tar file`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			g.started = true
			return g.init()
		},
	}
	root.SetUsageTemplate(root.UsageTemplate() + "\n" + exitStatusHelp + "\n")
	root.SetVersionTemplate("ferry {{.Version}}\n")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		g.cmd = cmd.CommandPath()
		return &UsageError{Err: err}
	})
	g.addFlags(root)
	root.AddCommand(
		newVersionCmd(g),
		newCompletionCmd(g),
		newLoginCmd(g),
		newLogoutCmd(g),
		newInspectCmd(g),
		newTagsCmd(g),
		newCopyCmd(g),
		newGCCmd(g),
		newServeCmd(g),
		newMirrorCmd(g),
		newSignCmd(g),
		newVerifyCmd(g),
		newKeyCmd(g),
		newBundleCmd(g),
	)
	wrapArgs(g, root)
	return root
}

// wrapArgs makes every command below c remember, as it starts, that it is
// the one running (for the usage hint on errors) and turn its argument
// errors into usage errors.
func wrapArgs(g *globalOptions, c *cobra.Command) {
	for _, sub := range c.Commands() {
		prev := sub.Args
		sub.Args = func(cmd *cobra.Command, args []string) error {
			g.cmd = cmd.CommandPath()
			if prev == nil {
				return nil
			}
			if err := prev(cmd, args); err != nil {
				return &UsageError{Err: err}
			}
			return nil
		}
		wrapArgs(g, sub)
	}
}
