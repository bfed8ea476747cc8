package store

import (
	"archive/tar"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Limits of OpenArchive (ROBUSTNESS rows 17-19).
const (
	maxEntryName      = 4096
	maxArchiveEntries = 1_000_000
)

// Archive is a read-only OCI image layout inside a tar file (what skopeo
// calls oci-archive), read in place by seeking: nothing is extracted.
// It is safe for concurrent use.
//
// ReadBlob returns the bytes stored under the blob's name without hashing
// them; a caller that imports or serves them verifies the digest as it
// streams, or runs Check first.
type Archive struct {
	path  string
	r     io.ReaderAt        // the tar's bytes
	c     io.Closer          // what Close closes; nil for none
	files map[string]section // every regular file, by name without "./"
	blobs map[digest.Digest]section
	index *ocispec.Index

	refMu sync.Mutex
	refs  map[digest.Digest][]ocispec.Descriptor
}

// section is where an entry's content lies in the tar file.
type section struct{ off, size int64 }

// OpenArchive opens the OCI layout in the tar file at path. It reads the
// tar headers once, and only the contents of oci-layout and index.json.
//
// The whole archive is rejected, with an error wrapping ErrInvalidArchive
// that names the entry, when any entry name is absolute, contains "..", a
// backslash or NUL, or is longer than 4096 bytes; when an entry is anything
// but a regular file or a directory (symlinks, hard links, devices, sparse
// files); when an entry claims more bytes than the file holds; when a file
// under blobs/ is not named blobs/<sha256|sha512>/<valid hex>; when a file
// name appears twice; or past 1,000,000 entries. "./"-prefixed names are
// accepted. A tar without oci-layout or index.json is an error wrapping
// ErrNotLayout.
func OpenArchive(path string) (*Archive, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: OCI archive %s does not exist: check the path", ErrNotFound, path)
		}
		return nil, fmt.Errorf("opening OCI archive %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening OCI archive %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file: an OCI archive is read by seeking", ErrInvalidArchive, path)
	}
	a, err := scanArchive(f, fi.Size(), path)
	if err != nil {
		f.Close()
		return nil, err
	}
	a.c = f
	return a, nil
}

// OpenArchiveReaderAt opens the OCI layout in a tar of size bytes read
// through r, with the same checks as OpenArchive; name is how errors and
// Path call it. It suits a tar that is not one file, such as a bundle
// split into parts read as one stream. Close does not close r.
func OpenArchiveReaderAt(r io.ReaderAt, size int64, name string) (*Archive, error) {
	if size < 0 {
		return nil, fmt.Errorf("%w: %s: negative size %d", ErrInvalidArchive, name, size)
	}
	return scanArchive(r, size, name)
}

func scanArchive(r io.ReaderAt, fileSize int64, path string) (*Archive, error) {
	f := io.NewSectionReader(r, 0, fileSize)
	a := &Archive{path: path, r: r, files: map[string]section{}, blobs: map[digest.Digest]section{}}
	bad := func(name, format string, args ...any) error {
		return fmt.Errorf("%w: %s: entry %.200q: %s: refusing the whole archive", ErrInvalidArchive, path, name, fmt.Sprintf(format, args...))
	}
	var layoutData, indexData []byte
	tr := tar.NewReader(f)
	prev := "(start of archive)"
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return nil, fmt.Errorf("%w: %s: reading the header of entry %d (after %.200q): %v: the archive is damaged or truncated", ErrInvalidArchive, path, n+1, prev, err)
		}
		if n >= maxArchiveEntries {
			return nil, bad(hdr.Name, "more than %d entries", maxArchiveEntries)
		}
		prev = hdr.Name
		name, err := cleanEntryName(hdr.Name)
		if err != nil {
			return nil, bad(hdr.Name, "%v", err)
		}
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				return nil, bad(hdr.Name, "sparse files are not allowed")
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeXGlobalHeader:
			continue // metadata, not a file; Go does not apply it to entries
		case tar.TypeReg:
		default:
			return nil, bad(hdr.Name, "type %s is not allowed (only regular files and directories)", typeName(hdr.Typeflag))
		}
		if name == "." {
			return nil, bad(hdr.Name, "a regular file cannot be the archive root")
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, fmt.Errorf("reading OCI archive %s: %w", path, err)
		}
		if hdr.Size < 0 || hdr.Size > fileSize-off {
			return nil, bad(hdr.Name, "it claims %d bytes, but only %d follow in the file: the archive is truncated or forged", hdr.Size, max(fileSize-off, 0))
		}
		if _, dup := a.files[name]; dup {
			return nil, bad(hdr.Name, "the name appears twice")
		}
		sec := section{off: off, size: hdr.Size}
		a.files[name] = sec

		switch {
		case name == ocispec.ImageLayoutFile:
			if layoutData, err = readEntry(tr, hdr); err != nil {
				return nil, bad(hdr.Name, "%v", err)
			}
		case name == ocispec.ImageIndexFile:
			if indexData, err = readEntry(tr, hdr); err != nil {
				return nil, bad(hdr.Name, "%v", err)
			}
		case strings.HasPrefix(name, ocispec.ImageBlobsDir+"/"):
			parts := strings.Split(name, "/")
			if len(parts) != 3 {
				return nil, bad(hdr.Name, "files under blobs/ must be named blobs/<algorithm>/<hex>")
			}
			d := digest.NewDigestFromEncoded(digest.Algorithm(parts[1]), parts[2])
			if err := ValidateDigest(d); err != nil {
				return nil, fmt.Errorf("%w: %s: entry %.200q: %w: refusing the whole archive", ErrInvalidArchive, path, hdr.Name, err)
			}
			a.blobs[d] = sec
		}
	}
	if layoutData == nil {
		return nil, fmt.Errorf("%w: %s has no %s entry: is it an OCI archive (not a docker save tar)?", ErrNotLayout, path, ocispec.ImageLayoutFile)
	}
	if err := checkLayoutFile(layoutData); err != nil {
		return nil, fmt.Errorf("%w: %s: %s: %v", ErrNotLayout, path, ocispec.ImageLayoutFile, err)
	}
	if indexData == nil {
		return nil, fmt.Errorf("%w: %s has no %s entry: the archive is incomplete", ErrNotLayout, path, ocispec.ImageIndexFile)
	}
	idx, err := decodeIndex(strings.NewReader(string(indexData)), path+": "+ocispec.ImageIndexFile, maxSmallFile)
	if err != nil {
		return nil, err
	}
	a.index = idx
	return a, nil
}

