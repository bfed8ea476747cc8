package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferry-oci/ferry/internal/signing"
	"github.com/ferry-oci/ferry/internal/transfer"
)

type signOptions struct {
	key         string
	annotations []string
	recursive   bool
	cert        string
	certChain   string
	identity    string
	tlogUpload  bool
	rekorURL    string
	rekorURLSet bool // --rekor-url was given
}

func newSignCmd(g *globalOptions) *cobra.Command {
	o := &signOptions{}
	cmd := &cobra.Command{
		Use:   "sign --key KEY REF...",
		Short: "Sign images with a key, the way cosign does, offline",
		Long: `Sign each image with a private key in cosign's format. A tag is resolved
to its digest first and the digest is signed: the signature stays valid for
that content only, wherever the tag moves later.

Signatures are stored as cosign stores them by default, as the image
REPO:sha256-<hex>.sig beside the image, one layer per signature, so
cosign, policy controllers and registries see them, and ferry copy carries
them along. REF may be a registry image, an OCI layout (oci:DIR[:TAG]) or
an OCI archive (oci-archive:FILE[:TAG], which is rewritten with the
signature added), so content can be signed before it crosses an air gap.

Nothing is sent to a transparency log unless --tlog-upload asks for it:
then each signature is added to the Rekor log at --rekor-url, as cosign
sign does, and the log's entry is stored with the signature (its
dev.sigstore.cosign/bundle annotation), for cosign verify and ferry verify
--rekor-key to check offline. The log is public: it records the
signature, the SHA-256 of the signed payload, and the public key (or
--cert). Nothing is ever sent to a certificate authority.

KEY is a file or env://VAR (the PEM in an environment variable). Its
password comes from $COSIGN_PASSWORD, or is asked for on a terminal.
--cert and --cert-chain attach a certificate for the key (a site's own
PKI), which ferry verify --ca-roots and cosign verify check.`,
		Example: `  ferry sign --key cosign.key registry.example.com/app@sha256:4f1c...
  ferry sign --key cosign.key -a build=1234 -a git=9f2e1c registry.example.com/app:1.4
  ferry sign --key env://SIGNING_KEY --recursive registry.example.com/app:1.4
  ferry sign --key cosign.key oci:./images:app-1.4
  ferry sign --key site.key --cert site.crt --cert-chain site-chain.pem registry.example.com/app:1.4
  ferry sign --key cosign.key --tlog-upload registry.example.com/app@sha256:4f1c...
  ferry sign --key cosign.key --tlog-upload --rekor-url https://rekor.example.com oci:./images:app-1.4`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeReference(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.rekorURLSet = cmd.Flags().Changed("rekor-url")
			return o.run(cmd.Context(), g, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.key, "key", "", "private key: a file, or env://VAR (required)")
	f.StringArrayVarP(&o.annotations, "annotations", "a", nil, "add key=value to the signed payload's optional section (repeatable)")
	f.BoolVar(&o.recursive, "recursive", false, "sign every manifest of an index too")
	f.StringVar(&o.cert, "cert", "", "PEM certificate for the key, stored with the signature")
	f.StringVar(&o.certChain, "cert-chain", "", "PEM chain that issued --cert (intermediates, then root)")
	f.StringVar(&o.identity, "sign-container-identity", "", "the identity (docker-reference) to claim in the payload; default: the repository (for a layout, its tag)")
	f.BoolVar(&o.tlogUpload, "tlog-upload", false, "add each signature to the Rekor transparency log (public), and store its entry with the signature")
	f.StringVar(&o.rekorURL, "rekor-url", signing.DefaultRekorURL, "the Rekor log --tlog-upload adds signatures to")
	_ = cmd.MarkFlagFilename("key", "key")
	_ = cmd.MarkFlagFilename("cert", "pem", "crt", "cer")
	_ = cmd.MarkFlagFilename("cert-chain", "pem", "crt", "cer")
	return cmd
}

func (o *signOptions) run(ctx context.Context, g *globalOptions, args []string) error {
	if o.key == "" {
		return usageErrorf("--key is required: the private key to sign with (a file, or env://VAR); make one with ferry key generate")
	}
	if o.rekorURLSet && !o.tlogUpload {
		return usageErrorf("--rekor-url is where --tlog-upload sends signatures; add --tlog-upload, or leave --rekor-url out to sign offline")
	}
	if o.certChain != "" && o.cert == "" {
		return usageErrorf("--cert-chain needs --cert")
	}
	annotations, err := parseAnnotations(o.annotations)
	if err != nil {
		return err
	}
	refs := make([]transfer.Reference, len(args))
	for i, a := range args {
		if refs[i], err = g.parseReference(a); err != nil {
			return err
		}
	}
	opts := signing.SignOptions{Annotations: annotations, Recursive: o.recursive, Identity: o.identity}
	if o.tlogUpload {
		if opts.TLog, err = signing.NewRekor(o.rekorURL, g.transport); err != nil {
			if errors.Is(err, signing.ErrRekorURL) {
				return &UsageError{Err: fmt.Errorf("--rekor-url: %w", err)}
			}
			return err
		}
	}
	signer, err := o.loadSigner(g)
	if err != nil {
		return err
	}

	var all []signing.Signed
	remote := g.remote(0)
	for _, ref := range refs {
		if ref.Digest == "" && ref.Tag != "" {
			fmt.Fprintf(g.streams.Err, "ferry: warning: %s names the tag %q; signing the digest it points at now, which the tag may not keep\n", ref.Original, ref.Tag)
		}
		res, err := signRef(ctx, remote, ref, signer, opts)
		all = append(all, res...)
		if err != nil {
			return err
		}
	}
	if g.json() {
		return writeJSON(g.streams.Out, all)
	}
	for _, s := range all {
		fmt.Fprintln(g.streams.Out, s.Image)
		switch {
		case s.Existing && s.TLog != nil:
			fmt.Fprintf(g.streams.Err, "%s already holds this signature, logged at index %d\n", s.Signature, s.TLog.LogIndex)
		case s.Existing:
			fmt.Fprintf(g.streams.Err, "%s already holds this signature\n", s.Signature)
		case s.TLog != nil:
			fmt.Fprintf(g.streams.Err, "signature written to %s, logged in %s at index %d\n", s.Signature, opts.TLog, s.TLog.LogIndex)
		default:
			fmt.Fprintf(g.streams.Err, "signature written to %s\n", s.Signature)
		}
	}
	return nil
}

// signRef signs one reference's image; an oci-archive: is rewritten only
// when every signature was made.
func signRef(ctx context.Context, remote *transfer.Remote, ref transfer.Reference, s *signing.Signer, opts signing.SignOptions) (res []signing.Signed, err error) {
	ep, finish, err := signing.OpenForSigning(ctx, remote, ref)
	if err != nil {
		return nil, err
	}
	defer func() {
		if ferr := finish(err == nil); ferr != nil && err == nil {
			err = ferr
		}
	}()
	return signing.Sign(ctx, ep, ref, s, opts)
}

func (o *signOptions) loadSigner(g *globalOptions) (*signing.Signer, error) {
	pem, err := signing.ReadKeyRef(o.key, nil)
	if err != nil {
		return nil, &UsageError{Err: fmt.Errorf("--key: %w", err)}
	}
	s, err := signing.LoadSigner(o.key, pem, func() ([]byte, error) { return keyPassword(g, "the private key "+o.key, false) })
	if err != nil {
		return nil, keyError(err)
	}
	if o.cert != "" {
		cert, err := os.ReadFile(o.cert)
		if err != nil {
			return nil, &UsageError{Err: fmt.Errorf("--cert: %w", err)}
		}
		var chain []byte
		if o.certChain != "" {
			if chain, err = os.ReadFile(o.certChain); err != nil {
				return nil, &UsageError{Err: fmt.Errorf("--cert-chain: %w", err)}
			}
		}
		if err := s.SetCertificate(cert, chain); err != nil {
			return nil, keyError(err)
		}
	}
	return s, nil
}

// parseAnnotations parses -a key=value flags.
func parseAnnotations(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(flags))
	for _, a := range flags {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usageErrorf("-a %q: expected key=value", a)
		}
		if prev, dup := out[k]; dup && prev != v {
			return nil, usageErrorf("-a %s: given twice, as %q and %q", k, prev, v)
		}
		out[k] = v
	}
	return out, nil
}

// keyError makes a key, password or certificate problem a usage error.
func keyError(err error) error {
	if errors.Is(err, signing.ErrKey) {
		return &UsageError{Err: err}
	}
	return err
}
