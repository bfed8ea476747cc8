package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferry-oci/ferry/internal/signing"
)

type verifyOptions struct {
	key            string
	annotations    []string
	recursive      bool
	maxSignatures  int
	caRoots        string
	caIntermediate string
	identity       string
	identityRegexp string
	issuer         string
	issuerRegexp   string
	rekorKey       string
	requireTLog    bool
}

// rekorKeyEnv names the file of the Rekor log's public key, as cosign
// reads it.
const rekorKeyEnv = "SIGSTORE_REKOR_PUBLIC_KEY"

func newVerifyCmd(g *globalOptions) *cobra.Command {
	o := &verifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify (--key PUB | --ca-roots PEM --certificate-identity ID --certificate-oidc-issuer ISSUER) REF...",
		Short: "Verify images' signatures offline",
		Long: `Check that each image has a valid signature, the way cosign verify does with
--insecure-ignore-tlog: nothing but the registry (or the layout) is read.

A signature is valid when it verifies with the public key (or with a
certificate that chains to --ca-roots, for code signing, with a matching
identity and OIDC issuer), its payload is well formed and names exactly the
digest REF resolves to, and it carries every -a key=value annotation. A
signature made for another digest, such as the image a tag pointed at
before it moved, does not count. At most --max-signatures are read.

Verification fails closed: an image without a valid signature is named on
stderr with the reason for each signature, and ferry exits with status 4.
On success each verified image is printed as REF@DIGEST; -o json prints the
verified payloads.

--certificate-identity matches a subject alternative name (email, URI, DNS
name or IP); the -regexp forms must match the whole value.

Transparency log entries (ferry sign --tlog-upload, cosign sign) are
checked offline with the log's public key, --rekor-key or the file
$SIGSTORE_REKOR_PUBLIC_KEY names (as cosign reads it): an entry must come
from that log, carry a signed entry timestamp that verifies with its key,
and record this signature, payload hash and key; a signature whose entry
does not is rejected. --require-tlog also rejects signatures without an entry, as
cosign verify does by default. -o json shows each entry's log index and
integrated time. Without a Rekor key, entries are not read.`,
		Example: `  ferry verify --key cosign.pub registry.example.com/app:1.4
  ferry verify --key cosign.pub -a build=1234 -o json registry.example.com/app@sha256:4f1c...
  ferry verify --key env://COSIGN_PUBLIC_KEY --recursive oci:/mnt/usb/images:app-1.4
  ferry verify --ca-roots site-ca.pem --certificate-identity release@example.com \
      --certificate-oidc-issuer https://sso.example.com registry.example.com/app:1.4
  ferry verify --key cosign.pub --rekor-key rekor.pub --require-tlog registry.example.com/app:1.4`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeReference(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), g, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.key, "key", "", "public key: a file, or env://VAR")
	f.StringArrayVarP(&o.annotations, "annotations", "a", nil, "require key=value in the signed payload (repeatable)")
	f.BoolVar(&o.recursive, "recursive", false, "verify every manifest of an index too")
	f.IntVar(&o.maxSignatures, "max-signatures", signing.DefaultMaxSignatures, "fail rather than read more signatures than this for one image")
	f.StringVar(&o.caRoots, "ca-roots", "", "PEM root certificates that signing certificates must chain to")
	f.StringVar(&o.caIntermediate, "ca-intermediates", "", "PEM intermediate certificates, besides those stored with the signature")
	f.StringVar(&o.identity, "certificate-identity", "", "the signer's identity in the certificate (SAN email, URI, ...)")
	f.StringVar(&o.identityRegexp, "certificate-identity-regexp", "", "a regular expression the whole identity must match")
	f.StringVar(&o.issuer, "certificate-oidc-issuer", "", "the OIDC issuer in the certificate")
	f.StringVar(&o.issuerRegexp, "certificate-oidc-issuer-regexp", "", "a regular expression the whole OIDC issuer must match")
	f.StringVar(&o.rekorKey, "rekor-key", "", "the Rekor log's public key, to check transparency log entries offline: a file, or env://VAR (default $"+rekorKeyEnv+")")
	f.BoolVar(&o.requireTLog, "require-tlog", false, "reject signatures without a transparency log entry that verifies with the Rekor key")
	_ = cmd.MarkFlagFilename("key", "pub", "pem")
	_ = cmd.MarkFlagFilename("ca-roots", "pem", "crt", "cer")
	_ = cmd.MarkFlagFilename("ca-intermediates", "pem", "crt", "cer")
	_ = cmd.MarkFlagFilename("rekor-key", "pub", "pem")
	return cmd
}

