// Package store is an OCI image layout on disk that many goroutines and
// several processes can share safely.
//
// The layout follows the OCI image-layout specification
// (https://github.com/opencontainers/image-spec/blob/main/image-layout.md):
// an `oci-layout` file, an `index.json` image index and content-addressed
// blobs under `blobs/<alg>/<hex>`, so skopeo, crane and regctl read what it
// writes and it reads what they wrote.
//
// What it adds on top of the format, all inside the hidden directory
// `.ferry/` that other readers ignore:
//
//   - blobs are streamed into `.ferry/tmp/`, verified (digest and size),
//     fsynced and renamed into place, so a digest path never holds a partial
//     or wrong file, even after a crash;
//   - `index.json` is changed only under an in-process mutex and an
//     inter-process lock file (`.ferry/index.lock`) and replaced by
//     temp file + fsync + rename;
//   - temp files are locked by their writer while they are written, so the
//     stale-temp cleanup of [Open] and [Store.GC] never removes a file that a
//     live writer in another process still owns;
//   - mark-and-sweep garbage collection with a grace period, an integrity
//     check, a referrers lookup, and reading and writing the layout as a tar
//     file (what skopeo calls oci-archive).
//
// Digests are validated before they are turned into paths: only sha256 and
// sha512 with lowercase hex of the exact length are accepted
// (ROBUSTNESS row 8, CVE-2024-3727).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Sentinel errors, tested with errors.Is. Every error the package returns
// wraps at most a few of these and names its operand (path, digest, name).
var (
	// ErrNotFound: a blob, name or manifest is missing. Always wrapped with
	// the operand.
	ErrNotFound = errors.New("not found")
	// ErrDigestMismatch: content does not hash to its digest.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrSizeMismatch: content is longer or shorter than its declared size.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrInvalidDigest: a digest with an unknown algorithm, hex of the wrong
	// length, uppercase hex or any other character. Checked before the digest
	// is used to build a path.
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrNotLayout: a directory or tar file that is not an OCI image layout.
	ErrNotLayout = errors.New("not an OCI image layout")
	// ErrAmbiguous: a name (or the empty name) that selects more than one
	// entry of index.json.
	ErrAmbiguous = errors.New("ambiguous")
	// ErrInvalidManifest: a manifest that is not JSON, whose mediaType
	// contradicts the one given, or that cannot be classified.
	ErrInvalidManifest = errors.New("invalid manifest")
	// ErrManifestBlobUnknown: a manifest references a blob or child manifest
	// that the store does not hold (distribution's MANIFEST_BLOB_UNKNOWN).
	// It also matches ErrNotFound.
	ErrManifestBlobUnknown error = &childError{"manifest references a blob that is not in the layout", ErrNotFound}
	// ErrInvalidArchive: a tar file with an entry that is unsafe or
	// malformed (ROBUSTNESS rows 17-19). The whole archive is rejected.
	ErrInvalidArchive = errors.New("invalid OCI archive")
	// ErrInvalidName: an empty name, or one with control characters or
	// whitespace, given to Tag.
	ErrInvalidName = errors.New("invalid name")
)

// childError is a sentinel that also matches a parent sentinel.
type childError struct {
	msg    string
	parent error
}

func (e *childError) Error() string { return e.msg }
func (e *childError) Unwrap() error { return e.parent }

// Reader is read access to an OCI image layout, on disk ([Store]) or in a
// tar file ([Archive]).
type Reader interface {
	// Stat returns the size of the blob d; ErrNotFound if it is absent.
	Stat(ctx context.Context, d digest.Digest) (int64, error)
	// ReadBlob opens the blob d for reading and seeking (for Range requests)
	// and returns its size. The content is not re-hashed: a caller that
	// needs to trust it verifies the digest as it streams.
	ReadBlob(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, int64, error)
	// Index returns a snapshot of index.json that the caller may modify.
	Index(ctx context.Context) (*ocispec.Index, error)
	// Resolve returns the index.json entry whose
	// "org.opencontainers.image.ref.name" annotation is name.
	Resolve(ctx context.Context, name string) (ocispec.Descriptor, error)
	// Names returns every ref.name in index.json, sorted, without duplicates.
	Names(ctx context.Context) ([]string, error)
	// Referrers returns the manifests listed in index.json whose subject is
	// the given digest.
	Referrers(ctx context.Context, subject digest.Digest) ([]ocispec.Descriptor, error)
}

var (
	_ Reader = (*Store)(nil)
	_ Reader = (*Archive)(nil)
)

// Names of the files and directories the package uses inside a layout.
const (
	dotDir       = ".ferry"
	tmpDir       = ".ferry/tmp"
	lockFileName = ".ferry/index.lock"
)

// Store is an OCI image layout directory. It is safe for concurrent use by
// many goroutines, and several processes may use the same directory at once.
type Store struct {
	dir string

	// sem serializes index.json updates (and GC) inside the process; the
	// lock file serializes them between processes. A channel rather than a
	// mutex so that waiting honors the context.
	sem chan struct{}
	// gen counts index.json writes made by this Store; it is part of the
	// cache fingerprint.
	gen atomic.Uint64

	cacheMu sync.Mutex
	cache   indexCache

	refs referrerCache
}

