package store

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzOpenArchive: any tar either opens as an archive or fails with an
// error wrapping ErrInvalidArchive or ErrNotLayout. An archive that opens
// holds only clean entry names that lie inside its bytes (ROBUSTNESS rows
// 17–19), and Check reports every blob whose content does not hash to its
// name and every index.json entry that is missing or has another size
// (row 20).
//
// The input describes the tar rather than being it (see fuzzArchive):
// random bytes rarely get past a tar header's checksum, and the fuzzer
// minimizes every input that finds new coverage with a number of runs
// that grows with the square of its size, so raw archives of a few
// kilobytes (and inputs grown past a kilobyte) kept it minimizing, not
// fuzzing, for a minute each: the execution count stood still. The raw
// trailer still reaches the tar reader byte by byte. The bytes are read
// in memory through OpenArchiveReaderAt, the scanner OpenArchive runs over
// a file.
func FuzzOpenArchive(f *testing.F) {
	for _, s := range archiveSeeds() {
		f.Add(s.index, s.manifest, s.extra, s.kinds, s.sizes, s.trailer)
	}
	f.Fuzz(func(t *testing.T, index, manifest []byte, extra string, kinds, sizes, trailer []byte) {
		if len(index)+len(manifest)+len(extra)+len(kinds)+len(sizes)+len(trailer) > maxFuzzArchiveInput {
			return
		}
		data, err := fuzzArchive{index, manifest, extra, kinds, sizes, trailer}.build()
		if err != nil {
			return // a header tar.Writer cannot encode
		}
		checkArchiveBytes(t, data)
	})
}

// maxFuzzArchiveInput bounds the inputs FuzzOpenArchive tries, so that
// minimizing one takes seconds; larger ones add nothing the tar format
// does not already repeat.
const maxFuzzArchiveInput = 1024

// checkArchiveBytes opens data as an archive and checks what
// FuzzOpenArchive promises.
func checkArchiveBytes(t *testing.T, data []byte) {
	ctx := context.Background()
	a, err := OpenArchiveReaderAt(bytes.NewReader(data), int64(len(data)), "fuzz.tar")
	if err != nil {
		if !errors.Is(err, ErrInvalidArchive) && !errors.Is(err, ErrNotLayout) {
			t.Fatalf("error %q wraps neither ErrInvalidArchive nor ErrNotLayout", err)
		}
		return
	}
	defer a.Close()
	for name, sec := range a.files {
		// Names need not be UTF-8: nothing is extracted under them.
		if !fs.ValidPath(strings.ToValidUTF8(name, "?")) || strings.ContainsAny(name, "\x00\\") || len(name) > maxEntryName {
			t.Fatalf("accepted the entry name %q", name)
		}
		if sec.off < 0 || sec.size < 0 || sec.off+sec.size > int64(len(data)) {
			t.Fatalf("entry %q claims bytes %d+%d of a %d-byte archive", name, sec.off, sec.size, len(data))
		}
	}
	problems, err := a.Check(ctx)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	reported := map[digest.Digest]bool{}
	for _, p := range problems {
		reported[p.Digest] = true
	}
	for d, sec := range a.blobs {
		if d.Algorithm().FromBytes(data[sec.off:sec.off+sec.size]) != d && !reported[d] {
			t.Fatalf("Check reports nothing about blob %s, whose content hashes to something else", d)
		}
	}
	idx, err := a.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, desc := range idx.Manifests {
		if size, err := a.Stat(ctx, desc.Digest); (err != nil || size != desc.Size) && !reported[desc.Digest] {
			t.Fatalf("Check reports nothing about index.json entry %s (%d bytes): stat gives %d, %v", desc.Digest, desc.Size, size, err)
		}
		if _, err := a.Referrers(ctx, desc.Digest); err != nil && ValidateDigest(desc.Digest) == nil {
			t.Fatalf("Referrers(%s): %v", desc.Digest, err)
		}
	}
	if _, err := a.Names(ctx); err != nil {
		t.Fatal(err)
	}
}

// fuzzConfig is the config blob of every fuzzArchive.
const fuzzConfig = `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`

// fuzzArchive describes a tar for FuzzOpenArchive. Its entries are, in
// order: oci-layout, index.json, the manifest blob, the config blob
// (fuzzConfig), and one entry per line of extra ("NAME" or
// "NAME=CONTENT"). In index and manifest, "<M>" and "<m>" stand for the
// manifest's digest and size, "<C>" and "<c>" for the config's, so that
// mutations keep the references valid as often as they break them.
type fuzzArchive struct {
	index, manifest []byte
	extra           string
	// kinds[i], when not 0, is the type flag of entry i.
	kinds []byte
	// sizes[i] is added to the size the header of entry i declares, as an
	// int8; -128 declares a terabyte.
	sizes []byte
	// trailer is appended before the end-of-archive marker, as is.
	trailer []byte
}

