package signing

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// DefaultMaxSignatures caps the signatures read for one manifest
// (ROBUSTNESS row 33, CVE-2023-46737).
const DefaultMaxSignatures = 100

// VerifyOptions say what a valid signature is.
type VerifyOptions struct {
	// Key is the public key signatures must verify with; or
	Key crypto.PublicKey
	// KeyName names the key in messages (its file or env:// reference).
	KeyName string
	// Certificate, instead of Key: signatures must carry a certificate
	// this policy accepts, and verify with its key.
	Certificate *CertificatePolicy
	// Annotations must all be in the payload's optional section, exactly.
	Annotations map[string]string
	// Recursive verifies every manifest of an index as well.
	Recursive bool
	// MaxSignatures caps the signatures read per manifest; 0 means
	// DefaultMaxSignatures. More than that fails verification.
	MaxSignatures int
	// Now is the time certificates must be valid at; zero means now.
	Now time.Time
	// TLog, when set, checks signatures' transparency log entries with
	// the log's key; nil leaves them unread, as cosign verify
	// --insecure-ignore-tlog does.
	TLog *TLogPolicy
}

// Verified is a manifest with at least one valid signature.
type Verified struct {
	// Image names it: endpoint[:tag]@digest.
	Image  string        `json:"image"`
	Digest digest.Digest `json:"digest"`
	// Signatures are the ones that verified.
	Signatures []VerifiedSignature `json:"signatures"`
}

// VerifiedSignature is one valid signature.
type VerifiedSignature struct {
	// Payload is the signed simple-signing document.
	Payload json.RawMessage `json:"payload"`
	// Signature is the base64 signature.
	Signature string `json:"signature"`
	// Certificate describes the signer's certificate, in certificate mode.
	Certificate *CertificateInfo `json:"certificate,omitempty"`
	// TLog is the signature's verified transparency log entry, with
	// VerifyOptions.TLog.
	TLog *TLogEntry `json:"tlog,omitempty"`
}

// VerificationError says why no signature of an image verified. It wraps
// transfer.ErrVerification (exit code 4).
type VerificationError struct {
	// Image names the image: endpoint[:tag]@digest.
	Image string
	// Reason is the summary: "no signatures", "no valid signature", ...
	Reason string
	// Problems are the reasons each signature was rejected.
	Problems []string
}

func (e *VerificationError) Error() string {
	msg := e.Image + ": " + e.Reason
	if len(e.Problems) > 0 {
		msg += ": " + strings.Join(e.Problems, "; ")
	}
	return msg
}

// Unwrap makes it a transfer.ErrVerification.
func (e *VerificationError) Unwrap() error { return transfer.ErrVerification }

