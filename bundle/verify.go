package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// Bundle is an opened bundle, whole or split: its tar read in place by
// seeking (nothing is extracted), and its catalog. It is safe for
// concurrent use. Open does not verify content: run Verify, or Check on
// the archive, before trusting it.
type Bundle struct {
	loc   *location
	parts *multiReaderAt
	// Archive is the OCI layout in the tar, a read-only store.Reader that
	// can be served or copied from.
	Archive *store.Archive
	// Catalog is ferry-bundle.json, and CatalogDigest the SHA-256 of the
	// file: it identifies the bundle.
	Catalog       *Catalog
	CatalogDigest digest.Digest
}

// Open opens the bundle at path: FILE, or a split bundle's FILE (or
// FILE.000) with its parts beside it. It reads the tar's headers once,
// with the checks of store.OpenArchive (ROBUSTNESS rows 17–19), and the
// catalog. A missing part or an unsafe or damaged tar is an error
// wrapping ErrCorrupt; a tar without ferry-bundle.json one wrapping
// ErrNotBundle.
func Open(path string) (*Bundle, error) {
	loc, err := locate(path)
	if err != nil {
		return nil, err
	}
	return openLocated(loc)
}

func openLocated(loc *location) (*Bundle, error) {
	for _, p := range loc.parts {
		if p.Size < 0 {
			return nil, fmt.Errorf("%w: part %s is missing (%s lists it)", ErrCorrupt, p.Path, loc.sums)
		}
	}
	m, err := openParts(loc.parts)
	if err != nil {
		return nil, err
	}
	a, err := store.OpenArchiveReaderAt(m, m.size, loc.display())
	if err != nil {
		m.Close()
		if errors.Is(err, store.ErrInvalidArchive) || errors.Is(err, store.ErrNotLayout) {
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return nil, err
	}
	cat, d, err := readCatalog(a)
	if err != nil {
		m.Close()
		return nil, err
	}
	return &Bundle{loc: loc, parts: m, Archive: a, Catalog: cat, CatalogDigest: d}, nil
}

// Close closes the bundle's files.
func (b *Bundle) Close() error { return b.parts.Close() }

// Name is how messages call the bundle: FILE, also when it is split.
func (b *Bundle) Name() string { return b.loc.display() }

// Parts returns the bundle's files, in order.
func (b *Bundle) Parts() []Part { return append([]Part(nil), b.loc.parts...) }

// Size is the bytes of the bundle's tar stream.
func (b *Bundle) Size() int64 { return b.parts.size }

// Problem is one thing wrong with a bundle.
type Problem struct {
	// Part is the file concerned (a part, the bundle file or its
	// checksum file), when there is one.
	Part string `json:"part,omitempty"`
	// Offset is where in the bundle's tar stream the problem is, when it
	// is known, else -1.
	Offset int64 `json:"offset"`
	// Digest is the blob concerned and Entry its name in the tar, when
	// there is one.
	Digest digest.Digest `json:"digest,omitempty"`
	Entry  string        `json:"entry,omitempty"`
	// Message says what is wrong, naming the part, offset or blob.
	Message string `json:"message"`
}

// PartReport is one file's checksum result.
type PartReport struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Offset int64  `json:"offset"`
	SHA256 string `json:"sha256,omitempty"`
	OK     bool   `json:"ok"`
}

// Report is what Verify found.
type Report struct {
	Bundle       string       `json:"bundle"`
	Parts        []PartReport `json:"parts"`
	Size         int64        `json:"size"`
	Images       int          `json:"images"`
	Referrers    int          `json:"referrers"`
	Blobs        int          `json:"blobs"`
	Differential bool         `json:"differential"`
	Problems     []Problem    `json:"problems"`
}

// Err is nil for a bundle without problems, else an error wrapping
// ErrCorrupt (and so transfer.ErrVerification) that names the first
// problems.
func (r *Report) Err() error {
	if len(r.Problems) == 0 {
		return nil
	}
	const show = 5
	var msgs []string
	for i, p := range r.Problems {
		if i == show {
			msgs = append(msgs, fmt.Sprintf("and %d more", len(r.Problems)-show))
			break
		}
		msgs = append(msgs, p.Message)
	}
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, r.Bundle, strings.Join(msgs, "; "))
}

func (r *Report) add(p Problem) { r.Problems = append(r.Problems, p) }

// Verify checks the bundle at path completely and reports every problem
// it finds:
//
//   - every part (or the one file) against SHA256SUMS (or FILE.sha256),
//     naming a missing, corrupt or truncated part and, for a truncated
//     part, the offset where the bundle breaks off (ROBUSTNESS row 21);
//   - the tar's entries: names, types, sizes (rows 17–19);
//   - every blob's digest and size, and every manifest reachable from
//     index.json with everything it references (row 20); blobs a
//     differential bundle left out are not missing;
//   - ferry-bundle.json against index.json and the blobs.
//
// It reads every byte of the bundle twice: once for the checksums, once
// for the blobs. The error is for a bundle that cannot be found, and a
// cancelled ctx; problems are in the Report (see Report.Err).
func Verify(ctx context.Context, path string) (*Report, error) {
	loc, err := locate(path)
	if err != nil {
		return nil, err
	}
	rep, b, err := verifyLocated(ctx, loc)
	if b != nil {
		b.Close()
	}
	return rep, err
}

