package signing

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// maxFuzzInput caps the inputs FuzzParsePayload tries: the fuzzer
// minimizes every input that finds new coverage with a number of runs that
// grows with the square of its size, and larger inputs kept it minimizing
// instead of fuzzing.
const maxFuzzInput = 1024

// FuzzParsePayload (ROBUSTNESS row 32): whatever the signed bytes,
// ParsePayload never panics and fails with ErrMalformedPayload, or names
// a valid digest that every reading of the same bytes agrees on: cosign's
// own decoding, and a reader that matches keys exactly as written. A
// payload that names one digest to ferry and another to some other
// verifier would let one signature vouch for two images. An accepted
// payload also survives being written again by makePayload.
func FuzzParsePayload(f *testing.F) {
	d := digest.FromString("image")
	good, err := makePayload("registry.example/app", d, map[string]string{"env": "prod"})
	if err != nil {
		f.Fatal(err)
	}
	crit := `"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"` + d.String() + `"},"type":"cosign container image signature"}`
	for _, s := range []string{
		string(good),
		"{" + crit + ",\"optional\":null}",
		"{" + crit + ",\"optional\":{\"a\":{\"b\":[1,2,{\"c\":null}]}}}",
		"{" + crit + "," + crit + "}",
		"{" + crit + "," + strings.Replace(crit, `"critical"`, `"Critical"`, 1) + "}",
		// Two digests: Go decodes the second, an exact reader the first.
		"{" + crit + "," + strings.NewReplacer(`"critical"`, `"Critical"`, d.String(), digest.FromString("other").String()).Replace(crit) + "}",
		"{" + crit + "} {}",
		`{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"sha256:../../x"},"type":"cosign container image signature"}}`,
		`{"critical":null}`, `[]`, ``, `{"critical":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > maxFuzzInput {
			return
		}
		p, err := ParsePayload(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformedPayload) {
				t.Fatalf("error %v does not wrap ErrMalformedPayload", err)
			}
			return
		}
		if err := p.Digest.Validate(); err != nil {
			t.Fatalf("accepted digest %q: %v", p.Digest, err)
		}
		var cosign payload.SimpleContainerImage
		if err := json.Unmarshal(raw, &cosign); err != nil || cosign.Critical.Image.DockerManifestDigest != string(p.Digest) {
			t.Fatalf("ferry reads %s, cosign reads %q (%v)", p.Digest, cosign.Critical.Image.DockerManifestDigest, err)
		}
		// Go matches keys without regard to case, so "Critical" is read
		// too; an exact reader then finds no digest and refuses.
		if exact := exactDigest(raw); exact != string(p.Digest) && exact != "" {
			t.Fatalf("ferry reads %s, a reader matching keys exactly reads %s", p.Digest, exact)
		}
		again, err := makePayload(p.DockerReference, p.Digest, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q, err := ParsePayload(again); err != nil || q.Digest != p.Digest || q.DockerReference != p.DockerReference {
			t.Fatalf("written again as %s, it parses as %+v, %v", again, q, err)
		}
	})
}

// exactDigest reads critical.image.docker-manifest-digest from a payload
// with keys matched exactly as written, as most JSON readers outside Go
// do; "" when it is not there.
func exactDigest(raw []byte) string {
	var doc map[string]any
	if json.Unmarshal(raw, &doc) != nil {
		return ""
	}
	critical, _ := doc["critical"].(map[string]any)
	image, _ := critical["image"].(map[string]any)
	s, _ := image["docker-manifest-digest"].(string)
	return s
}
