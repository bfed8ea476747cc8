package bundle

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/transfer"
)

// forged makes a valid bundle, lets change rewrite its entries, writes
// the result with a matching FILE.sha256 (so only the checks of the tar
// and its content can object), and returns its path.
func forged(t *testing.T, src *source, change func([]entry) []entry) string {
	t.Helper()
	path, _ := create(t, t.TempDir(), "b.tar", src.refs("team/app:v1", "signed:v1"), nil)
	writeEntries(t, path, change(readEntries(t, path)), true)
	return path
}

// refused checks that the bundle at path fails Verify with a problem
// matching want, and that Import refuses it as corrupt and pushes nothing.
func refused(t *testing.T, path, want string) {
	t.Helper()
	rep, err := Verify(context.Background(), path)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !errors.Is(rep.Err(), ErrCorrupt) || !errors.Is(rep.Err(), transfer.ErrVerification) {
		t.Fatalf("Verify found no problem: %+v", rep)
	}
	if !strings.Contains(problems(rep), want) {
		t.Errorf("problems do not mention %q:\n%s", want, problems(rep))
	}
	dst := regtest.GGCR(t, nil)
	res, err := importTo(t, path, dst+"/site", nil)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Import: %v", err)
	}
	if res == nil || res.Verify == nil || len(res.Verify.Problems) == 0 {
		t.Errorf("Import's result has no report: %+v", res)
	}
	if repos := catalogOf(t, dst); len(repos) != 0 {
		t.Errorf("Import pushed %v", repos)
	}
	if _, err := os.Stat(strings.TrimSuffix(path, filepath.Ext(path)) + ".tar.receipt.json"); !os.IsNotExist(err) {
		t.Errorf("a receipt was written for a refused bundle")
	}
}

func regular(name string, data []byte) entry {
	return entry{hdr: &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644}, data: data}
}

// Row 17: names that leave the bundle, NUL, very long names.
func TestRow17BadNames(t *testing.T) {
	src := newSource(t)
	for name, bad := range map[string]string{
		"dotdot":     "../x",
		"deep":       "blobs/../../x",
		"absolute":   "/tmp/x",
		"long":       strings.Repeat("a/", 2100) + "x",
		"backslash":  `..\x`,
		"blob-dots":  "blobs/sha256/../../../etc/passwd",
		"short-blob": "blobs/sha256/abc",
	} {
		t.Run(name, func(t *testing.T) {
			path := forged(t, src, func(es []entry) []entry { return append(es, regular(bad, []byte("x"))) })
			refused(t, path, "refusing the whole archive")
			if _, err := os.Stat(filepath.Join(filepath.Dir(path), "..", "x")); !os.IsNotExist(err) {
				t.Errorf("something was written outside the bundle's directory")
			}
		})
	}
	t.Run("nul", func(t *testing.T) {
		// Go's tar writer refuses NUL in names: forge a PAX header whose
		// path record has one.
		rec := "blobs/a\x00b"
		line := fmt.Sprintf(" path=%s\n", rec)
		line = fmt.Sprintf("%d%s", len(line)+2, line)
		pax := withType(rawHeader(t, &tar.Header{Typeflag: tar.TypeReg, Name: "PaxHeaders/x", Size: int64(len(line)), Mode: 0o644}), tar.TypeXHeader)
		pax = append(pax, line...)
		pax = append(pax, make([]byte, 512-len(line)%512)...)
		path := forged(t, src, func(es []entry) []entry {
			return append(es, entry{raw: pax}, regular("blobs/x", []byte("x")))
		})
		refused(t, path, "invalid tar header")
	})
}

// withType sets the type flag of a raw header block and fixes its
// checksum.
func withType(b []byte, typ byte) []byte {
	b[156] = typ
	copy(b[148:156], []byte("        "))
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Appendf(nil, "%06o\x00 ", sum))
	return b
}

// Row 18: links and devices are refused, whatever they point at.
func TestRow18Links(t *testing.T) {
	src := newSource(t)
	for name, hdr := range map[string]*tar.Header{
		"symlink":      {Typeflag: tar.TypeSymlink, Name: "evil", Linkname: "/etc", Mode: 0o777},
		"symlink-blob": {Typeflag: tar.TypeSymlink, Name: "blobs/sha256/" + strings.Repeat("b", 64), Linkname: "/etc/passwd", Mode: 0o777},
		"hardlink":     {Typeflag: tar.TypeLink, Name: "blobs/sha256/" + strings.Repeat("c", 64), Linkname: "oci-layout", Mode: 0o644},
		"fifo":         {Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o644},
		"chardev":      {Typeflag: tar.TypeChar, Name: "null", Mode: 0o644, Devmajor: 1, Devminor: 3},
	} {
		t.Run(name, func(t *testing.T) {
			path := forged(t, src, func(es []entry) []entry { return append(es, entry{hdr: hdr}) })
			refused(t, path, "only regular files and directories")
		})
	}
}

