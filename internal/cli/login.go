package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ferry-oci/ferry/internal/auth"
)

type loginOptions struct {
	username      string
	password      string
	passwordStdin bool
}

func newLoginCmd(g *globalOptions) *cobra.Command {
	o := &loginOptions{}
	cmd := &cobra.Command{
		Use:   "login HOST",
		Short: "Check credentials against a registry and store them",
		Long: `Check a user name and password against a registry and store them in the
docker config file ($DOCKER_CONFIG/config.json or ~/.docker/config.json), in
its credential store or helper if one is configured, as docker login does.

The password is read from standard input with --password-stdin, or
prompted for on a terminal; it is never echoed or logged.`,
		Example: `  echo "$TOKEN" | ferry login registry.example.com -u ci-bot --password-stdin
  ferry login docker.io -u alice`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, g, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.username, "username", "u", "", "user name")
	f.StringVarP(&o.password, "password", "p", "", "password (visible to other users of this machine: prefer --password-stdin)")
	f.BoolVar(&o.passwordStdin, "password-stdin", false, "read the password from standard input")
	cmd.MarkFlagsMutuallyExclusive("password", "password-stdin")
	return cmd
}

func (o *loginOptions) run(cmd *cobra.Command, g *globalOptions, host string) error {
	reg, err := parseHost(host, g.insecure)
	if err != nil {
		return err
	}
	if o.username == "" {
		return usageErrorf("login %s: a user name is required: pass -u USER", host)
	}
	password := o.password
	switch {
	case o.passwordStdin:
		b, err := io.ReadAll(io.LimitReader(g.streams.In, 64<<10))
		if err != nil {
			return fmt.Errorf("reading the password from standard input: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	case password != "":
		fmt.Fprintln(g.streams.Err, "warning: a password on the command line is visible to other users; use --password-stdin")
	case g.streams.InTTY:
		fmt.Fprintf(g.streams.Err, "Password for %s at %s: ", o.username, reg.RegistryStr())
		password, err = readPassword(g.streams.In)
		fmt.Fprintln(g.streams.Err)
		if err != nil {
			return fmt.Errorf("reading the password: %w", err)
		}
	default:
		return usageErrorf("login %s: no password: pass --password-stdin and pipe it in", host)
	}
	if password == "" {
		return usageErrorf("login %s: the password is empty", host)
	}
	rt, err := g.transport(reg.RegistryStr())
	if err != nil {
		return err
	}
	cred := authn.AuthConfig{Username: o.username, Password: password}
	if err := auth.Verify(cmd.Context(), reg, cred, rt); err != nil {
		return err
	}
	if err := g.authStore().Save(reg.RegistryStr(), cred); err != nil {
		return err
	}
	fmt.Fprintf(g.streams.Err, "Login succeeded for %s\n", reg.RegistryStr())
	return nil
}

func newLogoutCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "logout HOST",
		Short:   "Remove stored credentials for a registry",
		Example: "  ferry logout registry.example.com",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := parseHost(args[0], g.insecure)
			if err != nil {
				return err
			}
			err = g.authStore().Remove(reg.RegistryStr())
			if errors.Is(err, auth.ErrNotLoggedIn) {
				fmt.Fprintf(g.streams.Err, "Not logged in to %s\n", reg.RegistryStr())
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(g.streams.Err, "Removed credentials for %s\n", reg.RegistryStr())
			return nil
		},
	}
}

// parseHost accepts a registry host[:port], also written as a URL.
func parseHost(s string, insecure bool) (name.Registry, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	h = strings.TrimSuffix(h, "/")
	if strings.HasSuffix(h, "/v1") || strings.HasSuffix(h, "/v2") {
		h = h[:len(h)-3]
	}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(h, append(opts, name.StrictValidation)...)
	if err != nil || strings.Contains(h, "/") {
		return name.Registry{}, usageErrorf("%q is not a registry host: expected host[:port], e.g. registry.example.com:5000", s)
	}
	return reg, nil
}

// readPassword reads a line without echo when in is a terminal.
func readPassword(in io.Reader) (string, error) {
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		b, err := term.ReadPassword(int(f.Fd()))
		return string(b), err
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
