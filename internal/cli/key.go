package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ferry-oci/ferry/internal/signing"
)

// passwordEnv holds the password of an encrypted private key, as cosign reads it.
const passwordEnv = "COSIGN_PASSWORD"

func newKeyCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Make key pairs for ferry sign and verify",
		Example: `  ferry key generate
  ferry key generate --output-prefix release`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usageErrorf("ferry key: give a subcommand: generate")
		},
	}
	cmd.AddCommand(newKeyGenerateCmd(g))
	return cmd
}

type keyGenerateOptions struct {
	prefix string
	force  bool
}

func newKeyGenerateCmd(g *globalOptions) *cobra.Command {
	o := &keyGenerateOptions{}
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Generate a key pair for signing images",
		Long: `Generate an ECDSA P-256 key pair in cosign's format: PREFIX.key, the private
key encrypted with a password (mode 0600), and PREFIX.pub, the public key.
The keys work with cosign, and keys from 'cosign generate-key-pair' work
with ferry.

The password comes from $COSIGN_PASSWORD (which may be set but empty for
no password), or is asked for twice on the terminal.`,
		Example: `  ferry key generate
  COSIGN_PASSWORD=... ferry key generate --output-prefix release`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(g)
		},
	}
	cmd.Flags().StringVar(&o.prefix, "output-prefix", "cosign", "write PREFIX.key and PREFIX.pub")
	cmd.Flags().BoolVarP(&o.force, "force", "f", false, "overwrite existing key files")
	return cmd
}

func (o *keyGenerateOptions) run(g *globalOptions) error {
	if o.prefix == "" {
		return usageErrorf("--output-prefix: must not be empty")
	}
	priv, pub := o.prefix+".key", o.prefix+".pub"
	if !o.force {
		for _, p := range []string{priv, pub} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%s exists; remove it, choose another --output-prefix, or overwrite it with --force", p)
			}
		}
	}
	pass, err := keyPassword(g, "the new private key", true)
	if err != nil {
		return err
	}
	kp, err := signing.GenerateKeyPair(pass)
	if err != nil {
		return err
	}
	if err := writeKeyFile(priv, kp.Private, 0o600); err != nil {
		return err
	}
	if err := writeKeyFile(pub, kp.Public, 0o644); err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.streams.Out, map[string]string{"privateKey": priv, "publicKey": pub})
	}
	fmt.Fprintf(g.streams.Err, "Private key written to %s\nPublic key written to %s\n", priv, pub)
	return nil
}

// writeKeyFile writes data with mode perm, replacing any file there, and
// never through a symlink.
func writeKeyFile(path string, data []byte, perm os.FileMode) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return os.Chmod(path, perm) // the umask may have narrowed it
}

// keyPassword returns the password for a private key: $COSIGN_PASSWORD
// when it is set (even empty), otherwise asked for on the terminal, not
// echoed, twice when confirm is set. It is never logged.
func keyPassword(g *globalOptions, what string, confirm bool) ([]byte, error) {
	if p, ok := os.LookupEnv(passwordEnv); ok {
		return []byte(p), nil
	}
	in, ok := g.streams.In.(*os.File)
	if !ok || !g.streams.InTTY || !g.streams.ErrTTY {
		return nil, usageErrorf("%s needs a password: set %s, or run ferry on a terminal to be asked", what, passwordEnv)
	}
	fd := int(in.Fd())
	fmt.Fprintf(g.streams.Err, "Enter password for %s: ", what)
	p, err := term.ReadPassword(fd)
	fmt.Fprintln(g.streams.Err)
	if err != nil {
		return nil, fmt.Errorf("reading the password: %w", err)
	}
	if confirm {
		fmt.Fprintf(g.streams.Err, "Enter password for %s again: ", what)
		p2, err := term.ReadPassword(fd)
		fmt.Fprintln(g.streams.Err)
		if err != nil {
			return nil, fmt.Errorf("reading the password: %w", err)
		}
		if !bytes.Equal(p, p2) {
			return nil, usageErrorf("the passwords do not match")
		}
	}
	return p, nil
}