func (fa fuzzArchive) build() ([]byte, error) {
	config := []byte(fuzzConfig)
	cd := digest.FromBytes(config)
	manifest := expand(fa.manifest, "<C>", cd.String(), "<c>", strconv.Itoa(len(config)))
	md := digest.FromBytes(manifest)
	index := expand(fa.index, "<M>", md.String(), "<m>", strconv.Itoa(len(manifest)), "<C>", cd.String(), "<c>", strconv.Itoa(len(config)))
	names := []string{"oci-layout", "index.json", "blobs/sha256/" + md.Encoded(), "blobs/sha256/" + cd.Encoded()}
	bodies := [][]byte{[]byte(`{"imageLayoutVersion":"1.0.0"}`), index, manifest, config}
	if fa.extra != "" {
		for line := range strings.SplitSeq(fa.extra, "\n") {
			name, content, _ := strings.Cut(line, "=")
			names = append(names, name)
			bodies = append(bodies, []byte(content))
		}
	}
	var out bytes.Buffer
	for i, name := range names {
		hdr := tar.Header{Name: name, Typeflag: tar.TypeReg, Size: int64(len(bodies[i])), Mode: 0o644}
		if i < len(fa.kinds) && fa.kinds[i] != 0 {
			hdr.Typeflag = fa.kinds[i]
		}
		if i < len(fa.sizes) {
			if d := int8(fa.sizes[i]); d == -128 {
				hdr.Size = 1 << 40
			} else {
				hdr.Size += int64(d)
			}
		}
		h, err := entryHeader(hdr)
		if err != nil {
			return nil, err
		}
		out.Write(h)
		out.Write(bodies[i])
		out.Write(make([]byte, (512-len(bodies[i])%512)%512))
	}
	out.Write(fa.trailer)
	out.Write(make([]byte, 1024))
	return out.Bytes(), nil
}

// expand replaces each old string in b with its new one.
func expand(b []byte, oldnew ...string) []byte {
	return []byte(strings.NewReplacer(oldnew...).Replace(string(b)))
}

// entryHeader returns the header blocks tar.Writer writes for hdr (with
// the PAX or GNU long-name blocks before it when the name needs them),
// with the type flag of the last block set to hdr.Typeflag whatever it is:
// tar.Writer refuses some types, such as sparse files.
func entryHeader(hdr tar.Header) ([]byte, error) {
	typ := hdr.Typeflag
	hdr.Typeflag = tar.TypeReg
	var buf bytes.Buffer
	if err := tar.NewWriter(&buf).WriteHeader(&hdr); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	last := b[len(b)-512:]
	last[156] = typ
	copy(last[148:156], "        ")
	sum := 0
	for _, c := range last {
		sum += int(c)
	}
	copy(last[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b, nil
}

// archiveSeeds returns the seed corpus of FuzzOpenArchive: a valid image
// with a referrer, and one seed per rule of OpenArchive and Check.
func archiveSeeds() []fuzzArchive {
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"<C>","size":<c>},"layers":[]}`)
	index := []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"<M>","size":<m>,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`)
	referrer := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"<C>","size":<c>},"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"<C>","size":<c>}}`)
	ok := fuzzArchive{index: index, manifest: manifest}
	with := func(change func(*fuzzArchive)) fuzzArchive {
		s := ok
		change(&s)
		return s
	}
	var huge bytes.Buffer
	if h, err := entryHeader(tar.Header{Name: "huge", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644}); err == nil {
		huge.Write(h)
	}
	zero := "blobs/sha256/" + strings.Repeat("0", 64)
	return []fuzzArchive{
		ok,
		with(func(s *fuzzArchive) { s.manifest = referrer }),
		with(func(s *fuzzArchive) {
			s.index = []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"<M>","size":1}]}`)
		}),
		with(func(s *fuzzArchive) {
			s.index = []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:../../x","size":1}]}`)
		}),
		with(func(s *fuzzArchive) { s.extra = zero + "=not zeros" }),
		with(func(s *fuzzArchive) { s.extra = "../escape=x\n/abs=x" }),
		with(func(s *fuzzArchive) { s.extra = "./dir\n./dir/file=x"; s.kinds = []byte{0, 0, 0, 0, tar.TypeDir} }),
		with(func(s *fuzzArchive) { s.extra = "link"; s.kinds = []byte{0, 0, 0, 0, tar.TypeSymlink} }),
		with(func(s *fuzzArchive) { s.extra = "hard"; s.kinds = []byte{0, 0, 0, 0, tar.TypeLink} }),
		with(func(s *fuzzArchive) { s.extra = "sparse=x"; s.kinds = []byte{0, 0, 0, 0, tar.TypeGNUSparse} }),
		with(func(s *fuzzArchive) { s.sizes = []byte{0, 0, 0xff} }),  // the manifest declares a byte less
		with(func(s *fuzzArchive) { s.sizes = []byte{0, 0x80} }),     // index.json declares a terabyte
		with(func(s *fuzzArchive) { s.trailer = huge.Bytes() }),      // so does an entry after the layout
		with(func(s *fuzzArchive) { s.trailer = []byte("garbage") }), // a damaged header
	}
}
