package transfer

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const (
	cfgDigest   = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	layerDigest = "sha256:8c5ee4b21a3e5d36a9e2a2b34ad27e0c6b2fc4d5a6d0a84e3bca5e0b3b1d9a7f"
)

func TestParseManifest(t *testing.T) {
	image := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cfgDigest + `","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + layerDigest + `","size":10}]}`
	index := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + cfgDigest + `","size":5,"platform":{"os":"linux","architecture":"amd64"}}]}`
	tests := []struct {
		name, body, contentType string
		wantType                string
		wantErr                 string
	}{
		{"image", image, MediaTypeOCIManifest, MediaTypeOCIManifest, ""},
		{"image without content type", image, "", MediaTypeOCIManifest, ""},
		{"image served as json", image, "application/json; charset=utf-8", MediaTypeOCIManifest, ""},
		{"index", index, MediaTypeOCIIndex, MediaTypeOCIIndex, ""},
		{"index without mediaType field", strings.Replace(index, `"mediaType":"application/vnd.oci.image.index.v1+json",`, "", 1), "", MediaTypeOCIIndex, ""},
		{"both index and image", strings.Replace(index, `"manifests"`, `"config":{"mediaType":"x","digest":"`+cfgDigest+`","size":1},"manifests"`, 1), "", "", "both"},
		{"content type disagrees with mediaType", image, MediaTypeOCIIndex, "", "served as"},
		{"docker content type disagrees", image, MediaTypeDockerManifest, "", "served as"},
		{"schema 1", `{"schemaVersion":1,"fsLayers":[]}`, "", "", "schema 1"},
		{"traversal digest", strings.Replace(image, cfgDigest, "sha256:../../etc/passwd", 1), "", "", "config"},
		{"uppercase hex", strings.Replace(image, layerDigest, strings.ToUpper(layerDigest[7:]), 1), "", "", "layers[0]"},
		{"unknown algorithm", strings.Replace(image, layerDigest, "md5:d41d8cd98f00b204e9800998ecf8427e", 1), "", "", "layers[0]"},
		{"not json", "{", "", "", "JSON"},
		{"neither", `{"schemaVersion":2}`, "", "", "neither"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tt.body), tt.contentType, "")
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalidManifest) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrInvalidManifest mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Descriptor.MediaType != tt.wantType {
				t.Errorf("media type %s, want %s", m.Descriptor.MediaType, tt.wantType)
			}
			if m.Descriptor.Digest != digest.FromString(tt.body) || m.Descriptor.Size != int64(len(tt.body)) {
				t.Errorf("descriptor %v does not describe the body", m.Descriptor)
			}
		})
	}
}

func TestParseDigest(t *testing.T) {
	good := []string{layerDigest, "sha512:" + strings.Repeat("ab", 64)}
	for _, s := range good {
		if _, err := ParseDigest(s); err != nil {
			t.Errorf("ParseDigest(%q) = %v", s, err)
		}
	}
	bad := []string{"sha256:../../x", "sha256:abc", strings.ToUpper(layerDigest), "sha384:" + strings.Repeat("a", 96), "md5:d41d8cd98f00b204e9800998ecf8427e", "", "sha256:" + strings.Repeat("g", 64)}
	for _, s := range bad {
		if _, err := ParseDigest(s); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("ParseDigest(%q) = %v, want ErrInvalidReference", s, err)
		}
	}
}

func TestParseReference(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alpine", "index.docker.io/library/alpine:latest"},
		{"127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1"},
		{"127.0.0.1:5000/a/b@" + layerDigest, "127.0.0.1:5000/a/b@" + layerDigest},
		{"127.0.0.1:5000/a/b:v1@" + layerDigest, "127.0.0.1:5000/a/b:v1@" + layerDigest},
		{"oci:./dir:v1", "oci:./dir:v1"},
		{"oci:/srv/x", "oci:/srv/x"},
		{"oci:root:team/app:v1", "oci:root:team/app:v1"},
		{"oci-archive:b.tar:docker.io/library/nginx:1.25", "oci-archive:b.tar:docker.io/library/nginx:1.25"},
		{`oci:C:\images:v1`, `oci:C:\images:v1`},
		{"oci-archive:b.tar@" + layerDigest, "oci-archive:b.tar@" + layerDigest},
	}
	for _, tt := range tests {
		r, err := ParseReference(tt.in, false)
		if err != nil {
			t.Errorf("ParseReference(%q): %v", tt.in, err)
			continue
		}
		if r.String() != tt.want {
			t.Errorf("ParseReference(%q) = %s, want %s", tt.in, r, tt.want)
		}
	}
	for _, in := range []string{"Upper/Case", "host/repo@sha256:../../x", "host/repo:bad tag", "oci:", "oci:dir:", "host/re..po"} {
		if _, err := ParseReference(in, false); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("ParseReference(%q) = %v, want ErrInvalidReference", in, err)
		}
	}
}
