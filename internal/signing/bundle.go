package signing

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// Sigstore bundles attached as OCI 1.1 referrers: what `cosign sign
// --new-bundle-format` writes (and cosign v3 by default). ferry verifies
// their DSSE envelope offline; it never writes them.
// https://github.com/sigstore/protobuf-specs/blob/main/protos/sigstore_bundle.proto
const (
	// ArtifactTypeBundle is the artifact type of a bundle referrer.
	ArtifactTypeBundle = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// predicateCosignSign is the in-toto predicate type of an image
	// signature in a bundle.
	predicateCosignSign = "https://sigstore.dev/cosign/sign/v1"
	payloadTypeInToto   = "application/vnd.in-toto+json"
)

// isBundleType reports whether an artifact or media type is a sigstore
// bundle, in any of its spellings.
func isBundleType(t string) bool {
	return t == ArtifactTypeBundle || strings.HasPrefix(t, "application/vnd.dev.sigstore.bundle")
}

// bundleCandidates picks the referrers that may be bundles: those typed as
// one, and those whose type the registry's tag-schema index lost
// (go-containerregistry records the empty config's type there).
func bundleCandidates(ds []ocispec.Descriptor) []ocispec.Descriptor {
	var out []ocispec.Descriptor
	for _, d := range ds {
		if isBundleType(d.ArtifactType) || d.ArtifactType == ocispec.MediaTypeEmptyJSON || d.ArtifactType == "" {
			out = append(out, d)
		}
	}
	return out
}

// bundleDoc is the part of a sigstore bundle ferry reads.
type bundleDoc struct {
	MediaType            string `json:"mediaType"`
	VerificationMaterial struct {
		Certificate *struct {
			RawBytes []byte `json:"rawBytes"`
		} `json:"certificate"`
		X509CertificateChain *struct {
			Certificates []struct {
				RawBytes []byte `json:"rawBytes"`
			} `json:"certificates"`
		} `json:"x509CertificateChain"`
	} `json:"verificationMaterial"`
	DSSEEnvelope *struct {
		Payload     []byte `json:"payload"`
		PayloadType string `json:"payloadType"`
		Signatures  []struct {
			Sig []byte `json:"sig"`
		} `json:"signatures"`
	} `json:"dsseEnvelope"`
	MessageSignature json.RawMessage `json:"messageSignature"`
}

// statement is an in-toto statement, as much as ferry checks.
type statement struct {
	Type    string `json:"_type"`
	Subject []struct {
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	PredicateType string `json:"predicateType"`
}

// pae is DSSE's pre-authentication encoding, what the signature covers.
// https://github.com/secure-systems-lab/dsse/blob/master/protocol.md
func pae(payloadType string, payload []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload)
}

// bundleSignatures reads the bundle referrers of d and checks each. It
// returns the valid ones and a problem for each rejected one; how many it
// found at all is n.
func bundleSignatures(ctx context.Context, src transfer.Source, d digest.Digest, opts VerifyOptions) (valid []VerifiedSignature, problems []string, n int, err error) {
	refs, err := src.Referrers(ctx, ocispec.Descriptor{Digest: d}, transfer.DefaultMaxReferrers)
	if err != nil {
		return nil, nil, 0, err
	}
	cands := bundleCandidates(refs)
	for _, desc := range cands {
		m, err := src.Manifest(ctx, string(desc.Digest))
		if err != nil {
			if errors.Is(err, transfer.ErrNotFound) || errors.Is(err, transfer.ErrInvalidManifest) || errors.Is(err, transfer.ErrVerification) {
				continue
			}
			return nil, nil, n, err
		}
		if m.IsIndex() || !isBundleType(m.Descriptor.ArtifactType) || len(m.Layers) != 1 || m.Subject == nil || m.Subject.Digest != d {
			continue // another kind of referrer
		}
		n++
		if n > opts.MaxSignatures {
			return nil, nil, n, nil
		}
		what := "bundle " + string(desc.Digest)
		l := m.Layers[0]
		if l.Size < 0 || l.Size > MaxPayload {
			problems = append(problems, fmt.Sprintf("%s: %d bytes, over the limit of %d", what, l.Size, MaxPayload))
			continue
		}
		raw, err := src.FetchBlob(ctx, l.Digest, l.Size, MaxPayload)
		if err != nil {
			if errors.Is(err, transfer.ErrVerification) || errors.Is(err, transfer.ErrNotFound) {
				problems = append(problems, fmt.Sprintf("%s: unusable: %v", what, err))
				continue
			}
			return nil, nil, n, err
		}
		vs, problem := checkBundle(raw, d, opts)
		if problem != "" {
			problems = append(problems, what+": "+problem)
			continue
		}
		valid = append(valid, *vs)
	}
	return valid, problems, n, nil
}

