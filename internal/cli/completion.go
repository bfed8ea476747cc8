package cli

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferry-oci/ferry/internal/transfer"
)

func newCompletionCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Print a completion script for your shell. For example, with bash:

  source <(ferry completion bash)

or install it for every session:

  ferry completion bash > /etc/bash_completion.d/ferry`,
		Example:               "  ferry completion bash > ~/.local/share/bash-completion/completions/ferry\n  ferry completion zsh > \"${fpath[1]}/_ferry\"\n  ferry completion fish > ~/.config/fish/completions/ferry.fish",
		ValidArgs:             []string{"bash", "zsh", "fish", "powershell"},
		Args:                  cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			out := g.streams.Out
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			default:
				return root.GenPowerShellCompletionWithDesc(out)
			}
		},
	}
}

// completeReference completes a reference argument: the endpoint prefixes,
// and the tags of a repository once a ':' follows its name.
func completeReference(g *globalOptions) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if strings.HasPrefix(toComplete, "oci:") || strings.HasPrefix(toComplete, "oci-archive:") {
			return nil, cobra.ShellCompDirectiveDefault
		}
		slash := strings.LastIndex(toComplete, "/")
		if slash < 0 {
			return []string{"oci:", "oci-archive:"}, cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
		}
		i := strings.LastIndex(toComplete, ":")
		if i < slash {
			// A repository name: registries cannot be asked cheaply.
			return nil, cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
		}
		if err := g.init(); err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
		defer cancel()
		repoName := toComplete[:i]
		repo, err := transfer.ParseRepository(repoName, g.insecure)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		r, err := g.remote(0).Open(ctx, repo, false)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		tags, err := r.Tags(ctx, transfer.TagOptions{MaxPages: 10})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		out := make([]string, 0, len(tags))
		for _, t := range tags {
			if strings.HasPrefix(t, toComplete[i+1:]) {
				out = append(out, repoName+":"+t)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
