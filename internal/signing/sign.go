package signing

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// Endpoint is where signing reads an image and its signatures and writes
// new signatures: a registry repository or an OCI layout (for an
// oci-archive:, the layout it is staged in; see OpenForSigning).
type Endpoint interface {
	transfer.Source
	transfer.Target
}

// SignOptions tune Sign.
type SignOptions struct {
	// Annotations go into the payload's "optional" section (-a key=value).
	Annotations map[string]string
	// Recursive signs every manifest of an index too, not only the index.
	Recursive bool
	// Identity is the payload's critical.identity.docker-reference; empty
	// means the repository (for a registry) or the layout's tag.
	Identity string
	// TLog, when set, is the transparency log each signature is added to
	// before it is stored, with the entry in its bundle annotation.
	TLog *Rekor
}

// Signed is one manifest Sign signed.
type Signed struct {
	// Image names the manifest signed: endpoint@digest.
	Image  string        `json:"image"`
	Digest digest.Digest `json:"digest"`
	// Signature names the signature image: endpoint:sha256-<hex>.sig.
	Signature string `json:"signature"`
	// SignatureDigest is the signature image's manifest digest after the
	// signature was added.
	SignatureDigest digest.Digest `json:"signatureDigest"`
	// Existing is set when an identical signature (same payload, same
	// key) was there already, and nothing was written.
	Existing bool `json:"existing,omitempty"`
	// Payload is the payload signed.
	Payload json.RawMessage `json:"payload"`
	// TLog is the signature's transparency log entry, with SignOptions.TLog.
	TLog *TLogEntry `json:"tlog,omitempty"`
}

