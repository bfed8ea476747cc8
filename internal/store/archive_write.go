package store

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// WriteArchive writes the layout s to w as a plain tar that OpenArchive,
// skopeo (oci-archive:) and crane read: oci-layout, index.json, then the
// directories and every blob reachable from index.json (manifests, child
// manifests, configs, layers, and referrers through the subject relation),
// in sorted order. Entries are regular files and directories only, with
// fixed modes, owners and mtimes, so the same layout gives the same bytes.
//
// Every blob is hashed as it is written; a missing reachable blob (other
// than a foreign layer) or one whose content does not match its digest stops
// the write with an error wrapping ErrNotFound or ErrDigestMismatch, and
// what was written to w must then be discarded. WriteArchive does not hold
// the index lock while it copies: run it when no GC can remove what the
// snapshot of index.json it started from references.
func WriteArchive(ctx context.Context, w io.Writer, s *Store) error {
	idx, err := s.Index(ctx)
	if err != nil {
		return err
	}
	blobs, _, err := s.listBlobs(ctx)
	if err != nil {
		return err
	}
	walk := newWalker(s, false, func(p Problem) error {
		return fmt.Errorf("writing OCI archive of %s: %w", s.dir, p.Err)
	})
	walk.addRoots(idx)
	if err := walk.run(ctx); err != nil {
		return err
	}
	if err := walk.addReferrers(ctx, blobs); err != nil {
		return err
	}
	digests := make([]digest.Digest, 0, len(walk.marked))
	for d := range walk.marked {
		digests = append(digests, d)
	}
	slices.SortFunc(digests, func(x, y digest.Digest) int { return strings.Compare(blobRelPath(x), blobRelPath(y)) })

	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	index, err := marshalIndex(idx)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	if err := writeTarFile(tw, ocispec.ImageLayoutFile, layout); err != nil {
		return err
	}
	if err := writeTarFile(tw, ocispec.ImageIndexFile, index); err != nil {
		return err
	}
	if err := writeTarDir(tw, ocispec.ImageBlobsDir+"/"); err != nil {
		return err
	}
	lastAlg := digest.Algorithm("")
	for _, d := range digests {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("writing OCI archive of %s: %w", s.dir, err)
		}
		rc, size, err := s.ReadBlob(ctx, d)
		if errors.Is(err, ErrNotFound) && !walk.required[d] {
			continue // a foreign layer that is not here: fine
		}
		if err != nil {
			return fmt.Errorf("writing OCI archive of %s: %w", s.dir, err)
		}
		if d.Algorithm() != lastAlg {
			lastAlg = d.Algorithm()
			if err := writeTarDir(tw, ocispec.ImageBlobsDir+"/"+string(lastAlg)+"/"); err != nil {
				rc.Close()
				return err
			}
		}
		err = copyBlobToTar(ctx, tw, d, rc, size)
		rc.Close()
		if err != nil {
			return fmt.Errorf("writing OCI archive of %s: %w", s.dir, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing OCI archive of %s: %w", s.dir, err)
	}
	return nil
}

// tarHeader describes an entry; every entry has the same mtime (the Unix
// epoch) and owner, so that the same content always gives the same bytes.
func tarHeader(name string, typ byte, size int64, mode int64) *tar.Header {
	return &tar.Header{Typeflag: typ, Name: name, Size: size, Mode: mode, ModTime: time.Unix(0, 0)}
}

func writeTarDir(tw *tar.Writer, name string) error {
	if err := tw.WriteHeader(tarHeader(name, tar.TypeDir, 0, 0o755)); err != nil {
		return fmt.Errorf("writing OCI archive entry %s: %w", name, err)
	}
	return nil
}

func writeTarFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(tarHeader(name, tar.TypeReg, int64(len(data)), 0o644)); err != nil {
		return fmt.Errorf("writing OCI archive entry %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("writing OCI archive entry %s: %w", name, err)
	}
	return nil
}

// copyBlobToTar writes blob d of the given size, verifying its digest.
func copyBlobToTar(ctx context.Context, tw *tar.Writer, d digest.Digest, r io.Reader, size int64) error {
	name := blobRelPath(d)
	if err := tw.WriteHeader(tarHeader(name, tar.TypeReg, size, 0o644)); err != nil {
		return fmt.Errorf("entry %s: %w", name, err)
	}
	h := d.Algorithm().Hash()
	n, err := copyHashing(ctx, tw, h, io.LimitReader(r, size))
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if n != size {
		return fmt.Errorf("%w: blob %s: read %d bytes, expected %d: it changed while being archived", ErrSizeMismatch, d, n, size)
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		return fmt.Errorf("%w: blob %s: its content hashes to %s: the layout is corrupt; run a check and copy the image again", ErrDigestMismatch, d, got)
	}
	return nil
}