// Verify checks that the manifest ref names in src (and with Recursive,
// every manifest below it) has at least one signature that is valid
// under opts: made by the key (or a certificate the policy accepts),
// over a well-formed payload that names exactly this digest and carries
// the wanted annotations. It fails closed: every image without one gets a
// *VerificationError naming it and why each signature was rejected. The
// images that verified are returned even when others did not.
func Verify(ctx context.Context, src transfer.Source, ref transfer.Reference, opts VerifyOptions) ([]Verified, error) {
	if (opts.Key == nil) == (opts.Certificate == nil) {
		return nil, errors.New("signing.Verify: exactly one of Key and Certificate must be set")
	}
	if opts.MaxSignatures <= 0 {
		opts.MaxSignatures = DefaultMaxSignatures
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	top, err := src.Manifest(ctx, ref.Identifier())
	if err != nil {
		return nil, err
	}
	named := ref
	named.Digest = top.Descriptor.Digest
	names := map[digest.Digest]string{top.Descriptor.Digest: named.String()}
	targets := []digest.Digest{top.Descriptor.Digest}
	if opts.Recursive {
		children, err := descendants(ctx, src, top)
		if err != nil {
			return nil, err
		}
		for _, c := range children {
			names[c] = src.String() + "@" + string(c)
		}
		targets = append(targets, children...)
	}
	var out []Verified
	var errs []error
	for _, d := range targets {
		v, err := verifyOne(ctx, src, names[d], d, opts)
		if err != nil {
			var verr *VerificationError
			if !errors.As(err, &verr) {
				return out, err // could not read: not a verdict
			}
			errs = append(errs, err)
			continue
		}
		out = append(out, v)
	}
	return out, errors.Join(errs...)
}

func verifyOne(ctx context.Context, src transfer.Source, image string, d digest.Digest, opts VerifyOptions) (Verified, error) {
	res := Verified{Image: image, Digest: d}
	fail := func(reason string, problems ...string) (Verified, error) {
		return res, &VerificationError{Image: image, Reason: reason, Problems: problems}
	}
	tag := SignatureTag(d)
	var problems []string
	m, err := readSigManifest(ctx, src, d)
	switch {
	case errors.Is(err, transfer.ErrInvalidManifest), errors.Is(err, transfer.ErrManifestTooLarge), errors.Is(err, transfer.ErrVerification):
		problems = append(problems, fmt.Sprintf("its signature image %s is unusable: %v", tag, err))
		m = nil
	case err != nil:
		return res, fmt.Errorf("reading the signatures of %s: %w", image, err)
	case m == nil:
	case m.IsIndex():
		problems = append(problems, fmt.Sprintf("%s is an index, not a signature image", tag))
		m = nil
	case len(m.Layers) == 0:
		problems = append(problems, fmt.Sprintf("its signature image %s holds no signatures", tag))
	case len(m.Layers) > opts.MaxSignatures:
		return fail("too many signatures", fmt.Sprintf("%s holds %d, more than the %d ferry reads (--max-signatures)", tag, len(m.Layers), opts.MaxSignatures))
	}
	found := 0
	if m != nil {
		found += len(m.Layers)
		for i, l := range m.Layers {
			n := fmt.Sprintf("signature %d of %d", i+1, len(m.Layers))
			vs, problem, err := checkLayer(ctx, src, d, l.MediaType, l.Digest, l.Size, l.Annotations, opts)
			if err != nil {
				return res, fmt.Errorf("reading %s of %s: %w", n, image, err)
			}
			if problem != "" {
				problems = append(problems, n+": "+problem)
				continue
			}
			res.Signatures = append(res.Signatures, *vs)
		}
	}

	// Sigstore bundles attached as referrers (cosign --new-bundle-format).
	valid, bproblems, n, err := bundleSignatures(ctx, src, d, opts)
	switch {
	case errors.Is(err, transfer.ErrTooMany):
		return fail("too many signatures", fmt.Sprintf("more referrers than ferry reads: %v", err))
	case err != nil && len(res.Signatures) == 0 && found == 0:
		return res, fmt.Errorf("reading the referrers of %s: %w", image, err)
	case err != nil && len(res.Signatures) == 0:
		problems = append(problems, fmt.Sprintf("its referrers could not be read: %v", err))
	case n > opts.MaxSignatures:
		return fail("too many signatures", fmt.Sprintf("more than %d sigstore bundles (--max-signatures)", opts.MaxSignatures))
	}
	found += n
	if opts.TLog != nil && opts.TLog.Require && len(valid) > 0 {
		problems = append(problems, fmt.Sprintf("%d sigstore bundle(s) verified, but ferry does not check the transparency log entries in bundles", len(valid)))
		valid = nil
	}
	res.Signatures = append(res.Signatures, valid...)
	problems = append(problems, bproblems...)

	switch {
	case len(res.Signatures) > 0:
		return res, nil
	case found == 0 && len(problems) == 0:
		return fail("no signatures", fmt.Sprintf("there is no signature image %s:%s and no sigstore bundle referrer; sign it with ferry sign", src.String(), tag))
	}
	return fail("no valid signature", problems...)
}

// checkLayer checks one signature layer. A rejected signature returns a
// problem; err is only for failures to read.
func checkLayer(ctx context.Context, src transfer.Reader, d digest.Digest, mediaType string, blob digest.Digest, size int64, ann map[string]string, opts VerifyOptions) (*VerifiedSignature, string, error) {
	if mediaType != MediaTypeSimpleSigning {
		return nil, fmt.Sprintf("a layer of type %s, not a signature", mediaType), nil
	}
	if size < 0 || size > MaxPayload {
		return nil, fmt.Sprintf("a payload of %d bytes, over the limit of %d", size, MaxPayload), nil
	}
	b64, ok := ann[AnnotationSignature]
	if !ok || b64 == "" {
		return nil, "no " + AnnotationSignature + " annotation", nil
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, "the signature is not valid base64", nil
	}
	raw, err := src.FetchBlob(ctx, blob, size, MaxPayload)
	if err != nil {
		if errors.Is(err, transfer.ErrVerification) || errors.Is(err, transfer.ErrNotFound) {
			return nil, fmt.Sprintf("its payload %s is unusable: %v", blob, err), nil
		}
		return nil, "", err
	}
	vs := &VerifiedSignature{Signature: b64}
	pub := opts.Key
	if opts.Certificate != nil {
		cert, info, err := opts.Certificate.checkPEM(ann[AnnotationCertificate], ann[AnnotationChain], opts.Now)
		if err != nil {
			return nil, err.Error(), nil
		}
		pub, vs.Certificate = cert.PublicKey, info
	}
	if !verifyWith(pub, sig, raw) {
		if opts.Certificate != nil {
			return nil, "the signature does not verify with its certificate's key", nil
		}
		return nil, fmt.Sprintf("the signature does not verify with the key %s (signed with another key?)", opts.KeyName), nil
	}
	// Only signed bytes are parsed.
	p, err := ParsePayload(raw)
	if err != nil {
		return nil, err.Error(), nil
	}
	if p.Digest != d {
		return nil, fmt.Sprintf("it signs %s, not this image's digest %s (a signature of another image, or the tag moved)", p.Digest, d), nil
	}
	if err := annotationsMatch(opts.Annotations, p.Optional); err != nil {
		return nil, err.Error(), nil
	}
	if opts.TLog != nil {
		entry, problem := opts.TLog.check(ann[AnnotationBundle], raw, sig, pub)
		if problem != "" {
			return nil, problem, nil
		}
		vs.TLog = entry
	}
	vs.Payload = json.RawMessage(raw)
	return vs, "", nil
}