// verifyLocated verifies, and returns the opened bundle when it could be
// opened; the caller closes it.
func verifyLocated(ctx context.Context, loc *location) (*Report, *Bundle, error) {
	rep := &Report{Bundle: loc.display(), Parts: []PartReport{}, Problems: []Problem{}}
	sizesBad := checkPartSizes(loc, 0, rep)
	if slices.ContainsFunc(loc.parts, func(p Part) bool { return p.Size < 0 }) {
		if _, err := checkParts(ctx, loc, rep); err != nil {
			return nil, nil, err
		}
		return rep, nil, nil // the stream has a hole: nothing more to read
	}
	// The parts are hashed while the blobs are: two readers of the same
	// bytes, on two cores. Their problems go before the others.
	parts := &Report{Parts: []PartReport{}}
	partsDone := make(chan error, 1)
	go func() {
		_, err := checkParts(ctx, loc, parts)
		partsDone <- err
	}()
	pre := len(rep.Problems)
	b, err := verifyContent(ctx, loc, rep, sizesBad)
	if perr := <-partsDone; perr != nil {
		if b != nil {
			b.Close()
		}
		return nil, nil, perr
	}
	if err != nil {
		return nil, nil, err
	}
	rep.Parts = parts.Parts
	problems := make([]Problem, 0, len(rep.Problems)+len(parts.Problems)) // [] in JSON when empty
	problems = append(problems, rep.Problems[:pre]...)
	problems = append(problems, parts.Problems...)
	rep.Problems = append(problems, rep.Problems[pre:]...)
	return rep, b, nil
}

// verifyContent opens the bundle of whole parts at loc and checks its
// entries, blobs, manifests and catalog into rep.
func verifyContent(ctx context.Context, loc *location, rep *Report, sizesBad bool) (*Bundle, error) {
	b, err := openLocated(loc)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		last := loc.parts[len(loc.parts)-1]
		rep.add(Problem{Part: last.Name, Offset: -1, Message: err.Error()})
		return nil, nil
	}
	rep.Size = b.Size()
	cat := b.Catalog
	rep.Images, rep.Blobs, rep.Differential = len(cat.Images), len(cat.Blobs), cat.Differential != nil
	for _, im := range cat.Images {
		rep.Referrers += len(im.Referrers)
	}
	if !sizesBad {
		checkPartSizes(loc, cat.PartSize, rep)
	}

	omitted := map[digest.Digest]bool{}
	if cat.Differential != nil {
		for _, o := range cat.Differential.Omitted {
			omitted[o.Digest] = true
		}
	}
	// The parts are being hashed on a core of their own (verifyLocated).
	problems, err := b.Archive.CheckWith(ctx, runtime.GOMAXPROCS(0)-1)
	if err != nil {
		b.Close()
		return nil, err
	}
	for _, p := range problems {
		if errors.Is(p.Err, store.ErrNotFound) && omitted[p.Digest] {
			continue // left out of a differential bundle, on purpose
		}
		rep.add(Problem{Offset: -1, Digest: p.Digest, Entry: p.Path, Message: p.Err.Error()})
	}
	if err := checkCatalog(ctx, b, rep); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// checkParts hashes every part and compares it with the checksum file. It
// reports whether a part is missing.
func checkParts(ctx context.Context, loc *location, rep *Report) (missing bool, err error) {
	if loc.sumsErr != nil {
		rep.add(Problem{Part: baseName(loc.sums), Offset: -1, Message: fmt.Sprintf("checksum file: %v: the parts cannot be checked; copy it with the bundle", cleanErr(loc.sumsErr))})
	}
	buf := make([]byte, 1<<20)
	for _, p := range loc.parts {
		pr := PartReport{Name: p.Name, Size: p.Size, Offset: p.Offset}
		if p.Size < 0 {
			missing = true
			rep.add(Problem{Part: p.Name, Offset: p.Offset, Message: fmt.Sprintf("part %s is missing: %s lists it", p.Name, baseName(loc.sums))})
			rep.Parts = append(rep.Parts, pr)
			continue
		}
		sum, n, err := hashFile(ctx, p.Path, buf)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		pr.SHA256 = sum
		switch {
		case err != nil:
			rep.add(Problem{Part: p.Name, Offset: at(p.Offset, n), Message: fmt.Sprintf("part %s cannot be read after %d bytes: %v", p.Name, n, err)})
		case p.Want == "" && loc.sumsErr == nil:
			rep.add(Problem{Part: p.Name, Offset: p.Offset, Message: fmt.Sprintf("part %s is not listed in %s", p.Name, baseName(loc.sums))})
		case p.Want == "":
		case sum != p.Want:
			rep.add(Problem{Part: p.Name, Offset: p.Offset, Message: fmt.Sprintf("part %s does not match %s: it is corrupt or truncated (%d bytes, at offset %d of the bundle)", p.Name, baseName(loc.sums), p.Size, p.Offset)})
		default:
			pr.OK = true
		}
		rep.Parts = append(rep.Parts, pr)
	}
	return missing, nil
}

