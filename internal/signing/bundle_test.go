package signing

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// statementFor is the in-toto statement cosign sign --new-bundle-format
// signs for d.
func statementFor(d digest.Digest, predicate string) []byte {
	return fmt.Appendf(nil, `{"_type":"https://in-toto.io/Statement/v1", "subject":[{"digest":{"%s":"%s"}}], "predicateType":"%s"}`,
		d.Algorithm(), d.Encoded(), predicate)
}

// putBundle attaches a sigstore bundle referrer to subject, as cosign
// --new-bundle-format does: a DSSE envelope over stmt signed by s, with
// the certificate leaf when it is set.
func putBundle(t *testing.T, ep Endpoint, subject *transfer.Manifest, stmt []byte, s *Signer, leaf *x509.Certificate) {
	t.Helper()
	ctx := context.Background()
	sig, err := s.sign(pae(payloadTypeInToto, stmt))
	if err != nil {
		t.Fatal(err)
	}
	b := map[string]any{
		"mediaType": ArtifactTypeBundle,
		"dsseEnvelope": map[string]any{
			"payload": stmt, "payloadType": payloadTypeInToto,
			"signatures": []map[string]any{{"sig": sig}},
		},
		"verificationMaterial": map[string]any{"publicKey": map[string]string{"hint": "x"}},
	}
	if leaf != nil {
		b["verificationMaterial"] = map[string]any{"certificate": map[string]any{"rawBytes": leaf.Raw}}
	}
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	empty := []byte("{}")
	for _, blob := range [][]byte{raw, empty} {
		if err := ep.WriteBlob(ctx, ocispec.Descriptor{Digest: digest.FromBytes(blob), Size: int64(len(blob))}, strings.NewReader(string(blob))); err != nil {
			t.Fatal(err)
		}
	}
	mraw, err := json.Marshal(ocispec.Manifest{
		Versioned:    specsVersioned,
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactTypeBundle,
		Config:       ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: digest.FromBytes(empty), Size: 2},
		Layers:       []ocispec.Descriptor{{MediaType: ArtifactTypeBundle, Digest: digest.FromBytes(raw), Size: int64(len(raw))}},
		Subject:      &ocispec.Descriptor{MediaType: subject.Descriptor.MediaType, Digest: subject.Descriptor.Digest, Size: subject.Descriptor.Size},
		Annotations:  map[string]string{"dev.sigstore.bundle.predicateType": predicateCosignSign},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := transfer.ParseManifest(mraw, ocispec.MediaTypeImageManifest, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := ep.PutManifest(ctx, m, ""); err != nil {
		t.Fatal(err)
	}
}

func TestBundleReferrers(t *testing.T) {
	s := mustTestSigner(t)
	ctx := context.Background()
	endpoints(t, func(t *testing.T, ref string, d digest.Digest) {
		r := parseRef(t, ref)
		ep := openEndpoint(t, r)
		subject, err := ep.Manifest(ctx, string(d))
		if err != nil {
			t.Fatal(err)
		}
		// A bundle for another digest, one by another key, one with
		// another predicate: none counts.
		putBundle(t, ep, subject, statementFor(digest.FromString("other"), predicateCosignSign), s, nil)
		putBundle(t, ep, subject, statementFor(d, predicateCosignSign), newSigner(t), nil)
		putBundle(t, ep, subject, statementFor(d, "https://slsa.dev/provenance/v1"), s, nil)
		_, err = Verify(ctx, ep, r, keyOpts(s))
		wantVerificationError(t, err, ref, "no valid signature",
			"it signs "+string(digest.FromString("other"))+", not this image's digest",
			"does not verify with the key test.pub",
			`predicate "https://slsa.dev/provenance/v1"`)

		putBundle(t, ep, subject, statementFor(d, predicateCosignSign), s, nil)
		got, err := Verify(ctx, ep, r, keyOpts(s))
		if err != nil {
			t.Fatal(err)
		}
		if len(got[0].Signatures) != 1 || !strings.Contains(string(got[0].Signatures[0].Payload), d.Encoded()) {
			t.Fatalf("verified %+v", got)
		}
		// Bundles carry no annotations, so -a cannot be met by one.
		opts := keyOpts(s)
		opts.Annotations = map[string]string{"a": "b"}
		_, err = Verify(ctx, ep, r, opts)
		wantVerificationError(t, err, ref, "carries no annotations")
		// The cap counts bundles too.
		opts = keyOpts(s)
		opts.MaxSignatures = 2
		_, err = Verify(ctx, ep, r, opts)
		wantVerificationError(t, err, ref, "too many signatures")
	})
}

func TestBundleCertificate(t *testing.T) {
	s := mustTestSigner(t)
	ctx := context.Background()
	now := time.Now()
	pki := newTestPKI(t, now.Add(-time.Hour), now.Add(time.Hour))
	leaf := pki.leaf(t, s.PublicKey(), leafSpec{email: testIdentity, issuerV2: testIssuer})
	dir, d := layoutImage(t, "app")
	r := parseRef(t, "oci:"+dir+":app")
	ep := openEndpoint(t, r)
	subject, err := ep.Manifest(ctx, string(d))
	if err != nil {
		t.Fatal(err)
	}
	putBundle(t, ep, subject, statementFor(d, predicateCosignSign), s, leaf)
	p, err := NewCertificatePolicy(pemOf(pki.root), pemOf(pki.inter), testIdentity, "", testIssuer, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(ctx, ep, r, VerifyOptions{Certificate: p})
	if err != nil || got[0].Signatures[0].Certificate == nil {
		t.Fatalf("%+v, %v", got, err)
	}
	p.Identity = "else@example.com"
	_, err = Verify(ctx, ep, r, VerifyOptions{Certificate: p})
	wantVerificationError(t, err, "not else@example.com")
}
