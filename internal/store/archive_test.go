package store

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// archiveFixture is a store with a tagged image, a signature and an
// unreachable blob, and its archive.
type archiveFixture struct {
	s        *Store
	img      testImage
	sig      ocispec.Descriptor
	stray    ocispec.Descriptor
	tarBytes []byte
}

func newArchiveFixture(t *testing.T) archiveFixture {
	t.Helper()
	var f archiveFixture
	f.s = newStore(t)
	f.img = putImage(t, f.s, "docker.io/library/app:1.0", "layer one", "layer two")
	f.sig = putReferrer(t, f.s, f.img.manifest, "application/vnd.example.sig", map[string]string{"k": "v"})
	f.stray = putBlob(t, f.s, "application/octet-stream", []byte("not reachable"))
	var buf bytes.Buffer
	if err := WriteArchive(context.Background(), &buf, f.s); err != nil {
		t.Fatal(err)
	}
	f.tarBytes = buf.Bytes()
	return f
}

func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "archive.tar")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestArchiveRoundTrip(t *testing.T) {
	f := newArchiveFixture(t)
	ctx := context.Background()
	path := writeFile(t, f.tarBytes)
	a, err := OpenArchive(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	desc, err := a.Resolve(ctx, "docker.io/library/app:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != f.img.manifest.Digest {
		t.Errorf("Resolve = %s, want %s", desc.Digest, f.img.manifest.Digest)
	}
	if names, _ := a.Names(ctx); len(names) != 1 || names[0] != "docker.io/library/app:1.0" {
		t.Errorf("Names = %v", names)
	}
	for _, d := range []ocispec.Descriptor{f.img.manifest, f.img.config, f.img.layers[0], f.img.layers[1], f.sig} {
		size, err := a.Stat(ctx, d.Digest)
		if err != nil || size != d.Size {
			t.Errorf("Stat(%s) = %d, %v; want %d", d.Digest, size, err, d.Size)
		}
		if got, want := readAll(t, a, d.Digest), readAll(t, f.s, d.Digest); !bytes.Equal(got, want) {
			t.Errorf("blob %s differs between store and archive", d.Digest)
		}
	}
	if _, err := a.Stat(ctx, f.stray.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("the unreachable blob is in the archive: %v", err)
	}
	refs, err := a.Referrers(ctx, f.img.manifest.Digest)
	if err != nil || len(refs) != 1 || refs[0].Digest != f.sig.Digest || refs[0].Annotations["k"] != "v" {
		t.Errorf("Referrers = %+v, %v", refs, err)
	}
	// Seekable and a ReaderAt, for Range requests.
	rc, size, err := a.ReadBlob(ctx, f.img.layers[1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Seek(size-4, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	tail, _ := io.ReadAll(rc)
	if whole := readAll(t, f.s, f.img.layers[1].Digest); !bytes.Equal(tail, whole[len(whole)-4:]) {
		t.Errorf("after Seek read %x", tail)
	}
	if _, ok := rc.(io.ReaderAt); !ok {
		t.Error("archive blob reader is not an io.ReaderAt")
	}
	// A server may take the rest of the blob as a file of its own, to
	// send it with sendfile: it reads what the reader has left.
	if _, err := rc.Seek(size-4, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	file, ok := rc.(FileBacked).File()
	if !ok {
		t.Fatal("a blob of an archive file is not FileBacked")
	}
	rest, _ := io.ReadAll(io.LimitReader(file, 4))
	file.Close()
	if !bytes.Equal(rest, tail) {
		t.Errorf("File() read %x, want %x", rest, tail)
	}
	if _, err := rc.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	if file, ok := rc.(FileBacked).File(); ok {
		file.Close()
		t.Error("File() at the end of the blob gave a file")
	}
	// Once another file is renamed over the archive's path, File() does
	// not hand it out; the reader still reads the archive it opened.
	other := path + ".new"
	if err := os.WriteFile(other, bytes.Repeat([]byte{'x'}, len(f.tarBytes)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Seek(size-4, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if file, ok := rc.(FileBacked).File(); ok {
		file.Close()
		t.Error("File() handed out the file that replaced the archive")
	}
	if again, _ := io.ReadAll(rc); !bytes.Equal(again, tail) {
		t.Errorf("after the rename the reader read %x, want %x", again, tail)
	}
	if problems, err := a.Check(ctx); err != nil || len(problems) != 0 {
		t.Errorf("Check = %v, %v", problems, err)
	}
	if _, _, err := a.OpenFile("./oci-layout"); err != nil {
		t.Errorf("OpenFile(./oci-layout): %v", err)
	}

	// Deterministic: the same layout gives the same bytes.
	var again bytes.Buffer
	if err := WriteArchive(ctx, &again, f.s); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), f.tarBytes) {
		t.Error("WriteArchive is not deterministic")
	}
	// Only regular files and directories, with fixed metadata.
	tr := tar.NewReader(bytes.NewReader(f.tarBytes))
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeDir {
			t.Errorf("entry %s has type %c", hdr.Name, hdr.Typeflag)
		}
		if !hdr.ModTime.Equal(time.Unix(0, 0)) || hdr.Uid != 0 || hdr.Uname != "" {
			t.Errorf("entry %s has mtime %v uid %d uname %q", hdr.Name, hdr.ModTime, hdr.Uid, hdr.Uname)
		}
	}
	if len(names) < 4 || names[0] != "oci-layout" || names[1] != "index.json" || names[2] != "blobs/" || names[3] != "blobs/sha256/" {
		t.Errorf("entry order = %v", names)
	}
}

func TestWriteArchiveRefusesCorruptBlob(t *testing.T) {
	s := newStore(t)
	img := putImage(t, s, "v1", "layer")
	data := readAll(t, s, img.layers[0].Digest)
	data[0] ^= 1
	os.WriteFile(s.blobPath(img.layers[0].Digest), data, 0o644)
	err := WriteArchive(context.Background(), io.Discard, s)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), string(img.layers[0].Digest)) {
		t.Errorf("WriteArchive = %v, want ErrDigestMismatch naming the layer", err)
	}
	os.Remove(s.blobPath(img.layers[0].Digest))
	if err := WriteArchive(context.Background(), io.Discard, s); !errors.Is(err, ErrNotFound) {
		t.Errorf("WriteArchive with a missing layer = %v, want ErrNotFound", err)
	}
}

// tarEntry is one entry of a hand-made tar.
type tarEntry struct {
	hdr  tar.Header
	body []byte
}

// readEntries returns the entries of a tar.
func readEntries(t *testing.T, data []byte) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		out = append(out, tarEntry{*hdr, body})
	}
}

// buildTar writes entries; raw, when set, is appended after them (before
// the end-of-archive marker) for headers tar.Writer cannot produce.
func buildTar(t *testing.T, entries []tarEntry, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("writing %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	tw.Flush()
	buf.Write(raw)
	buf.Write(make([]byte, 1024))
	return buf.Bytes()
}

// rawHeader returns a 512-byte header written by tar.Writer for hdr, with
// its type flag replaced by typ and the checksum fixed.
func rawHeader(t *testing.T, hdr tar.Header, typ byte) []byte {
	t.Helper()
	hdr.Typeflag = typ
	b, err := entryHeader(hdr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpenArchiveRejectsBadEntries(t *testing.T) {
	f := newArchiveFixture(t)
	good := readEntries(t, f.tarBytes)
	blobName := "blobs/sha256/" + f.img.layers[0].Digest.Encoded()
	reg := func(name string, body string) tarEntry {
		return tarEntry{tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(body)), Mode: 0o644}, []byte(body)}
	}
	long := strings.Repeat("a/", 2100) + "x"
	cases := []struct {
		name   string
		extra  []tarEntry
		raw    []byte
		naming string // what the error must contain
	}{
		{"parent dir", []tarEntry{reg("../evil", "x")}, nil, "../evil"},
		{"parent dir inside", []tarEntry{reg("blobs/../../evil", "x")}, nil, "blobs/../../evil"},
		{"absolute", []tarEntry{reg("/etc/passwd", "x")}, nil, "/etc/passwd"},
		{"backslash", []tarEntry{reg(`..\evil`, "x")}, nil, `..\\evil`},
		{"too long", []tarEntry{reg(long, "x")}, nil, "a/a/a/a/"},
		{"symlink", []tarEntry{{tar.Header{Typeflag: tar.TypeSymlink, Name: "blobs/sha256/" + strings.Repeat("0", 64), Linkname: "/etc/passwd"}, nil}}, nil, strings.Repeat("0", 64)},
		{"hardlink", []tarEntry{{tar.Header{Typeflag: tar.TypeLink, Name: "evil-link", Linkname: "index.json"}, nil}}, nil, "evil-link"},
		{"char device", []tarEntry{{tar.Header{Typeflag: tar.TypeChar, Name: "dev-null", Devmajor: 1, Devminor: 3}, nil}}, nil, "dev-null"},
		{"fifo", []tarEntry{{tar.Header{Typeflag: tar.TypeFifo, Name: "a-fifo"}, nil}}, nil, "a-fifo"},
		{"bad blob name", []tarEntry{reg("blobs/sha256/ABCDEF", "x")}, nil, "blobs/sha256/ABCDEF"},
		{"unknown algorithm", []tarEntry{reg("blobs/md5/d41d8cd98f00b204e9800998ecf8427e", "x")}, nil, "blobs/md5/"},
		{"too deep under blobs", []tarEntry{reg("blobs/sha256/x/y", "x")}, nil, "blobs/sha256/x/y"},
		{"duplicate", []tarEntry{reg(blobName, "other bytes")}, nil, blobName},
		{"sparse (PAX 0.1)", nil, paxEntry(t, "sparse-pax", []byte("x"), "GNU.sparse.major=0", "GNU.sparse.minor=1", "GNU.sparse.numblocks=1", "GNU.sparse.map=0,1", "GNU.sparse.size=1", "GNU.sparse.name=sparse-pax"), "sparse-pax"},
		{"sparse (GNU)", nil, rawHeader(t, tar.Header{Typeflag: tar.TypeReg, Name: "sparse-gnu", Format: tar.FormatGNU}, tar.TypeGNUSparse), "sparse-gnu"},
		{"declared 1 TB", nil, rawHeader(t, tar.Header{Typeflag: tar.TypeReg, Name: "huge", Size: 1 << 40, Format: tar.FormatGNU}, tar.TypeReg), "huge"},
		{"declared 2^62", nil, rawHeader(t, tar.Header{Typeflag: tar.TypeReg, Name: "huger", Size: 1 << 62, Format: tar.FormatGNU}, tar.TypeReg), "huger"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			entries := append(append([]tarEntry{}, good...), c.extra...)
			data := buildTar(t, entries, c.raw)
			a, err := OpenArchive(writeFile(t, data))
			if err == nil {
				a.Close()
				t.Fatal("OpenArchive accepted the archive")
			}
			t.Log(err)
			if !errors.Is(err, ErrInvalidArchive) {
				t.Errorf("error %v does not wrap ErrInvalidArchive", err)
			}
			if !strings.Contains(err.Error(), c.naming) {
				t.Errorf("error %q does not name %q", err, c.naming)
			}
		})
	}

	// The same entries without the bad one open fine, and a NUL in a PAX
	// path (which Go's tar reader refuses as a malformed header) is
	// rejected too.
	if a, err := OpenArchive(writeFile(t, buildTar(t, good, nil))); err != nil {
		t.Fatalf("the good entries alone: %v", err)
	} else {
		a.Close()
	}
	nul := paxEntry(t, "nul", []byte("x"), "path=blobs\x00../../evil")
	if _, err := OpenArchive(writeFile(t, buildTar(t, good, nul))); !errors.Is(err, ErrInvalidArchive) {
		t.Errorf("NUL in a PAX path: %v, want ErrInvalidArchive", err)
	}
}

// paxEntry returns a PAX extended header with the given records (written
// by hand: tar.Writer refuses NUL and drops GNU.sparse records) followed by
// the regular file it describes.
func paxEntry(t *testing.T, name string, body []byte, records ...string) []byte {
	t.Helper()
	var data string
	for _, rec := range records {
		rec += "\n"
		for n := len(rec) + 2; ; n++ {
			line := strconv.Itoa(n) + " " + rec
			if len(line) == n {
				data += line
				break
			}
		}
	}
	out := rawHeader(t, tar.Header{Typeflag: tar.TypeReg, Name: "PaxHeaders/" + name, Size: int64(len(data))}, tar.TypeXHeader)
	out = append(out, padBlock([]byte(data))...)
	out = append(out, rawHeader(t, tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(body))}, tar.TypeReg)...)
	return append(out, padBlock(body)...)
}