func at(off, n int64) int64 {
	if off < 0 {
		return -1
	}
	return off + n
}

// checkPartSizes reports parts whose size shows they were cut short: every
// part of a split bundle but the last has the same size (partSize, when
// the catalog is known, else the largest of them).
func checkPartSizes(loc *location, partSize int64, rep *Report) (found bool) {
	if !loc.split || len(loc.parts) == 0 {
		return false
	}
	n := len(loc.parts)
	want := partSize
	if want == 0 {
		for _, p := range loc.parts[:n-1] {
			want = max(want, p.Size)
		}
	}
	if want <= 0 {
		return false
	}
	for i, p := range loc.parts {
		if p.Size < 0 {
			continue
		}
		found = found || (i < n-1 && p.Size != want) || p.Size > want || (i == n-1 && p.Size == 0)
		switch {
		case i < n-1 && p.Size < want:
			rep.add(Problem{Part: p.Name, Offset: at(p.Offset, p.Size), Message: fmt.Sprintf("part %s is truncated: %d bytes where every part but the last has %d; the bundle breaks off at offset %d", p.Name, p.Size, want, at(p.Offset, p.Size))})
		case p.Size > want:
			rep.add(Problem{Part: p.Name, Offset: at(p.Offset, want), Message: fmt.Sprintf("part %s is %d bytes, more than the %d of a part", p.Name, p.Size, want)})
		case i == n-1 && p.Size == 0:
			rep.add(Problem{Part: p.Name, Offset: p.Offset, Message: fmt.Sprintf("part %s is empty: the bundle breaks off at offset %d", p.Name, p.Offset)})
		}
	}
	return found
}

// hashFile returns the SHA-256 of a file in hex and the bytes read.
func hashFile(ctx context.Context, path string, buf []byte) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, ctxReader{ctx, f}, buf)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func baseName(p string) string {
	if i := strings.LastIndexAny(p, `/\`); i >= 0 {
		return p[i+1:]
	}
	return p
}

// cleanErr drops the "open " prefix of path errors.
func cleanErr(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Path + ": " + pe.Err.Error()
	}
	return err.Error()
}

// checkCatalog compares ferry-bundle.json with the tar.
func checkCatalog(ctx context.Context, b *Bundle, rep *Report) error {
	cat, a := b.Catalog, b.Archive
	bad := func(d digest.Digest, format string, args ...any) {
		rep.add(Problem{Offset: -1, Digest: d, Message: CatalogFile + ": " + fmt.Sprintf(format, args...)})
	}
	for _, bl := range cat.Blobs {
		size, err := a.Stat(ctx, bl.Digest)
		switch {
		case errors.Is(err, store.ErrNotFound):
			bad(bl.Digest, "lists blob %s, which the tar does not hold", bl.Digest)
		case err != nil:
			return err
		case size != bl.Size:
			bad(bl.Digest, "lists blob %s with %d bytes, the tar holds %d", bl.Digest, bl.Size, size)
		}
	}
	idx, err := a.Index(ctx)
	if err != nil {
		return err
	}
	named := map[string]ocispec.Descriptor{}
	inIndex := map[digest.Digest]bool{}
	for _, d := range idx.Manifests {
		inIndex[d.Digest] = true
		if n := d.Annotations[ocispec.AnnotationRefName]; n != "" {
			named[n] = d
		}
	}
	claimed := map[string]bool{}
	for _, im := range cat.Images {
		claimed[im.Reference] = true
		d, ok := named[im.Reference]
		switch {
		case !ok:
			bad(im.Digest, "image %s is not named in index.json", im.Reference)
		case d.Digest != im.Digest:
			bad(im.Digest, "image %s is %s, but index.json names %s", im.Reference, im.Digest, d.Digest)
		}
		for _, r := range im.Referrers {
			if n := r.refName(im.Repository); n != "" {
				claimed[n] = true
				if d, ok := named[n]; !ok || d.Digest != r.Digest {
					bad(r.Digest, "the %s %s of %s is not named %s in index.json", r.Kind, r.Digest, im.Reference, n)
				}
			} else if !inIndex[r.Digest] {
				bad(r.Digest, "the %s %s of %s is not in index.json", r.Kind, r.Digest, im.Reference)
			}
		}
	}
	for n, d := range named {
		if !claimed[n] {
			bad(d.Digest, "index.json names %s, which the catalog does not list", n)
		}
	}
	return nil
}
