package signing

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rogpeppe/go-internal/txtar"

	"github.com/ferry-oci/ferry/internal/store"
	"github.com/ferry-oci/ferry/internal/transfer"
)

// tamperScript is the end-to-end script for signatures that are not what
// they claim; TestTamperFixture writes it with the fixture layout it needs.
const tamperScript = `# Signatures that are not what they claim fail closed with exit status 4
# and name the image (ROBUSTNESS rows 32-34): a signature image copied
# from another image to this one's tag, a payload that is validly signed
# but is not a cosign payload, and more signatures than ferry reads. This
# file and the layout in fixture/ are written by
#   go test ./internal/signing -run TestTamperFixture -update

# In the layout itself.
exec ferry verify --key test.pub oci:fixture:good
stdout '^oci:fixture:good@{{GOOD}}$'
exitcode 4 ferry verify --key test.pub oci:fixture:foreign
stderr 'oci:fixture:foreign@{{FOREIGN}}: no valid signature: signature 1 of 1: it signs {{GOOD}}, not this image''s digest {{FOREIGN}}'
! stdout .
exitcode 4 ferry verify --key test.pub oci:fixture:malformed
stderr 'oci:fixture:malformed@{{MALFORMED}}: no valid signature: signature 1 of 1: malformed payload: critical.type is "atomic container signature", expected "cosign container image signature"'
exitcode 4 ferry verify --key test.pub oci:fixture:many
stderr 'oci:fixture:many@{{MANY}}: too many signatures: sha256-{{MANYHEX}}.sig holds 150, more than the 100 ferry reads \(--max-signatures\)'
exec ferry verify --key test.pub --max-signatures 150 oci:fixture:many
stderr '150 valid signature'

# The same after ferry copy carried them to a registry.
exec ferry copy oci:fixture:good $REG/tamper-good:v1
exec ferry verify --key test.pub $REG/tamper-good:v1
exec ferry copy oci:fixture:foreign $REG/tamper-foreign:v1
exitcode 4 ferry verify --key test.pub $REG/tamper-foreign:v1
stderr 'tamper-foreign:v1@{{FOREIGN}}: no valid signature: signature 1 of 1: it signs {{GOOD}}, not this image''s digest {{FOREIGN}}'
exec ferry copy oci:fixture:malformed $REG/tamper-malformed:v1
exitcode 4 ferry verify --key test.pub $REG/tamper-malformed:v1
stderr 'tamper-malformed:v1@{{MALFORMED}}: no valid signature: signature 1 of 1: malformed payload'
exec ferry copy oci:fixture:many $REG/tamper-many:v1
exitcode 4 ferry verify --key test.pub $REG/tamper-many:v1
stderr 'tamper-many:v1@{{MANY}}: too many signatures'

# Signing a tampered image again adds a good signature beside the bad one.
env COSIGN_PASSWORD=ferry-test-only
exec ferry sign --key test.key $REG/tamper-malformed:v1
exec ferry verify --key test.pub $REG/tamper-malformed:v1
stderr '1 valid signature'
`