func padBlock(b []byte) []byte {
	return append(append([]byte{}, b...), make([]byte, (512-len(b)%512)%512)...)
}

func TestOpenArchiveAcceptsDotSlashNames(t *testing.T) {
	f := newArchiveFixture(t)
	var entries []tarEntry
	entries = append(entries, tarEntry{tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755}, nil})
	for _, e := range readEntries(t, f.tarBytes) {
		e.hdr.Name = "./" + e.hdr.Name
		entries = append(entries, e)
	}
	a, err := OpenArchive(writeFile(t, buildTar(t, entries, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	desc, err := a.Resolve(context.Background(), "docker.io/library/app:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, a, desc.Digest); !bytes.Equal(got, f.img.raw) {
		t.Error("manifest bytes differ")
	}
}

func TestOpenArchiveNotALayout(t *testing.T) {
	f := newArchiveFixture(t)
	var noIndex []tarEntry
	for _, e := range readEntries(t, f.tarBytes) {
		if e.hdr.Name != "index.json" {
			noIndex = append(noIndex, e)
		}
	}
	p := writeFile(t, buildTar(t, noIndex, nil))
	if _, err := OpenArchive(p); !errors.Is(err, ErrNotLayout) || !strings.Contains(err.Error(), p) {
		t.Errorf("archive without index.json: %v, want ErrNotLayout naming %s", err, p)
	}
	missing := filepath.Join(t.TempDir(), "missing.tar")
	if _, err := OpenArchive(missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing file: %v, want ErrNotFound", err)
	}
	// Truncated in the middle of a blob.
	p = writeFile(t, f.tarBytes[:len(f.tarBytes)-1024-600])
	if _, err := OpenArchive(p); !errors.Is(err, ErrInvalidArchive) {
		t.Errorf("truncated archive: %v, want ErrInvalidArchive", err)
	}
}

func TestArchiveCheckFindsCorruptBlob(t *testing.T) {
	f := newArchiveFixture(t)
	entries := readEntries(t, f.tarBytes)
	target := "blobs/sha256/" + f.img.layers[1].Digest.Encoded()
	found := false
	for i := range entries {
		if entries[i].hdr.Name == target {
			entries[i].body[3] ^= 0xff
			found = true
		}
	}
	if !found {
		t.Fatalf("no entry %s", target)
	}
	a, err := OpenArchive(writeFile(t, buildTar(t, entries, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	problems, err := a.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || problems[0].Digest != f.img.layers[1].Digest || !errors.Is(problems[0].Err, ErrDigestMismatch) {
		t.Errorf("problems = %v, want one digest mismatch of %s", problems, f.img.layers[1].Digest)
	}
}