// Row 19: a header that claims a terabyte is refused without allocating
// it; sparse files are refused.
func TestRow19HugeAndSparse(t *testing.T) {
	src := newSource(t)
	t.Run("terabyte", func(t *testing.T) {
		path := forged(t, src, func(es []entry) []entry {
			hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "blobs/sha256/" + strings.Repeat("d", 64), Size: 1 << 40, Mode: 0o644}
			return append(es, entry{raw: rawHeader(t, hdr)})
		})
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		refused(t, path, "claims 1099511627776 bytes")
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 512<<20 {
			t.Errorf("allocated %d bytes for a bundle of a few KiB", grew)
		}
	})
	t.Run("sparse", func(t *testing.T) {
		path := forged(t, src, func(es []entry) []entry {
			e := regular("blobs/sparse", []byte("x"))
			e.hdr.Format = tar.FormatPAX
			e.hdr.PAXRecords = map[string]string{"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
			return append(es, e)
		})
		refused(t, path, "sparse")
	})
	t.Run("gnu-sparse-type", func(t *testing.T) {
		path := forged(t, src, func(es []entry) []entry {
			b := rawHeader(t, &tar.Header{Typeflag: tar.TypeReg, Name: "sparse", Size: 0, Mode: 0o644, Format: tar.FormatGNU})
			return append(es, entry{raw: withType(b, tar.TypeGNUSparse)})
		})
		refused(t, path, "sparse")
	})
}