// fixtureLayout writes the tamper fixture's layout into dir and returns
// the script's placeholders. Every file ends in a newline, as txtar keeps
// files, so that blobs still hash to their names.
func fixtureLayout(t *testing.T, dir string) map[string]string {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := transfer.NewLayout("oci:"+dir, s, 0)
	signer := mustTestSigner(t)
	blob := func(b []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
		if err := l.WriteBlob(ctx, d, strings.NewReader(string(b))); err != nil {
			t.Fatal(err)
		}
		return d
	}
	manifest := func(m ocispec.Manifest, tag string) *transfer.Manifest {
		m.Versioned, m.MediaType = specsVersioned, ocispec.MediaTypeImageManifest
		raw, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		pm, err := transfer.ParseManifest(append(raw, '\n'), m.MediaType, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.PutManifest(ctx, pm, tag); err != nil {
			t.Fatal(err)
		}
		return pm
	}
	image := func(tag string) digest.Digest {
		layer := blob([]byte(tag + "\n"))
		layer.MediaType = ocispec.MediaTypeImageLayer
		cfg := blob([]byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + string(layer.Digest) + `"]}}` + "\n"))
		cfg.MediaType = ocispec.MediaTypeImageConfig
		return manifest(ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer}}, tag).Descriptor.Digest
	}
	// signatures writes d's signature image: n layers of payload, signed.
	signatures := func(d digest.Digest, payload []byte, n int) *transfer.Manifest {
		payload = append(payload, '\n')
		sig, err := signer.sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		p := blob(payload)
		p.MediaType = MediaTypeSimpleSigning
		p.Annotations = map[string]string{AnnotationSignature: b64(sig)}
		cfgFile := v1.ConfigFile{RootFS: v1.RootFS{Type: "layers"}}
		var layers []ocispec.Descriptor
		for range n {
			layers = append(layers, p)
			cfgFile.RootFS.DiffIDs = append(cfgFile.RootFS.DiffIDs, v1.Hash{Algorithm: "sha256", Hex: p.Digest.Encoded()})
			cfgFile.History = append(cfgFile.History, v1.History{})
		}
		raw, err := json.Marshal(&cfgFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg := blob(append(raw, '\n'))
		cfg.MediaType = ocispec.MediaTypeImageConfig
		return manifest(ocispec.Manifest{Config: cfg, Layers: layers}, SignatureTag(d))
	}

	good, foreign, malformed, many := image("good"), image("foreign"), image("malformed"), image("many")
	mustPayload := func(d digest.Digest) []byte {
		p, err := makePayload("fixture", d, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodSig := signatures(good, mustPayload(good), 1)
	// The good image's signature image, tagged for the foreign one.
	if err := l.PutManifest(ctx, goodSig, SignatureTag(foreign)); err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(mustPayload(malformed)), "cosign container image signature", "atomic container signature", 1)
	signatures(malformed, []byte(bad), 1)
	signatures(many, mustPayload(many), 150)
	return map[string]string{
		"{{GOOD}}": string(good), "{{FOREIGN}}": string(foreign), "{{MALFORMED}}": string(malformed),
		"{{MANY}}": string(many), "{{MANYHEX}}": many.Encoded(),
	}
}

// TestTamperFixture checks testdata/script/sign-tamper.txtar: its layout's
// blobs hash to their names and verify as the script expects. With
// -update it writes the file anew.
func TestTamperFixture(t *testing.T) {
	path := "../../testdata/script/sign-tamper.txtar"
	if *update {
		dir := t.TempDir()
		vars := fixtureLayout(t, dir)
		script := tamperScript
		for k, v := range vars {
			script = strings.ReplaceAll(script, k, v)
		}
		a := &txtar.Archive{Comment: []byte(script)}
		err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				if e != nil && e.IsDir() && e.Name() == ".ferry" {
					return filepath.SkipDir
				}
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			if !strings.HasSuffix(string(data), "\n") {
				data = append(data, '\n') // index.json, oci-layout: not content-addressed
			}
			a.Files = append(a.Files, txtar.File{Name: "fixture/" + filepath.ToSlash(rel), Data: data})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		sort.Slice(a.Files, func(i, j int) bool { return a.Files[i].Name < a.Files[j].Name })
		pub, err := os.ReadFile(testPubFile)
		if err != nil {
			t.Fatal(err)
		}
		key, err := os.ReadFile(testKeyFile)
		if err != nil {
			t.Fatal(err)
		}
		a.Files = append(a.Files, txtar.File{Name: "test.key", Data: key}, txtar.File{Name: "test.pub", Data: pub})
		if err := os.WriteFile(path, txtar.Format(a), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	a, err := txtar.ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range a.Files {
		name, ok := strings.CutPrefix(f.Name, "fixture/")
		if !ok {
			continue
		}
		if hex, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			if got := digest.FromBytes(f.Data).Encoded(); got != hex {
				t.Errorf("%s hashes to %s", f.Name, got)
			}
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := mustTestSigner(t)
	for tag, want := range map[string]string{
		"good":      "",
		"foreign":   "it signs ",
		"malformed": "malformed payload",
		"many":      "too many signatures",
	} {
		_, err := verify(t, "oci:"+dir+":"+tag, keyOpts(s))
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", tag, err)
			}
			continue
		}
		wantVerificationError(t, err, "oci:"+dir+":"+tag, want)
	}
}
