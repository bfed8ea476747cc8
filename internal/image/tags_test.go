package image

import (
	"strings"
	"testing"

	"github.com/Masterminds/semver/v3"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/transfer"
)

func TestTagSelector(t *testing.T) {
	sig := "sha256-" + strings.Repeat("a", 64) + ".sig"
	tags := []string{"1.24.0", "1.25.1", "1.25.10", "1.25.2", "1.26.0-rc1", "latest", "v1.27.0", sig, "2.0.0"}
	mustRe := func(p ...string) TagSelector {
		re, err := CompileRegexps("--include", p)
		if err != nil {
			t.Fatal(err)
		}
		return TagSelector{Include: re}
	}
	rng, _ := semver.NewConstraint(">=1.25, <2")
	tests := []struct {
		name string
		sel  TagSelector
		want string
	}{
		{"all by name", TagSelector{}, "1.24.0 1.25.1 1.25.10 1.25.2 1.26.0-rc1 2.0.0 latest " + sig + " v1.27.0"},
		{"omit signatures", TagSelector{OmitSignatures: true}, "1.24.0 1.25.1 1.25.10 1.25.2 1.26.0-rc1 2.0.0 latest v1.27.0"},
		{"semver order, last 3", TagSelector{Sort: "semver", Last: 3, OmitSignatures: true}, "1.26.0-rc1 v1.27.0 2.0.0"},
		{"range drops non-versions and prereleases", TagSelector{Semver: rng, Sort: "semver"}, "1.25.1 1.25.2 1.25.10 v1.27.0"},
		{"include", mustRe(`^1\.25\.`), "1.25.1 1.25.10 1.25.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(tt.sel.Select(tags), " "); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	ex, _ := CompileRegexps("--exclude", []string{"-rc", "^v"})
	if got := strings.Join(TagSelector{Exclude: ex, Sort: "semver", OmitSignatures: true}.Select(tags), " "); got != "latest 1.24.0 1.25.1 1.25.2 1.25.10 2.0.0" {
		t.Errorf("exclude: got %s", got)
	}
	if _, err := CompileRegexps("--include", []string{"("}); err == nil || !strings.Contains(err.Error(), `--include "("`) {
		t.Errorf("bad regex: err = %v, want one naming the flag and pattern", err)
	}
}

func TestSelectPlatform(t *testing.T) {
	idx := &transfer.Manifest{Manifests: []ocispec.Descriptor{
		{Digest: "sha256:1", Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}},
		{Digest: "sha256:2", Platform: &ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
		{Digest: "sha256:3", Platform: &ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{Digest: "sha256:4", Platform: &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
		{Digest: "sha256:5", Platform: &ocispec.Platform{OS: "unknown", Architecture: "unknown"}},
	}}
	for in, want := range map[string]string{"linux/amd64": "sha256:1", "linux/arm/v7": "sha256:3", "linux/arm64": "sha256:4", "linux/arm64/v8": "sha256:4", "linux/arm": "sha256:2"} {
		p, err := transfer.ParsePlatform(in)
		if err != nil {
			t.Fatal(err)
		}
		d, err := transfer.SelectPlatform(idx, p)
		if err != nil || string(d.Digest) != want {
			t.Errorf("%s: got %s, %v; want %s", in, d.Digest, err, want)
		}
	}
	p, _ := transfer.ParsePlatform("windows/amd64")
	_, err := transfer.SelectPlatform(idx, p)
	if err == nil || !strings.Contains(err.Error(), "windows/amd64") || !strings.Contains(err.Error(), "linux/arm/v7") || strings.Contains(err.Error(), "unknown") {
		t.Errorf("missing platform: err = %v, want it to name the platform and list the others", err)
	}
	for _, bad := range []string{"linux", "linux/", "/amd64", "a/b/c/d", "linux/arm/"} {
		if _, err := transfer.ParsePlatform(bad); err == nil {
			t.Errorf("transfer.ParsePlatform(%q) succeeded", bad)
		}
	}
}
