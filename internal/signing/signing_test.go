package signing

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/transfer"
)

var specsVersioned = specs.Versioned{SchemaVersion: 2}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func asVerificationError(err error, target **VerificationError) bool {
	return errors.As(err, target) && errors.Is(err, transfer.ErrVerification)
}

func TestKeyPairRoundTrip(t *testing.T) {
	kp, err := GenerateKeyPair([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(kp.Private, []byte("ENCRYPTED SIGSTORE PRIVATE KEY")) || !bytes.Contains(kp.Public, []byte("PUBLIC KEY")) {
		t.Fatalf("unexpected PEM types:\n%s\n%s", kp.Private, kp.Public)
	}
	s, err := LoadSigner("k.key", kp.Private, func() ([]byte, error) { return []byte("s3cret"), nil })
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey("k.pub", kp.Public)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.sign([]byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if !verifyWith(pub, sig, []byte("hello")) || verifyWith(pub, sig, []byte("hellO")) {
		t.Fatal("a signature by the generated key does not verify with its public key, or verifies other bytes")
	}

	_, err = LoadSigner("k.key", kp.Private, func() ([]byte, error) { return []byte("wrong"), nil })
	if !errors.Is(err, ErrPassword) || !strings.Contains(err.Error(), "k.key") {
		t.Errorf("wrong password: got %v, want ErrPassword naming k.key", err)
	}
	if _, err := LoadPublicKey("k.key", kp.Private); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "private key") {
		t.Errorf("a private key given as the public key: got %v", err)
	}
	if _, err := LoadSigner("k.pub", kp.Public, nil); !errors.Is(err, ErrKey) {
		t.Errorf("a public key given as the private key: got %v", err)
	}
	damaged := bytes.Replace(kp.Private, []byte("\n"), []byte("\nAAAA"), 2)
	if _, err := LoadSigner("d.key", damaged, nil); !errors.Is(err, ErrKey) {
		t.Errorf("damaged key: got %v, want ErrKey", err)
	}
}

// The committed test key was made by cosign generate-key-pair; it must
// load, and its public key must be the one in test.pub.
func TestCosignKeyFile(t *testing.T) {
	s := mustTestSigner(t)
	pem, err := os.ReadFile(testPubFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(testPubFile, pem)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.sign([]byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	if !verifyWith(pub, sig, []byte("payload")) {
		t.Fatal("test.key's signature does not verify with test.pub")
	}
}

func TestReadKeyRef(t *testing.T) {
	env := map[string]string{"KEY": "PEM DATA", "EMPTY": ""}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if b, err := ReadKeyRef("env://KEY", getenv); err != nil || string(b) != "PEM DATA" {
		t.Errorf("env://KEY: %q, %v", b, err)
	}
	for _, ref := range []string{"env://MISSING", "env://EMPTY", "env://", ""} {
		if _, err := ReadKeyRef(ref, getenv); !errors.Is(err, ErrKey) {
			t.Errorf("%q: got %v, want ErrKey", ref, err)
		}
	}
	path := filepath.Join(t.TempDir(), "k.pub")
	os.WriteFile(path, []byte("FILE"), 0o600)
	if b, err := ReadKeyRef(path, getenv); err != nil || string(b) != "FILE" {
		t.Errorf("file: %q, %v", b, err)
	}
	if _, err := ReadKeyRef(path+".missing", getenv); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "k.pub.missing") {
		t.Errorf("missing file: %v", err)
	}
}

// ferry's payload is byte for byte what cosign sign writes.
func TestPayloadMatchesCosign(t *testing.T) {
	d := digest.FromString("image")
	ref, err := name.NewDigest("registry.example.com/team/app@" + string(d))
	if err != nil {
		t.Fatal(err)
	}
	for _, ann := range []map[string]string{nil, {"build": "42", "git": "9f2e1c"}} {
		var cann map[string]any
		for k, v := range ann {
			if cann == nil {
				cann = map[string]any{}
			}
			cann[k] = v
		}
		want, err := payload.Cosign{Image: ref, Annotations: cann}.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		got, err := makePayload("registry.example.com/team/app", d, ann)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("payload\n got %s\nwant %s", got, want)
		}
		p, err := ParsePayload(got)
		if err != nil || p.Digest != d || p.DockerReference != "registry.example.com/team/app" {
			t.Errorf("ParsePayload(%s) = %+v, %v", got, p, err)
		}
	}
}

func TestParsePayloadRejects(t *testing.T) {
	d := string(digest.FromString("x"))
	ok := `{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"` + d + `"},"type":"cosign container image signature"},"optional":null}`
	if _, err := ParsePayload([]byte(ok)); err != nil {
		t.Fatalf("a good payload: %v", err)
	}
	for name, bad := range map[string]string{
		"not JSON":          `not json`,
		"array":             `[]`,
		"no critical":       `{"optional":{}}`,
		"wrong type":        strings.Replace(ok, "cosign container image signature", "atomic container signature", 1),
		"no digest":         strings.Replace(ok, `"image":{"docker-manifest-digest":"`+d+`"},`, "", 1),
		"bad digest":        strings.Replace(ok, d, "sha256:../../etc", 1),
		"uppercase digest":  strings.Replace(ok, d, strings.ToUpper(d), 1),
		"digest not string": strings.Replace(ok, `"`+d+`"`, `42`, 1),
		"duplicate key":     strings.Replace(ok, `"type":`, `"image":{"docker-manifest-digest":"`+string(digest.FromString("y"))+`"},"type":`, 1),
		"duplicate top key": strings.Replace(ok, `,"optional":null}`, `,"optional":null,"optional":{}}`, 1),
		"unknown critical":  strings.Replace(ok, `"type":`, `"extra":1,"type":`, 1),
		"unknown top-level": strings.Replace(ok, `"optional":null`, `"optional":null,"more":1`, 1),
		"trailing data":     ok + `{}`,
		"optional not obj":  strings.Replace(ok, `"optional":null`, `"optional":"x"`, 1),
		"too large":         strings.Replace(ok, `"optional":null`, `"optional":{"pad":"`+strings.Repeat("x", MaxPayload)+`"}`, 1),
	} {
		if _, err := ParsePayload([]byte(bad)); !errors.Is(err, ErrMalformedPayload) {
			t.Errorf("%s: got %v, want ErrMalformedPayload", name, err)
		}
	}
}

// endpoints runs f against a registry repository, an OCI layout and an
// OCI archive, each holding one fresh image; ref names the image by tag.
func endpoints(t *testing.T, f func(t *testing.T, ref string, d digest.Digest)) {
	reg := regtest.GGCR(t, nil)
	n := 0
	t.Run("registry", func(t *testing.T) {
		n++
		ref, d := registryImage(t, reg, fmt.Sprintf("repo%d", n))
		f(t, ref, d)
	})
	t.Run("oci", func(t *testing.T) {
		dir, d := layoutImage(t, "app")
		f(t, "oci:"+dir+":app", d)
	})
	t.Run("oci-archive", func(t *testing.T) {
		dir, d := layoutImage(t, "app")
		archive := filepath.Join(t.TempDir(), "app.tar")
		src := openSource(t, parseRef(t, "oci:"+dir+":app"))
		dst, finish, err := remote().OpenTarget(context.Background(), parseRef(t, "oci-archive:"+archive), transfer.Reference{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := transfer.Copy(context.Background(), src, dst, transfer.Request{Source: "app", Tag: "app"}, transfer.Options{}); err != nil {
			t.Fatal(err)
		}
		if err := finish(true); err != nil {
			t.Fatal(err)
		}
		f(t, "oci-archive:"+archive+":app", d)
	})
}

// sign signs ref with s in its own open-and-finish, as ferry sign does.
func sign(t *testing.T, ref string, s *Signer, opts SignOptions) []Signed {
	t.Helper()
	ep, finish, err := OpenForSigning(context.Background(), remote(), parseRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Sign(context.Background(), ep, parseRef(t, ref), s, opts)
	if ferr := finish(err == nil); ferr != nil {
		t.Fatal(ferr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func verify(t *testing.T, ref string, opts VerifyOptions) ([]Verified, error) {
	t.Helper()
	return Verify(context.Background(), openSource(t, parseRef(t, ref)), parseRef(t, ref), opts)
}

func TestSignVerify(t *testing.T) {
	s := mustTestSigner(t)
	endpoints(t, func(t *testing.T, ref string, d digest.Digest) {
		// No signature yet: fail closed, naming the image.
		_, err := verify(t, ref, keyOpts(s))
		wantVerificationError(t, err, ref+"@"+string(d), "no signatures", SignatureTag(d))

		res := sign(t, ref, s, SignOptions{Annotations: map[string]string{"env": "prod"}})
		if len(res) != 1 || res[0].Digest != d || res[0].Existing {
			t.Fatalf("Sign = %+v, want one new signature of %s", res, d)
		}
		got, err := verify(t, ref, keyOpts(s))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Digest != d || len(got[0].Signatures) != 1 {
			t.Fatalf("Verify = %+v", got)
		}
		p, err := ParsePayload(got[0].Signatures[0].Payload)
		if err != nil || p.Digest != d || p.Optional["env"] != "prod" {
			t.Fatalf("verified payload %s: %v", got[0].Signatures[0].Payload, err)
		}

		// Annotations are checked exactly.
		opts := keyOpts(s)
		opts.Annotations = map[string]string{"env": "prod"}
		if _, err := verify(t, ref, opts); err != nil {
			t.Errorf("matching annotation: %v", err)
		}
		opts.Annotations = map[string]string{"env": "dev"}
		_, err = verify(t, ref, opts)
		wantVerificationError(t, err, ref, `annotation env is "prod", want "dev"`)
		opts.Annotations = map[string]string{"team": "a"}
		_, err = verify(t, ref, opts)
		wantVerificationError(t, err, ref, `annotation team is missing`)

		// Another key: fail closed.
		_, err = verify(t, ref, keyOpts(newSigner(t)))
		wantVerificationError(t, err, ref, "no valid signature", "does not verify with the key test.pub")

		// Signing again with the same payload changes nothing.
		again := sign(t, ref, s, SignOptions{Annotations: map[string]string{"env": "prod"}})
		if !again[0].Existing || again[0].SignatureDigest != res[0].SignatureDigest {
			t.Errorf("re-signing: %+v, want the existing signature %s", again[0], res[0].SignatureDigest)
		}
		// Another key appends a layer, as cosign does; both verify.
		other := newSigner(t)
		third := sign(t, ref, other, SignOptions{})
		if third[0].Existing || third[0].SignatureDigest == res[0].SignatureDigest {
			t.Errorf("a second signer's signature was not added: %+v", third[0])
		}
		for _, k := range []*Signer{s, other} {
			got, err := verify(t, ref, keyOpts(k))
			if err != nil || len(got[0].Signatures) != 1 {
				t.Errorf("after appending: %+v, %v", got, err)
			}
		}
		m, err := openSource(t, parseRef(t, ref)).Manifest(context.Background(), SignatureTag(d))
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Layers) != 2 {
			t.Fatalf("signature image has %d layers, want 2", len(m.Layers))
		}
		cfgRaw, err := openSource(t, parseRef(t, ref)).FetchBlob(context.Background(), m.Config.Digest, m.Config.Size, maxConfig)
		if err != nil {
			t.Fatal(err)
		}
		var cfg v1.ConfigFile
		if err := json.Unmarshal(cfgRaw, &cfg); err != nil || len(cfg.RootFS.DiffIDs) != 2 || cfg.RootFS.DiffIDs[1].String() != string(m.Layers[1].Digest) {
			t.Errorf("config of the signature image does not list both payloads: %s", cfgRaw)
		}
	})
}

// A tag that moves to another image after signing does not carry the
// signature with it, and a signature copied to the new digest's tag is
// rejected because its payload names the old digest.
func TestMovedTagAndForeignSignature(t *testing.T) {
	s := mustTestSigner(t)
	ctx := context.Background()
	endpoints(t, func(t *testing.T, ref string, old digest.Digest) {
		sign(t, ref, s, SignOptions{})
		// Move the tag.
		r := parseRef(t, ref)
		ep := openEndpoint(t, r)
		moved := putImage(t, ep, r.Tag, "the new content "+ref)
		newD := moved.Descriptor.Digest
		sigOld, err := ep.Manifest(ctx, SignatureTag(old))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Verify(ctx, ep, r, keyOpts(s))
		wantVerificationError(t, err, string(newD), "no signatures")

		// Someone copies the old signature image to the new digest's tag.
		if err := ep.PutManifest(ctx, sigOld, SignatureTag(newD)); err != nil {
			t.Fatal(err)
		}
		_, err = Verify(ctx, ep, r, keyOpts(s))
		wantVerificationError(t, err, string(newD), "it signs "+string(old)+", not this image's digest "+string(newD))
		// The old digest still verifies.
		pinned := r
		pinned.Tag, pinned.Digest = "", old
		if _, err := Verify(ctx, ep, pinned, keyOpts(s)); err != nil {
			t.Errorf("the old digest: %v", err)
		}
	})
}

// Signed payloads that are not cosign simple-signing documents are
// rejected even though their signature is valid.
func TestMalformedSignedPayload(t *testing.T) {
	s := mustTestSigner(t)
	reg := regtest.GGCR(t, nil)
	ctx := context.Background()
	for i, bad := range []string{
		`this is not JSON`,
		`{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"%s"},"type":"something else"},"optional":null}`,
		`{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"sha256:0000"},"type":"cosign container image signature"},"optional":null}`,
		`{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"%s"},"image":{"docker-manifest-digest":"sha256:` + strings.Repeat("0", 64) + `"},"type":"cosign container image signature"}}`,
	} {
		ref, d := registryImage(t, reg, fmt.Sprintf("malformed%d", i))
		if strings.Contains(bad, "%s") {
			bad = fmt.Sprintf(bad, d)
		}
		ep := openEndpoint(t, parseRef(t, ref))
		putSignature(t, ep, d, []byte(bad), s, nil)
		_, err := Verify(ctx, ep, parseRef(t, ref), keyOpts(s))
		wantVerificationError(t, err, ref+"@"+string(d), "malformed payload")
	}

	// Unusable layers: no signature annotation, not base64, a foreign media type.
	ref, d := registryImage(t, reg, "unusable")
	ep := openEndpoint(t, parseRef(t, ref))
	good, _ := makePayload("r", d, nil)
	putSignature(t, ep, d, good, nil, nil)
	putSignature(t, ep, d, good, nil, map[string]string{AnnotationSignature: "MEUCIQ-not-a-real-signature"})
	_, err := Verify(ctx, ep, parseRef(t, ref), keyOpts(s))
	wantVerificationError(t, err, "signature 1 of 2: no "+AnnotationSignature, "signature 2 of 2: the signature is not valid base64")
}

// countingRegistry is a registry that counts blob GETs.
func countingRegistry(t *testing.T) (string, *atomic.Int64) {
	var blobs atomic.Int64
	h := registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			blobs.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), &blobs
}

// Thousands of signatures: verify reads none of them past the cap
// (ROBUSTNESS row 33, CVE-2023-46737).
func TestTooManySignatures(t *testing.T) {
	s := mustTestSigner(t)
	reg, blobs := countingRegistry(t)
	ref, d := registryImage(t, reg, "many")
	ep := openEndpoint(t, parseRef(t, ref))
	ctx := context.Background()
	payload, _ := makePayload("r", d, nil)
	sig, _ := s.sign(payload)
	img, _ := newSigImage()
	for range 5000 {
		img.layers = append(img.layers, layerFor(payload, sig))
	}
	if _, err := img.write(ctx, ep, payload, SignatureTag(d)); err != nil {
		t.Fatal(err)
	}
	blobs.Store(0)
	_, err := Verify(ctx, ep, parseRef(t, ref), keyOpts(s))
	wantVerificationError(t, err, ref, "too many signatures", "holds 5000, more than the 100")
	if n := blobs.Load(); n != 0 {
		t.Errorf("verify fetched %d blobs of an image with too many signatures", n)
	}
	// A cap raised past the count reads them, and they verify.
	opts := keyOpts(s)
	opts.MaxSignatures = 5000
	got, err := Verify(ctx, ep, parseRef(t, ref), opts)
	if err != nil || len(got[0].Signatures) != 5000 {
		t.Fatalf("with --max-signatures 5000: %d, %v", len(got), err)
	}
}

func layerFor(payload, sig []byte) (d ocispec.Descriptor) {
	d.MediaType = MediaTypeSimpleSigning
	d.Digest = digest.FromBytes(payload)
	d.Size = int64(len(payload))
	d.Annotations = map[string]string{AnnotationSignature: b64(sig)}
	return d
}

func TestRecursive(t *testing.T) {
	s := mustTestSigner(t)
	reg := regtest.GGCR(t, nil)
	ctx := context.Background()
	ref := reg + "/multi:v1"
	ep := openEndpoint(t, parseRef(t, ref))
	a := putImage(t, ep, "", "amd64")
	b := putImage(t, ep, "", "arm64")
	idx := putIndex(t, ep, "v1", a, b)

	// Without --recursive only the index is signed.
	res := sign(t, ref, s, SignOptions{})
	if len(res) != 1 || res[0].Digest != idx.Descriptor.Digest {
		t.Fatalf("Sign = %+v", res)
	}
	opts := keyOpts(s)
	opts.Recursive = true
	got, err := Verify(ctx, ep, parseRef(t, ref), opts)
	wantVerificationError(t, err, string(a.Descriptor.Digest), string(b.Descriptor.Digest), "no signatures")
	if len(got) != 1 || got[0].Digest != idx.Descriptor.Digest {
		t.Errorf("the index verified on its own: %+v", got)
	}

	res = sign(t, ref, s, SignOptions{Recursive: true})
	if len(res) != 3 || !res[0].Existing || res[1].Digest != a.Descriptor.Digest || res[2].Digest != b.Descriptor.Digest {
		t.Fatalf("recursive Sign = %+v", res)
	}
	got, err = Verify(ctx, ep, parseRef(t, ref), opts)
	if err != nil || len(got) != 3 {
		t.Fatalf("recursive Verify = %+v, %v", got, err)
	}
}

// Signing an oci-archive: rewrites it with the signature; a failed signing
// leaves the file as it was.
func TestArchiveRewrite(t *testing.T) {
	s := mustTestSigner(t)
	dir, d := layoutImage(t, "app")
	ctx := context.Background()
	// A second image, untagged but with a referrer-less root entry, rides along.
	archive := filepath.Join(t.TempDir(), "a.tar")
	src := openSource(t, parseRef(t, "oci:"+dir+":app"))
	dst, finish, err := remote().OpenTarget(ctx, parseRef(t, "oci-archive:"+archive), transfer.Reference{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := transfer.Copy(ctx, src, dst, transfer.Request{Source: "app", Tag: "app"}, transfer.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := transfer.Copy(ctx, src, dst, transfer.Request{Source: "app", Tag: "other"}, transfer.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := finish(true); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(archive)

	ref := parseRef(t, "oci-archive:"+archive+":app")
	ep, finish, err := OpenForSigning(ctx, remote(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Sign(ctx, ep, ref, s, SignOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := finish(false); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(archive); !bytes.Equal(before, after) {
		t.Fatal("finish(false) changed the archive")
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(archive), ".ferry-*"))
	if len(matches) != 0 {
		t.Errorf("staging left behind: %v", matches)
	}

	sign(t, "oci-archive:"+archive+":app", s, SignOptions{})
	if _, err := verify(t, "oci-archive:"+archive+":app", keyOpts(s)); err != nil {
		t.Fatal(err)
	}
	if _, err := verify(t, "oci-archive:"+archive+"@"+string(d), keyOpts(s)); err != nil {
		t.Fatal(err)
	}
	names, err := openSource(t, parseRef(t, "oci-archive:"+archive)).Tags(ctx, transfer.TagOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"app", "other", SignatureTag(d)}; fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("archive names %v, want %v", names, want)
	}
}
