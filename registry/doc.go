// Package registry is `ferry serve`: an http.Handler that implements the
// OCI distribution spec v1.1
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md)
// over an OCI image layout of internal/store, so that tests, CI jobs and
// air-gapped sites get a real registry from one directory (or, read-only,
// from a bundle's tar file, see NewReadOnly).
//
// # One layout for all repositories
//
// Other tools read the directory as a plain OCI layout. The registry maps
// onto it like this:
//
//   - all repositories share the layout's blobs (content addressed), so a
//     cross-repository mount is free, and a blob GET or HEAD succeeds in any
//     repository once the blob is stored (distribution behaves the same for
//     blobs linked into a repository; the conformance suite only reads
//     blobs it pushed);
//   - a tag is an index.json entry whose "org.opencontainers.image.ref.name"
//     is "REPO:TAG";
//   - every pushed manifest also gets an entry annotated with
//     RepositoryAnnotation (no ref.name): it keeps the manifest in the
//     repository (GET by digest) and out of GC's reach after its tags move
//     or go, until it is deleted by digest;
//   - a manifest belongs to a repository when an entry names it with the
//     repository, or when it is a child of an index that belongs to it (so
//     a layout written by `ferry copy` or a bundle serves the platform
//     manifests of its indexes); a manifest pushed to repository B only is
//     MANIFEST_UNKNOWN in repository A;
//   - a repository exists when it has an entry;
//   - a blob that a manifest still uses is not deleted by DELETE
//     /v2/<name>/blobs/<digest> (every repository shares it); GC removes
//     unused blobs.
//
// # Robustness
//
// What it guards against (ROBUSTNESS rows 23–31): uploads are verified
// before they become blobs, and nothing is stored on a digest mismatch;
// out-of-order chunks get 416 and the session keeps its real Range;
// manifests are bounded, hashed with the algorithm of the digest in the
// URL, validated, and accepted only when everything they reference is
// stored, checked under the lock GC takes; a HEAD or mount refreshes a
// blob's time so GC's grace period covers the push that follows; page
// sizes are clamped; repository names are validated and never become
// paths; with authentication, every request needs a valid password.
//
// The package prints nothing: requests are logged through
// Options.Logger.
package registry
