package signing

import (
	"context"
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// OpenForSigning opens the endpoint ref names for reading its images and
// writing signatures. finish must be called once: for an oci-archive:
// the archive's content is staged in a layout beside it, and finish(true)
// writes the archive again with the signatures added and replaces the
// file; finish(false) leaves the file as it was.
func OpenForSigning(ctx context.Context, remote *transfer.Remote, ref transfer.Reference) (Endpoint, func(ok bool) error, error) {
	if ref.Kind == transfer.KindLayout {
		// Opening a layout for writing would create it: make sure it is there.
		_, closeSrc, err := remote.OpenSource(ctx, ref)
		if err != nil {
			return nil, nil, err
		}
		closeSrc()
	}
	if ref.Kind != transfer.KindArchive {
		dst, finish, err := remote.OpenTarget(ctx, ref, transfer.Reference{})
		if err != nil {
			return nil, nil, err
		}
		ep, ok := dst.(Endpoint)
		if !ok {
			finish(false)
			return nil, nil, fmt.Errorf("%s cannot be read back for signing", dst)
		}
		return ep, finish, nil
	}

	src, closeSrc, err := remote.OpenSource(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	layout, ok := src.(*transfer.Layout)
	if !ok {
		closeSrc()
		return nil, nil, fmt.Errorf("%s: not an OCI archive", src)
	}
	dst, finish, err := remote.OpenTarget(ctx, ref, transfer.Reference{})
	if err != nil {
		closeSrc()
		return nil, nil, err
	}
	done := func(ok bool) error {
		err := finish(ok)
		return errors.Join(err, closeSrc())
	}
	ep, ok := dst.(Endpoint)
	if !ok {
		done(false)
		return nil, nil, fmt.Errorf("%s cannot be read back for signing", dst)
	}
	if err := stageArchive(ctx, layout, ep); err != nil {
		done(false)
		return nil, nil, fmt.Errorf("staging %s to add signatures: %w", layout, err)
	}
	return ep, done, nil
}

// stageArchive copies everything at the top of an archive's index.json,
// under the same names, into the staging layout.
func stageArchive(ctx context.Context, src *transfer.Layout, dst transfer.Target) error {
	roots, err := src.Roots(ctx)
	if err != nil {
		return err
	}
	engine := transfer.NewEngine(transfer.Options{})
	for _, r := range roots {
		if !transfer.IsManifest(r.MediaType) {
			continue
		}
		req := transfer.Request{Source: string(r.Digest), Tag: r.Annotations[ocispec.AnnotationRefName]}
		if _, err := engine.Copy(ctx, src, dst, req); err != nil {
			return err
		}
	}
	return nil
}