// Open opens the OCI image layout in dir for reading and writing. A missing
// or empty directory becomes a new layout. A directory that holds anything
// else but no oci-layout file is refused with an error wrapping
// ErrNotLayout. A layout with an oci-layout file but no index.json (a
// creation cut short) gets an empty index.json. Open removes temp files left
// behind by writers that no longer run.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: empty directory name: give the path of an OCI layout directory", ErrNotLayout)
	}
	s := newStoreValue(dir)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating OCI layout %s: %w", dir, err)
		}
	case err != nil:
		return nil, fmt.Errorf("opening OCI layout %s: %w", dir, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("%w: %s is a file, not a directory: give a directory (or use oci-archive: for a tar file)", ErrNotLayout, dir)
	}

	hasLayout, err := s.readLayoutFile()
	if err != nil {
		return nil, err
	}
	if !hasLayout {
		if err := s.checkEmpty(); err != nil {
			return nil, err
		}
		data, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
		if err := s.writeFileAtomic(filepath.Join(dir, ocispec.ImageLayoutFile), data); err != nil {
			return nil, fmt.Errorf("creating OCI layout %s: %w", dir, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, ocispec.ImageBlobsDir), 0o755); err != nil {
		return nil, fmt.Errorf("creating OCI layout %s: %w", dir, err)
	}
	if err := s.ensureIndex(); err != nil {
		return nil, err
	}
	if _, err := s.cleanTemp(); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenExisting opens an OCI image layout that must already exist: a missing
// directory is an error wrapping ErrNotFound, a directory without
// oci-layout or index.json one wrapping ErrNotLayout. Opening creates and
// removes nothing (no temp cleanup), and reading never writes, so it suits
// read-only media and layouts of other tools; methods that write create
// what they need (.ferry/) when they are called.
func OpenExisting(dir string) (*Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: empty directory name: give the path of an OCI layout directory", ErrNotLayout)
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: OCI layout directory %s does not exist: check the path", ErrNotFound, dir)
	case err != nil:
		return nil, fmt.Errorf("opening OCI layout %s: %w", dir, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("%w: %s is a file, not a directory: give a directory (or use oci-archive: for a tar file)", ErrNotLayout, dir)
	}
	s := newStoreValue(dir)
	hasLayout, err := s.readLayoutFile()
	if err != nil {
		return nil, err
	}
	if !hasLayout {
		return nil, fmt.Errorf("%w: %s has no %s file: check the path", ErrNotLayout, dir, ocispec.ImageLayoutFile)
	}
	if _, err := os.Stat(s.indexPath()); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s has no %s: the layout is incomplete; recreate it", ErrNotLayout, dir, ocispec.ImageIndexFile)
		}
		return nil, fmt.Errorf("opening OCI layout %s: %w", dir, err)
	}
	return s, nil
}

func newStoreValue(dir string) *Store {
	return &Store{dir: dir, sem: make(chan struct{}, 1)}
}

// Dir returns the directory of the layout, as given to Open.
func (s *Store) Dir() string { return s.dir }

func (s *Store) indexPath() string { return filepath.Join(s.dir, ocispec.ImageIndexFile) }

// readLayoutFile reports whether dir has an oci-layout file, and checks that
// it declares a 1.x layout.
func (s *Store) readLayoutFile() (bool, error) {
	p := filepath.Join(s.dir, ocispec.ImageLayoutFile)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", p, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSmallFile+1))
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", p, err)
	}
	if err := checkLayoutFile(data); err != nil {
		return false, fmt.Errorf("%w: %s: %v", ErrNotLayout, p, err)
	}
	return true, nil
}

// maxSmallFile caps reads of oci-layout and, in archives, index.json.
const maxSmallFile = 4 << 20

// checkLayoutFile validates the content of an oci-layout file.
func checkLayoutFile(data []byte) error {
	if len(data) > maxSmallFile {
		return fmt.Errorf("larger than %d bytes", maxSmallFile)
	}
	var l ocispec.ImageLayout
	if err := json.Unmarshal(data, &l); err != nil {
		return fmt.Errorf("not JSON: %v", err)
	}
	if l.Version == "" || !(l.Version == "1" || strings.HasPrefix(l.Version, "1.")) {
		return fmt.Errorf("imageLayoutVersion %q is not supported (want %s)", l.Version, ocispec.ImageLayoutVersion)
	}
	return nil
}

// checkEmpty refuses a directory that holds anything but our own dot
// directory (left behind when a creation was cut short).
func (s *Store) checkEmpty() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", s.dir, err)
	}
	for _, e := range entries {
		if e.Name() == dotDir {
			continue
		}
		return fmt.Errorf("%w: %s is not empty and has no %s file (found %q): choose an empty or new directory", ErrNotLayout, s.dir, ocispec.ImageLayoutFile, e.Name())
	}
	return nil
}

// ensureIndex writes an empty index.json when there is none, under the index
// lock so that two processes creating the same layout do not race.
func (s *Store) ensureIndex() error {
	if _, err := os.Stat(s.indexPath()); err == nil {
		return nil
	}
	unlock, err := s.lock(context.Background())
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(s.indexPath()); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("opening OCI layout %s: %w", s.dir, err)
	}
	data, err := marshalIndex(&ocispec.Index{})
	if err != nil {
		return err
	}
	if err := s.writeFileAtomic(s.indexPath(), data); err != nil {
		return fmt.Errorf("creating %s: %w", s.indexPath(), err)
	}
	s.gen.Add(1)
	return nil
}
