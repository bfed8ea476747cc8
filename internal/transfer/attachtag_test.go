package transfer

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestParseAttachmentTag(t *testing.T) {
	d256 := digest.FromString("image")
	d512 := digest.SHA512.FromString("image")
	hex := d256.Encoded()
	for _, c := range []struct {
		tag     string
		subject digest.Digest
		suffix  string
	}{
		{"sha256-" + hex + ".sig", d256, ".sig"},
		{"sha256-" + hex + ".att", d256, ".att"},
		{"sha256-" + hex + ".sbom", d256, ".sbom"},
		{"sha256-" + hex, d256, ""},
		{"sha512-" + d512.Encoded() + ".sig", d512, ".sig"},
	} {
		got, suffix, ok := ParseAttachmentTag(c.tag)
		if !ok || got != c.subject || suffix != c.suffix {
			t.Errorf("ParseAttachmentTag(%q) = %s, %q, %v; want %s, %q", c.tag, got, suffix, ok, c.subject, c.suffix)
		}
		if back := AttachmentTag(got, suffix); back != c.tag {
			t.Errorf("AttachmentTag(%s, %q) = %q, want %q", got, suffix, back, c.tag)
		}
	}
	for _, tag := range []string{
		"latest", "v1.2.3", "sha256-", "sha256-" + hex[:63] + ".sig",
		"sha256-" + strings.ToUpper(hex) + ".sig", "sha256-" + hex + ".sig2", "sha256-" + hex + "x",
		"sha384-" + hex + ".sig", "sha512-" + hex + ".sig", "sha256_" + hex,
	} {
		if d, s, ok := ParseAttachmentTag(tag); ok {
			t.Errorf("ParseAttachmentTag(%q) = %s, %q, true; want not an attachment tag", tag, d, s)
		}
	}
	if IsCosignTag("sha256-"+hex) || !IsCosignTag("sha256-"+hex+".sig") {
		t.Error("IsCosignTag: the referrers tag schema's tag is not cosign's; .sig is")
	}
}