// checkBundle checks one sigstore bundle: its DSSE signature (by the key,
// or a certificate the policy accepts), then the in-toto statement it
// signs, which must name d with cosign's signing predicate.
func checkBundle(raw []byte, d digest.Digest, opts VerifyOptions) (*VerifiedSignature, string) {
	if err := checkDuplicateKeys(raw); err != nil {
		return nil, "malformed bundle: " + err.Error()
	}
	var b bundleDoc
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, "malformed bundle: " + err.Error()
	}
	if b.DSSEEnvelope == nil {
		if b.MessageSignature != nil {
			return nil, "a message-signature bundle, which signs a blob, not an image"
		}
		return nil, "malformed bundle: no DSSE envelope"
	}
	env := b.DSSEEnvelope
	if env.PayloadType != payloadTypeInToto {
		return nil, fmt.Sprintf("a DSSE payload of type %q, not an in-toto statement", env.PayloadType)
	}
	if len(env.Signatures) == 0 {
		return nil, "a DSSE envelope without signatures"
	}
	if len(env.Signatures) > 16 {
		return nil, fmt.Sprintf("a DSSE envelope with %d signatures", len(env.Signatures))
	}
	vs := &VerifiedSignature{}
	pub := opts.Key
	if opts.Certificate != nil {
		var certs []*x509.Certificate
		if c := b.VerificationMaterial.Certificate; c != nil {
			cert, err := x509.ParseCertificate(c.RawBytes)
			if err != nil {
				return nil, "its certificate does not parse: " + err.Error()
			}
			certs = append(certs, cert)
		}
		if ch := b.VerificationMaterial.X509CertificateChain; ch != nil {
			for i, c := range ch.Certificates {
				if i >= maxChain {
					break
				}
				cert, err := x509.ParseCertificate(c.RawBytes)
				if err != nil {
					return nil, "its certificate chain does not parse: " + err.Error()
				}
				certs = append(certs, cert)
			}
		}
		if len(certs) == 0 {
			return nil, "it has no certificate (it was signed with a bare key; verify it with --key)"
		}
		cert, info, err := opts.Certificate.check(certs[0], certs[1:], opts.Now)
		if err != nil {
			return nil, err.Error()
		}
		pub, vs.Certificate = cert.PublicKey, info
	}
	msg := pae(env.PayloadType, env.Payload)
	ok := false
	for _, s := range env.Signatures {
		if verifyWith(pub, s.Sig, msg) {
			ok, vs.Signature = true, base64.StdEncoding.EncodeToString(s.Sig)
			break
		}
	}
	if !ok {
		if opts.Certificate != nil {
			return nil, "the signature does not verify with its certificate's key"
		}
		return nil, fmt.Sprintf("the signature does not verify with the key %s (signed with another key?)", opts.KeyName)
	}
	// Only signed bytes are parsed.
	if err := checkDuplicateKeys(env.Payload); err != nil {
		return nil, "malformed statement: " + err.Error()
	}
	var st statement
	dec := json.NewDecoder(bytes.NewReader(env.Payload))
	if err := dec.Decode(&st); err != nil {
		return nil, "malformed statement: " + err.Error()
	}
	if st.Type != "https://in-toto.io/Statement/v1" && st.Type != "https://in-toto.io/Statement/v0.1" {
		return nil, fmt.Sprintf("malformed statement: _type %q", st.Type)
	}
	if st.PredicateType != predicateCosignSign {
		return nil, fmt.Sprintf("a statement with predicate %q, not an image signature (%s)", st.PredicateType, predicateCosignSign)
	}
	found := false
	var signs []string
	for _, s := range st.Subject {
		for alg, h := range s.Digest {
			if alg == d.Algorithm().String() && h == d.Encoded() {
				found = true
			}
			signs = append(signs, alg+":"+h)
		}
	}
	if !found {
		what := "no digest"
		if len(signs) > 0 {
			slices.Sort(signs)
			what = strings.Join(signs, ", ")
		}
		return nil, fmt.Sprintf("it signs %s, not this image's digest %s (a signature of another image, or the tag moved)", what, d)
	}
	if len(opts.Annotations) > 0 {
		return nil, "a sigstore bundle signature carries no annotations, and -a was given"
	}
	vs.Payload = json.RawMessage(env.Payload)
	return vs, ""
}