func (o *verifyOptions) options() (signing.VerifyOptions, error) {
	opts := signing.VerifyOptions{Recursive: o.recursive, MaxSignatures: o.maxSignatures}
	if o.maxSignatures < 1 {
		return opts, usageErrorf("--max-signatures %d: expected at least 1", o.maxSignatures)
	}
	var err error
	if opts.Annotations, err = parseAnnotations(o.annotations); err != nil {
		return opts, err
	}
	certFlags := o.identity != "" || o.identityRegexp != "" || o.issuer != "" || o.issuerRegexp != "" || o.caIntermediate != ""
	switch {
	case o.key != "" && o.caRoots != "":
		return opts, usageErrorf("--key and --ca-roots: give one, a public key or the roots of a PKI")
	case o.key != "" && certFlags:
		return opts, usageErrorf("--key verifies with a public key; the --certificate-* and --ca-* flags go with --ca-roots instead")
	case o.key != "":
		pem, err := signing.ReadKeyRef(o.key, nil)
		if err != nil {
			return opts, &UsageError{Err: fmt.Errorf("--key: %w", err)}
		}
		if opts.Key, err = signing.LoadPublicKey(o.key, pem); err != nil {
			return opts, keyError(err)
		}
		opts.KeyName = o.key
	case o.caRoots == "" && certFlags:
		return opts, usageErrorf("--certificate-* and --ca-intermediates need --ca-roots, the roots the certificate must chain to")
	case o.caRoots != "":
		roots, err := os.ReadFile(o.caRoots)
		if err != nil {
			return opts, usageErrorf("--ca-roots: %v", err)
		}
		var inter []byte
		if o.caIntermediate != "" {
			if inter, err = os.ReadFile(o.caIntermediate); err != nil {
				return opts, usageErrorf("--ca-intermediates: %v", err)
			}
		}
		if opts.Certificate, err = signing.NewCertificatePolicy(roots, inter, o.identity, o.identityRegexp, o.issuer, o.issuerRegexp); err != nil {
			return opts, keyError(err)
		}
	default:
		return opts, usageErrorf("say what to trust: --key PUB, or --ca-roots PEM with --certificate-identity and --certificate-oidc-issuer")
	}
	opts.TLog, err = o.tlogPolicy()
	return opts, err
}

// tlogPolicy reads the Rekor key, from --rekor-key or the file
// $SIGSTORE_REKOR_PUBLIC_KEY names; nil when there is none.
func (o *verifyOptions) tlogPolicy() (*signing.TLogPolicy, error) {
	ref, what := o.rekorKey, "--rekor-key"
	if ref == "" {
		ref, what = os.Getenv(rekorKeyEnv), "$"+rekorKeyEnv
	}
	if ref == "" {
		if o.requireTLog {
			return nil, usageErrorf("--require-tlog needs the Rekor log's public key: give --rekor-key PUB, or set %s to its file", rekorKeyEnv)
		}
		return nil, nil
	}
	pem, err := signing.ReadKeyRef(ref, nil)
	if err != nil {
		return nil, &UsageError{Err: fmt.Errorf("%s: %w", what, err)}
	}
	p, err := signing.NewTLogPolicy(ref, pem, o.requireTLog)
	if err != nil {
		return nil, keyError(fmt.Errorf("%s: %w", what, err))
	}
	return p, nil
}

func (o *verifyOptions) run(ctx context.Context, g *globalOptions, args []string) error {
	opts, err := o.options()
	if err != nil {
		return err
	}
	for _, a := range args {
		if _, err := g.parseReference(a); err != nil {
			return err
		}
	}
	all := []signing.Verified{}
	var errs []error
	for _, a := range args {
		res, err := o.verifyRef(ctx, g, a, opts)
		all = append(all, res...)
		if err != nil {
			var verr *signing.VerificationError
			if !errors.As(err, &verr) {
				return err
			}
			errs = append(errs, err)
		}
	}
	if g.json() {
		if err := writeJSON(g.streams.Out, all); err != nil {
			return err
		}
	} else {
		for _, v := range all {
			fmt.Fprintln(g.streams.Out, v.Image)
			fmt.Fprintf(g.streams.Err, "verified %s: %d valid signature(s)%s\n", v.Image, len(v.Signatures), loggedAt(v.Signatures))
		}
	}
	return errors.Join(errs...)
}

func (o *verifyOptions) verifyRef(ctx context.Context, g *globalOptions, arg string, opts signing.VerifyOptions) ([]signing.Verified, error) {
	src, ref, closeSrc, err := g.openSource(ctx, arg, 0)
	if err != nil {
		return nil, err
	}
	defer closeSrc()
	return signing.Verify(ctx, src, ref, opts)
}

// loggedAt says where verified signatures are in the transparency log:
// "; logged at index 12 (2025-06-01T10:00:00Z)", or "" for none.
func loggedAt(sigs []signing.VerifiedSignature) string {
	var at []string
	for _, s := range sigs {
		if s.TLog != nil {
			at = append(at, fmt.Sprintf("index %d (%s)", s.TLog.LogIndex, time.Unix(s.TLog.IntegratedTime, 0).UTC().Format(time.RFC3339)))
		}
	}
	if len(at) == 0 {
		return ""
	}
	return "; logged at " + strings.Join(at, ", ")
}