// Sign signs the manifest ref names in ep, by digest: a tag is resolved
// first, and the signature binds the digest. With Recursive every
// manifest of an index is signed too. Each signature is added to the
// manifest's signature image (a new layer, as cosign appends), unless an
// identical one is there.
func Sign(ctx context.Context, ep Endpoint, ref transfer.Reference, s *Signer, opts SignOptions) ([]Signed, error) {
	top, err := ep.Manifest(ctx, ref.Identifier())
	if err != nil {
		return nil, err
	}
	targets := []digest.Digest{top.Descriptor.Digest}
	if opts.Recursive {
		children, err := descendants(ctx, ep, top)
		if err != nil {
			return nil, err
		}
		targets = append(targets, children...)
	}
	identity := opts.Identity
	if identity == "" {
		identity = defaultIdentity(ref)
	}
	var out []Signed
	for _, d := range targets {
		r, err := signOne(ctx, ep, d, identity, s, opts)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// defaultIdentity is what cosign puts in docker-reference: the repository.
// A layout has none; its tag stands in.
func defaultIdentity(ref transfer.Reference) string {
	if ref.Kind == transfer.KindRegistry {
		return ref.Repo.Name()
	}
	return ref.Tag
}

// descendants lists the manifests below an index, depth first, each once.
func descendants(ctx context.Context, r transfer.Reader, top *transfer.Manifest) ([]digest.Digest, error) {
	var out []digest.Digest
	seen := map[digest.Digest]bool{top.Descriptor.Digest: true}
	var walk func(m *transfer.Manifest, depth int) error
	walk = func(m *transfer.Manifest, depth int) error {
		if !m.IsIndex() {
			return nil
		}
		if depth > 4 {
			return fmt.Errorf("%s: indexes nested more than 4 deep", m.Descriptor.Digest)
		}
		for _, c := range m.Manifests {
			if seen[c.Digest] || !transfer.IsManifest(c.MediaType) {
				continue
			}
			seen[c.Digest] = true
			out = append(out, c.Digest)
			child, err := r.Manifest(ctx, string(c.Digest))
			if err != nil {
				return err
			}
			if child.Descriptor.Digest != c.Digest {
				return fmt.Errorf("%w: %s lists %s, which resolved to %s", transfer.ErrDigestMismatch, m.Descriptor.Digest, c.Digest, child.Descriptor.Digest)
			}
			if err := walk(child, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(top, 0)
}

func signOne(ctx context.Context, ep Endpoint, d digest.Digest, identity string, s *Signer, opts SignOptions) (Signed, error) {
	tag := SignatureTag(d)
	res := Signed{Image: ep.String() + "@" + string(d), Digest: d, Signature: ep.String() + ":" + tag}
	payload, err := makePayload(identity, d, opts.Annotations)
	if err != nil {
		return res, err
	}
	res.Payload = payload
	existing, err := readSigManifest(ctx, ep, d)
	if err != nil {
		return res, fmt.Errorf("reading the signatures of %s: %w", res.Image, err)
	}
	img, err := newSigImage()
	if err != nil {
		return res, err
	}
	if existing != nil {
		if ok, entry := s.hasSignature(ctx, ep, existing, payload, opts.TLog != nil); ok {
			res.Existing, res.SignatureDigest, res.TLog = true, existing.Descriptor.Digest, entry
			return res, nil
		}
		if img, err = loadSigImage(ctx, ep, existing); err != nil {
			return res, fmt.Errorf("adding a signature to %s: %w", res.Signature, err)
		}
	}
	sig, err := s.sign(payload)
	if err != nil {
		return res, fmt.Errorf("signing %s: %w", res.Image, err)
	}
	ann := map[string]string{AnnotationSignature: base64.StdEncoding.EncodeToString(sig)}
	if s.cert != nil {
		ann[AnnotationCertificate] = string(s.cert)
		ann[AnnotationChain] = string(s.chain)
	}
	if opts.TLog != nil {
		keyPEM, err := s.logKey()
		if err != nil {
			return res, err
		}
		entry, bundle, err := opts.TLog.upload(ctx, payload, sig, keyPEM, s.pub)
		if err != nil {
			return res, fmt.Errorf("adding the signature of %s to the transparency log: %w", res.Image, err)
		}
		ann[AnnotationBundle], res.TLog = string(bundle), entry
	}
	if err := img.add(payload, ann); err != nil {
		return res, fmt.Errorf("adding a signature to %s: %w", res.Signature, err)
	}
	m, err := img.write(ctx, ep, payload, tag)
	if err != nil {
		return res, fmt.Errorf("writing %s: %w", res.Signature, err)
	}
	res.SignatureDigest = m.Descriptor.Digest
	return res, nil
}

// hasSignature reports whether the signature image already holds a
// signature of exactly payload by this signer (with the same
// certificate and, when tlog is set, a transparency log entry, which it
// returns), so that signing again changes nothing.
func (s *Signer) hasSignature(ctx context.Context, r transfer.Reader, m *transfer.Manifest, payload []byte, tlog bool) (bool, *TLogEntry) {
	want := digest.FromBytes(payload)
	for _, l := range m.Layers {
		if l.Digest != want || l.Annotations[AnnotationCertificate] != string(s.cert) {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(l.Annotations[AnnotationSignature])
		if err != nil {
			continue
		}
		var entry *TLogEntry
		if tlog {
			if entry = bundleEntry(l.Annotations[AnnotationBundle], payload, sig, s.pub); entry == nil {
				continue // not logged: sign again, and log that
			}
		}
		if _, err := r.FetchBlob(ctx, l.Digest, l.Size, MaxPayload); err != nil {
			continue // the layer's blob is missing: write it again
		}
		if verifyWith(s.pub, sig, payload) {
			return true, entry
		}
	}
	return false, nil
}

// logKey is what a transparency log records as the signer: the
// certificate when there is one, as cosign uploads it, else the public key
// (PEM).
func (s *Signer) logKey() ([]byte, error) {
	if s.cert != nil {
		return s.cert, nil
	}
	return cryptoutils.MarshalPublicKeyToPEM(s.pub)
}