// readEntry reads a small entry (oci-layout, index.json) without trusting
// its declared size.
func readEntry(tr *tar.Reader, hdr *tar.Header) ([]byte, error) {
	if hdr.Size > maxSmallFile {
		return nil, fmt.Errorf("%d bytes, the limit is %d", hdr.Size, maxSmallFile)
	}
	data, err := io.ReadAll(io.LimitReader(tr, maxSmallFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		data = []byte{} // present but empty: still "present"
	}
	return data, nil
}

// cleanEntryName validates a tar entry name (ROBUSTNESS row 17) and returns
// it without "./" prefixes and trailing slash; "." is the archive root.
func cleanEntryName(raw string) (string, error) {
	switch {
	case raw == "":
		return "", errors.New("empty name")
	case len(raw) > maxEntryName:
		return "", fmt.Errorf("name of %d bytes, the limit is %d", len(raw), maxEntryName)
	case strings.IndexByte(raw, 0) >= 0:
		return "", errors.New("NUL in the name")
	case strings.HasPrefix(raw, "/"):
		return "", errors.New("absolute path")
	case strings.Contains(raw, `\`):
		return "", errors.New("backslash in the name")
	case len(raw) >= 2 && raw[1] == ':' && ('a' <= raw[0]|0x20 && raw[0]|0x20 <= 'z'):
		return "", errors.New("drive letter in the name")
	}
	n := raw
	for strings.HasPrefix(n, "./") {
		n = n[2:]
	}
	n = strings.TrimSuffix(n, "/")
	if n == "" || n == "." {
		return ".", nil
	}
	for _, part := range strings.Split(n, "/") {
		switch part {
		case "..":
			return "", errors.New(`".." in the path`)
		case "", ".":
			return "", errors.New("empty or \".\" path element")
		}
	}
	return n, nil
}

func typeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "FIFO"
	case tar.TypeGNUSparse:
		return "sparse file"
	}
	return fmt.Sprintf("%q", t)
}

// Path returns the file name of the archive, as given to OpenArchive.
func (a *Archive) Path() string { return a.path }

// Close closes the archive file. Readers returned by ReadBlob stop working.
func (a *Archive) Close() error {
	if a.c == nil {
		return nil
	}
	return a.c.Close()
}

// Stat returns the size of blob d: the size of its tar entry. The error
// wraps ErrNotFound when the archive has no such blob.
func (a *Archive) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	sec, err := a.blob(ctx, d)
	return sec.size, err
}

func (a *Archive) blob(ctx context.Context, d digest.Digest) (section, error) {
	if err := ValidateDigest(d); err != nil {
		return section{}, err
	}
	if err := ctx.Err(); err != nil {
		return section{}, err
	}
	sec, ok := a.blobs[d]
	if !ok {
		return section{}, fmt.Errorf("%w: blob %s in OCI archive %s", ErrNotFound, d, a.path)
	}
	return sec, nil
}

// ReadBlob returns the content of blob d, seekable (it is an
// io.SectionReader of the tar file, so it implements io.ReaderAt too), and
// its size. The bytes are not hashed here: verify the digest as you stream
// them, or run Check first.
func (a *Archive) ReadBlob(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, int64, error) {
	sec, err := a.blob(ctx, d)
	if err != nil {
		return nil, 0, err
	}
	return sectionReader{io.NewSectionReader(a.r, sec.off, sec.size)}, sec.size, nil
}

// OpenFile returns the content of a regular file of the archive that is not
// necessarily a blob (for example a bundle's manifest file beside
// index.json), and its size. name may have a "./" prefix. The error wraps
// ErrNotFound when there is no such file.
func (a *Archive) OpenFile(name string) (io.ReadSeekCloser, int64, error) {
	n, err := cleanEntryName(name)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: file %q in OCI archive %s: %v", ErrNotFound, name, a.path, err)
	}
	sec, ok := a.files[n]
	if !ok {
		return nil, 0, fmt.Errorf("%w: file %q in OCI archive %s", ErrNotFound, name, a.path)
	}
	return sectionReader{io.NewSectionReader(a.r, sec.off, sec.size)}, sec.size, nil
}

// sectionReader adds a no-op Close: the Archive owns the file.
type sectionReader struct{ *io.SectionReader }

func (sectionReader) Close() error { return nil }

// FileBacked is a blob reader whose content lies in a file that a server
// can send with sendfile(2) instead of copying it through memory: a blob
// of an archive, or of a bundle's part.
type FileBacked interface {
	// File opens the file that holds what the reader has left to read,
	// positioned there, for the caller to read on its own and close;
	// false when no single file holds it (a blob across two parts).
	File() (*os.File, bool)
}

// FileAt is an io.ReaderAt made of files (a bundle's parts) that tells
// which of them holds the n bytes at off, and where they start in it.
type FileAt interface {
	FileAt(off, n int64) (f *os.File, fileOff int64, ok bool)
}

var _ FileBacked = sectionReader{}

// File implements FileBacked for archives read from files.
func (s sectionReader) File() (*os.File, bool) {
	outer, base, n := s.Outer()
	pos, err := s.Seek(0, io.SeekCurrent)
	if err != nil || pos >= n {
		return nil, false
	}
	var f *os.File
	var off int64
	switch r := outer.(type) {
	case *os.File:
		f, off = r, base+pos
	case FileAt:
		var ok bool
		if f, off, ok = r.FileAt(base+pos, n-pos); !ok {
			return nil, false
		}
	default:
		return nil, false
	}
	return reopen(f, off)
}

// reopen opens f's file again, with an offset of its own, at off. It
// refuses a path that names another file now than the one f has open.
func reopen(f *os.File, off int64) (*os.File, bool) {
	was, err := f.Stat()
	if err != nil {
		return nil, false
	}
	g, err := os.Open(f.Name())
	if err != nil {
		return nil, false
	}
	if is, err := g.Stat(); err != nil || !os.SameFile(was, is) {
		g.Close()
		return nil, false
	}
	if _, err := g.Seek(off, io.SeekStart); err != nil {
		g.Close()
		return nil, false
	}
	return g, true
}

// Index returns a copy of the archive's index.json.
func (a *Archive) Index(ctx context.Context) (*ocispec.Index, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return cloneIndex(a.index), nil
}

// Resolve returns the index.json entry named name, like Store.Resolve.
func (a *Archive) Resolve(ctx context.Context, name string) (ocispec.Descriptor, error) {
	if err := ctx.Err(); err != nil {
		return ocispec.Descriptor{}, err
	}
	return resolveIn(a.index, name, "OCI archive "+a.path)
}

// Names returns every ref.name of the archive's index.json, sorted.
func (a *Archive) Names(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return namesIn(a.index), nil
}

// Referrers returns the manifests listed in the archive's index.json whose
// subject is the given digest, like Store.Referrers. The lookup is built on
// the first call.
func (a *Archive) Referrers(ctx context.Context, subject digest.Digest) ([]ocispec.Descriptor, error) {
	if err := ValidateDigest(subject); err != nil {
		return nil, err
	}
	a.refMu.Lock()
	defer a.refMu.Unlock()
	if a.refs == nil {
		by, _, err := buildReferrers(ctx, a, a.index, nil)
		if err != nil {
			return nil, err
		}
		a.refs = by
	}
	return cloneDescs(a.refs[subject]), nil
}

// Check verifies the archive like Store.Check: every blob hashes to its
// name, and everything reachable from index.json is present with the
// declared size. It reads every blob (ROBUSTNESS row 20), on every core.
func (a *Archive) Check(ctx context.Context) ([]Problem, error) {
	return a.CheckWith(ctx, runtime.GOMAXPROCS(0))
}

// CheckWith is Check hashing blobs on workers goroutines (at least one),
// for a caller that keeps cores busy with other work meanwhile.
func (a *Archive) CheckWith(ctx context.Context, workers int) ([]Problem, error) {
	blobs := make([]blobInfo, 0, len(a.blobs))
	for d, sec := range a.blobs {
		blobs = append(blobs, blobInfo{digest: d, path: blobRelPath(d), size: sec.size})
	}
	slices.SortFunc(blobs, func(x, y blobInfo) int { return cmp.Compare(x.path, y.path) })
	return checkLayout(ctx, a, a.index, blobs, nil, workers)
}
