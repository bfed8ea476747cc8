//go:build interop

package store

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Run with: go test -tags interop ./internal/store/
// Uses skopeo and regctl from PATH; a test skips when its tool is missing.

func skopeo(t *testing.T, args ...string) []byte {
	t.Helper()
	path, err := exec.LookPath("skopeo")
	if err != nil {
		t.Skip("skopeo is not installed")
	}
	cmd := exec.Command(path, append([]string{"--insecure-policy"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("skopeo %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// regctl reads a layout written by Store (its ocidir:// scheme), and Store
// reads one written by regctl.
func TestRegctlInterop(t *testing.T) {
	path, err := exec.LookPath("regctl")
	if err != nil {
		t.Skip("regctl is not installed")
	}
	ctx := context.Background()
	src := newStore(t)
	img := putImage(t, src, "v1", "layer")
	regctl := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(path, args...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("regctl %v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
	if raw := regctl("manifest", "get", "--format", "raw-body", "ocidir://"+src.Dir()+":v1"); !bytes.Equal(raw, img.raw) {
		t.Errorf("regctl manifest get = %s, want %s", raw, img.raw)
	}
	dst := filepath.Join(t.TempDir(), "regctl")
	regctl("image", "copy", "ocidir://"+src.Dir()+":v1", "ocidir://"+dst+":copied")
	s, err := OpenExisting(dst)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := s.Resolve(ctx, "copied")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != img.manifest.Digest {
		t.Errorf("regctl's copy resolves to %s, want %s", desc.Digest, img.manifest.Digest)
	}
	if problems, err := s.Check(ctx); err != nil || len(problems) != 0 {
		t.Errorf("Check of regctl's layout = %v, %v", problems, err)
	}
}

func TestSkopeoInterop(t *testing.T) {
	ctx := context.Background()
	src := newStore(t)
	img := putImage(t, src, "v1", "first layer", "second layer")
	putReferrer(t, src, img.manifest, "application/vnd.example.sig", nil)
	tmp := t.TempDir()

	// skopeo reads what Store wrote.
	if raw := skopeo(t, "inspect", "--raw", "oci:"+src.Dir()+":v1"); !bytes.Equal(raw, img.raw) {
		t.Errorf("skopeo inspect --raw = %s, want %s", raw, img.raw)
	}

	t.Run("oci to oci", func(t *testing.T) {
		dst := filepath.Join(tmp, "dst")
		skopeo(t, "copy", "oci:"+src.Dir()+":v1", "oci:"+dst+":copied")
		s, err := OpenExisting(dst)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := s.Resolve(ctx, "copied")
		if err != nil {
			t.Fatal(err)
		}
		if desc.Digest != img.manifest.Digest {
			t.Errorf("skopeo's copy resolves to %s, want %s", desc.Digest, img.manifest.Digest)
		}
		if problems, err := s.Check(ctx); err != nil || len(problems) != 0 {
			t.Errorf("Check of skopeo's layout = %v, %v", problems, err)
		}
		// And Store can keep writing into a layout skopeo made.
		s, err = Open(dst)
		if err != nil {
			t.Fatal(err)
		}
		putImage(t, s, "ours", "another layer")
		skopeo(t, "inspect", "--raw", "oci:"+dst+":ours")
		skopeo(t, "inspect", "--raw", "oci:"+dst+":copied")
	})

	t.Run("oci to oci-archive", func(t *testing.T) {
		file := filepath.Join(tmp, "skopeo.tar")
		skopeo(t, "copy", "oci:"+src.Dir()+":v1", "oci-archive:"+file+":v1")
		a, err := OpenArchive(file)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		desc, err := a.Resolve(ctx, "v1")
		if err != nil {
			t.Fatal(err)
		}
		if desc.Digest != img.manifest.Digest {
			t.Errorf("skopeo's archive resolves to %s, want %s", desc.Digest, img.manifest.Digest)
		}
		for _, l := range img.layers {
			if got := readAll(t, a, l.Digest); !bytes.Equal(got, readAll(t, src, l.Digest)) {
				t.Errorf("layer %s differs in skopeo's archive", l.Digest)
			}
		}
		if problems, err := a.Check(ctx); err != nil || len(problems) != 0 {
			t.Errorf("Check of skopeo's archive = %v, %v", problems, err)
		}
	})

	t.Run("WriteArchive read by skopeo", func(t *testing.T) {
		file := filepath.Join(tmp, "ours.tar")
		f, err := os.Create(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteArchive(ctx, f, src); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if raw := skopeo(t, "inspect", "--raw", "oci-archive:"+file+":v1"); !bytes.Equal(raw, img.raw) {
			t.Errorf("skopeo inspect of our archive = %s", raw)
		}
		dst := filepath.Join(tmp, "from-archive")
		skopeo(t, "copy", "oci-archive:"+file+":v1", "oci:"+dst+":v1")
		s, err := OpenExisting(dst)
		if err != nil {
			t.Fatal(err)
		}
		if desc, err := s.Resolve(ctx, "v1"); err != nil || desc.Digest != img.manifest.Digest {
			t.Errorf("Resolve = %v, %v; want %s", desc.Digest, err, img.manifest.Digest)
		}
	})
}
