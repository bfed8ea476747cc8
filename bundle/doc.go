// Package bundle is ferry's air-gap bundle: images, with their signatures,
// attestations and SBOMs, carried in a file (or in parts of a chosen size)
// from a connected machine to a site without a network.
//
// A bundle is an OCI image layout in a plain tar (layers are already
// compressed), so `skopeo copy oci-archive:bundle.tar:REF …` reads it
// too. index.json names every image by its full source reference
// (org.opencontainers.image.ref.name = docker.io/library/nginx:1.25), and
// ferry-bundle.json beside it (Catalog) lists the images, their digests,
// platforms and referrers, every blob with its size, the ferry version and
// the creation time. docs/bundle-format.md is the reference.
//
//   - Create streams images from registries through the copy engine
//     (internal/transfer) into the tar, in constant memory and without a
//     staging copy on disk, split into parts at exact byte boundaries if
//     asked, with a checksum file. With receipts (Since) it makes a
//     differential bundle that leaves out blobs the far side holds.
//   - Verify checks every part against its checksum (naming a missing,
//     corrupt or truncated part and where the bundle breaks off), every
//     entry of the tar (ROBUSTNESS rows 17–19), every blob's digest and size
//     and every manifest's references (row 20), and the catalog.
//   - Import verifies first and imports nothing if any check fails; then it
//     copies every image to a registry (under a prefix, with the source
//     host dropped) or an OCI layout through one copy engine, skipping what
//     the target holds, so a rerun after an interruption finishes the job;
//     and it writes a Receipt of what the target now holds.
//   - Open opens a bundle, whole or split, as a read-only store.Reader that
//     seeks into the tar: list it, or serve it in place.
//
// The package prints nothing: progress goes through transfer events, and
// results are returned.
package bundle

import (
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// Sentinel errors, tested with errors.Is.
var (
	// ErrNotBundle: a file that is not a ferry bundle (no or a malformed
	// ferry-bundle.json). It wraps transfer.ErrVerification.
	ErrNotBundle error = &sentinel{"not a ferry bundle", transfer.ErrVerification}
	// ErrCorrupt: a bundle that does not verify: a missing, truncated or
	// corrupt part, an unsafe tar entry, a blob whose content does not
	// match its digest, a missing blob, a catalog that disagrees with the
	// tar. It wraps transfer.ErrVerification.
	ErrCorrupt error = &sentinel{"the bundle does not verify", transfer.ErrVerification}
)

type sentinel struct {
	msg    string
	parent error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.parent }

// repositoryName is a repository's full name, with Docker Hub as
// docker.io rather than index.docker.io.
func repositoryName(r name.Repository) string {
	host := r.RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	return host + "/" + r.RepositoryStr()
}
