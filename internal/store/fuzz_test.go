package store

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpenArchive: any bytes either open as an archive or fail with an
// error; an archive that opens can be listed and checked without panics,
// and nothing is ever written outside the test's directory (ROBUSTNESS
// rows 17–20).
func FuzzOpenArchive(f *testing.F) {
	s := newStore(f)
	putImage(f, s, "app:v1", "layer")
	var good bytes.Buffer
	if err := WriteArchive(context.Background(), &good, s); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:len(good.Bytes())/2])
	var evil bytes.Buffer
	tw := tar.NewWriter(&evil)
	tw.WriteHeader(&tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644})
	tw.Write([]byte("x"))
	tw.WriteHeader(&tar.Header{Name: "blobs/sha256/link", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"})
	tw.Close()
	f.Add(evil.Bytes())
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "a.tar")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := OpenArchive(p)
		if err != nil {
			return
		}
		defer a.Close()
		ctx := context.Background()
		a.Names(ctx)
		if idx, err := a.Index(ctx); err == nil {
			for _, d := range idx.Manifests {
				a.Referrers(ctx, d.Digest)
			}
		}
		a.Check(ctx)
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Fatalf("opening an archive wrote into its directory: %v", entries)
		}
	})
}