// replaceManifest rewrites the manifest with digest old through edit,
// under its new digest, and updates index.json and the catalog.
func replaceManifest(t *testing.T, es []entry, old digest.Digest, edit func(map[string]any)) []entry {
	t.Helper()
	i := blobEntry(es, string(old))
	var m map[string]any
	if err := json.Unmarshal(es[i].data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	data, _ := json.Marshal(m)
	nd := digest.FromBytes(data)
	es[i] = regular("blobs/sha256/"+nd.Encoded(), data)
	for j := range es {
		switch es[j].hdr.Name {
		case "index.json":
			var idx ocispec.Index
			json.Unmarshal(es[j].data, &idx)
			for k := range idx.Manifests {
				if idx.Manifests[k].Digest == old {
					idx.Manifests[k].Digest, idx.Manifests[k].Size = nd, int64(len(data))
				}
			}
			b, _ := json.Marshal(idx)
			es[j] = regular("index.json", b)
		case CatalogFile:
			var c Catalog
			json.Unmarshal(es[j].data, &c)
			for k := range c.Images {
				if c.Images[k].Digest == old {
					c.Images[k].Digest = nd
				}
			}
			for k := range c.Blobs {
				if c.Blobs[k].Digest == old {
					c.Blobs[k] = Blob{Digest: nd, Size: int64(len(data)), MediaType: c.Blobs[k].MediaType}
				}
			}
			b, _ := json.Marshal(c)
			es[j] = regular(CatalogFile, b)
		}
	}
	return es
}

// Row 20: missing blobs, blobs whose content is not their digest, and
// sizes near 2^62 are found before anything is imported.
func TestRow20Content(t *testing.T) {
	src := newSource(t)
	app := digest.Digest(src.app)
	layer := func(t *testing.T) string {
		// The first layer of team/app:v1.
		path, _ := create(t, t.TempDir(), "b.tar", src.refs("team/app:v1"), nil)
		for _, e := range readEntries(t, path) {
			if e.hdr.Name == "blobs/sha256/"+app.Encoded() {
				var m ocispec.Manifest
				json.Unmarshal(e.data, &m)
				return string(m.Layers[0].Digest)
			}
		}
		t.Fatal("no manifest")
		return ""
	}(t)

	t.Run("missing-blob", func(t *testing.T) {
		path := forged(t, src, func(es []entry) []entry {
			i := blobEntry(es, layer)
			return append(es[:i], es[i+1:]...)
		})
		refused(t, path, layer+" (application/vnd.oci.image.layer.v1.tar+gzip) referenced by manifest "+src.app+" is missing")
	})
	t.Run("missing-manifest", func(t *testing.T) {
		path := forged(t, src, func(es []entry) []entry {
			i := blobEntry(es, src.app)
			return append(es[:i], es[i+1:]...)
		})
		refused(t, path, "manifest "+src.app)
	})
	t.Run("corrupt-blob", func(t *testing.T) {
		path := forged(t, src, func(es []entry) []entry {
			i := blobEntry(es, layer)
			es[i].data[len(es[i].data)/2] ^= 0xff
			return es
		})
		refused(t, path, "blob "+layer+": its content hashes to")
	})
	t.Run("size-2^62", func(t *testing.T) {
		path := forged(t, src, func(es []entry) []entry {
			return replaceManifest(t, es, app, func(m map[string]any) {
				m["layers"].([]any)[0].(map[string]any)["size"] = int64(1) << 62
			})
		})
		refused(t, path, "says 4611686018427387904")
	})
	t.Run("smuggled-name", func(t *testing.T) {
		path := forged(t, src, func(es []entry) []entry {
			for j := range es {
				if es[j].hdr.Name == "index.json" {
					var idx ocispec.Index
					json.Unmarshal(es[j].data, &idx)
					d := idx.Manifests[0]
					d.Annotations = map[string]string{ocispec.AnnotationRefName: "docker.io/library/nginx:latest"}
					idx.Manifests = append(idx.Manifests, d)
					b, _ := json.Marshal(idx)
					es[j] = regular("index.json", b)
				}
			}
			return es
		})
		refused(t, path, "index.json names docker.io/library/nginx:latest, which the catalog does not list")
	})
	t.Run("no-catalog", func(t *testing.T) {
		path := forged(t, src, func(es []entry) []entry {
			for j := range es {
				if es[j].hdr.Name == CatalogFile {
					return append(es[:j], es[j+1:]...)
				}
			}
			return es
		})
		_, err := Open(path)
		if !errors.Is(err, ErrNotBundle) || !errors.Is(err, transfer.ErrVerification) {
			t.Errorf("Open: %v", err)
		}
		refused(t, path, "not a ferry bundle")
	})
}

// Row 21: a truncated file, and missing, corrupt or truncated parts, are
// named, with the offset where the bundle breaks off.
func TestRow21Parts(t *testing.T) {
	src := newSource(t).withBig(t)
	const size = 1 << 20
	split := func(t *testing.T) (string, []string) {
		path, res := create(t, t.TempDir(), "b.tar", src.refs("big:v1", "team/app:v1"), func(o *CreateOptions) { o.Split = size })
		if len(res.Files) < 4 {
			t.Fatalf("only %d parts", len(res.Files))
		}
		return path, res.Files
	}
	t.Run("truncated-file", func(t *testing.T) {
		path, _ := create(t, t.TempDir(), "b.tar", src.refs("big:v1"), nil)
		if err := os.Truncate(path, 2<<20); err != nil {
			t.Fatal(err)
		}
		refused(t, path, "part b.tar does not match b.tar.sha256: it is corrupt or truncated (2097152 bytes")
	})
	t.Run("missing-part", func(t *testing.T) {
		path, files := split(t)
		os.Remove(files[1])
		refused(t, path, "part b.tar.001 is missing: SHA256SUMS lists it")
	})
	t.Run("missing-last-part", func(t *testing.T) {
		path, files := split(t)
		os.Remove(files[len(files)-1])
		refused(t, path, fmt.Sprintf("part b.tar.%03d is missing", len(files)-1))
	})
	t.Run("corrupt-part", func(t *testing.T) {
		path, files := split(t)
		data, _ := os.ReadFile(files[2])
		data[size/2] ^= 0xff
		os.WriteFile(files[2], data, 0o644)
		refused(t, path, "part b.tar.002 does not match SHA256SUMS: it is corrupt or truncated (1048576 bytes, at offset 2097152")
		// The blob it falls in is named too.
		rep, _ := Verify(context.Background(), path)
		if !strings.Contains(problems(rep), "its content hashes to") {
			t.Errorf("no blob named:\n%s", problems(rep))
		}
	})
	t.Run("truncated-part", func(t *testing.T) {
		path, files := split(t)
		os.Truncate(files[1], 1000)
		refused(t, path, "part b.tar.001 is truncated: 1000 bytes where every part but the last has 1048576; the bundle breaks off at offset 1049576")
	})
	t.Run("no-checksums", func(t *testing.T) {
		path, _ := split(t)
		os.Remove(filepath.Join(filepath.Dir(path), ChecksumsFile))
		refused(t, path, "SHA256SUMS: no such file")
	})
	t.Run("no-checksum-file", func(t *testing.T) {
		path, _ := create(t, t.TempDir(), "b.tar", src.refs("team/app:v1"), nil)
		os.Remove(path + ".sha256")
		refused(t, path, "b.tar.sha256: no such file")
	})
}
