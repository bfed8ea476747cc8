package transfer

import (
	"context"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Roots lists the entries of the layout's index.json, ref.name
// annotations included: everything the layout holds at its top level, as
// needed to rewrite an oci-archive: with something added.
func (l *Layout) Roots(ctx context.Context) ([]ocispec.Descriptor, error) {
	idx, err := l.r.Index(ctx)
	if err != nil {
		return nil, err
	}
	return idx.Manifests, nil
}
