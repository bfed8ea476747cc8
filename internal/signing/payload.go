package signing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// Media types and annotations of cosign's signature images, as cosign
// writes them by default.
const (
	// MediaTypeSimpleSigning is the media type of a signature layer: its
	// content is the signed payload.
	MediaTypeSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	// AnnotationSignature holds the base64 signature of the layer's payload.
	AnnotationSignature = "dev.cosignproject.cosign/signature"
	// AnnotationCertificate holds the PEM certificate of the signing key.
	AnnotationCertificate = "dev.sigstore.cosign/certificate"
	// AnnotationChain holds the PEM chain that issued the certificate.
	AnnotationChain = "dev.sigstore.cosign/chain"
)

// MaxPayload caps the size of a payload read (a real one is a few hundred
// bytes).
const MaxPayload = 256 << 10

// ErrMalformedPayload: a signed payload that is not a cosign
// simple-signing document.
var ErrMalformedPayload = errors.New("malformed payload")

// Payload is a decoded simple-signing payload.
type Payload struct {
	// DockerReference is the identity the signer claimed for the image.
	DockerReference string
	// Digest is the manifest digest the payload signs.
	Digest digest.Digest
	// Optional holds the annotations (-a key=value) and anything else the
	// signer added.
	Optional map[string]any
	// Raw is the payload exactly as signed.
	Raw []byte
}

// makePayload returns the payload cosign sign writes for d: the
// "critical" section names the image and its digest, "optional" carries
// the annotations (null when there are none, as cosign writes it).
func makePayload(identity string, d digest.Digest, annotations map[string]string) ([]byte, error) {
	var optional map[string]any
	if len(annotations) > 0 {
		optional = make(map[string]any, len(annotations))
		for k, v := range annotations {
			optional[k] = v
		}
	}
	return json.Marshal(payload.SimpleContainerImage{
		Critical: payload.Critical{
			Identity: payload.Identity{DockerReference: identity},
			Image:    payload.Image{DockerManifestDigest: string(d)},
			Type:     payload.CosignSignatureType,
		},
		Optional: optional,
	})
}

// ParsePayload decodes a simple-signing payload strictly: a JSON object
// with a "critical" section of exactly identity, image and type, a type of
// "cosign container image signature", a valid digest, an "optional" object
// or null, and no key given twice anywhere, in any mix of cases (so that
// no two JSON parsers can read different digests from the same signed
// bytes).
func ParsePayload(raw []byte) (*Payload, error) {
	if len(raw) > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes, over the limit of %d", ErrMalformedPayload, len(raw), MaxPayload)
	}
	if err := checkDuplicateKeys(raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedPayload, err)
	}
	var doc struct {
		Critical *struct {
			Identity *struct {
				DockerReference *string `json:"docker-reference"`
			} `json:"identity"`
			Image *struct {
				DockerManifestDigest *string `json:"docker-manifest-digest"`
			} `json:"image"`
			Type *string `json:"type"`
		} `json:"critical"`
		Optional map[string]any `json:"optional"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedPayload, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON document", ErrMalformedPayload)
	}
	c := doc.Critical
	switch {
	case c == nil:
		return nil, fmt.Errorf("%w: no \"critical\" section", ErrMalformedPayload)
	case c.Type == nil || *c.Type != payload.CosignSignatureType:
		got := "none"
		if c.Type != nil {
			got = fmt.Sprintf("%q", *c.Type)
		}
		return nil, fmt.Errorf("%w: critical.type is %s, expected %q", ErrMalformedPayload, got, payload.CosignSignatureType)
	case c.Image == nil || c.Image.DockerManifestDigest == nil:
		return nil, fmt.Errorf("%w: no critical.image.docker-manifest-digest", ErrMalformedPayload)
	case c.Identity == nil || c.Identity.DockerReference == nil:
		return nil, fmt.Errorf("%w: no critical.identity.docker-reference", ErrMalformedPayload)
	}
	d, err := transfer.ParseDigest(*c.Image.DockerManifestDigest)
	if err != nil {
		return nil, fmt.Errorf("%w: critical.image.docker-manifest-digest: %v", ErrMalformedPayload, err)
	}
	return &Payload{DockerReference: *c.Identity.DockerReference, Digest: d, Optional: doc.Optional, Raw: raw}, nil
}

// checkDuplicateKeys fails on an object that names a key twice, at any depth.
func checkDuplicateKeys(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var walk func(depth int) error
	walk = func(depth int) error {
		if depth > 32 {
			return errors.New("nested too deeply")
		}
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				key, _ := k.(string)
				if seen[foldKey(key)] {
					return fmt.Errorf("the key %q appears twice (in some mix of cases)", key)
				}
				seen[foldKey(key)] = true
				if err := walk(depth + 1); err != nil {
					return err
				}
			}
			_, err = dec.Token() // '}'
			return err
		case json.Delim('['):
			for dec.More() {
				if err := walk(depth + 1); err != nil {
					return err
				}
			}
			_, err = dec.Token() // ']'
			return err
		}
		return nil
	}
	return walk(0)
}

// foldKey maps every key that Go's JSON decoding matches to the same
// field (it ignores case, as strings.EqualFold does) to one string: each
// rune becomes the smallest of its case-folding orbit. Without it,
// {"critical":…,"Critical":…} would read as two keys here but decode as
// one, the second winning, while a reader that matches keys exactly would
// take the first: two digests from one signed payload.
func foldKey(key string) string {
	return strings.Map(func(r rune) rune {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		return least
	}, key)
}

// annotationsMatch checks that every wanted annotation is in the
// payload's optional section with exactly that string value, as cosign
// verify -a does. It names the first that is not.
func annotationsMatch(want map[string]string, optional map[string]any) error {
	for _, k := range sortedKeys(want) {
		got, ok := optional[k]
		if !ok {
			return fmt.Errorf("annotation %s is missing, want %q", k, want[k])
		}
		if s, isString := got.(string); !isString || s != want[k] {
			b, _ := json.Marshal(got)
			return fmt.Errorf("annotation %s is %s, want %q", k, b, want[k])
		}
	}
	return nil
}
