package transfer

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/opencontainers/go-digest"
)

// Deleter is a Target that can remove tags.
type Deleter interface {
	// DeleteTag removes tag, leaving the manifest it points at, and every
	// other tag, in place. It fails with an error wrapping
	// ErrTagDeleteUnsupported when the endpoint can only delete a
	// manifest (and with it every tag that points at it).
	DeleteTag(ctx context.Context, tag string) error
	// DeleteManifest removes the manifest d and, on a registry, every tag
	// that points at it.
	DeleteManifest(ctx context.Context, d digest.Digest) error
}

// ErrTagDeleteUnsupported: the registry cannot delete a tag on its own
// (distribution before v3 answers a DELETE by tag with 400 or 405).
var ErrTagDeleteUnsupported = errors.New("the registry cannot delete a tag without deleting its manifest")

// DeleteTag sends DELETE /v2/NAME/manifests/TAG, which the OCI
// distribution spec (v1.1, "Deleting tags") defines to remove the tag
// alone.
func (r *Repository) DeleteTag(ctx context.Context, tag string) error {
	if _, byDigest, err := checkIdentifier(tag); err != nil || byDigest {
		return fmt.Errorf("%w: tag %q", ErrInvalidReference, tag)
	}
	err := r.delete(ctx, tag)
	var he *HTTPError
	if errors.As(err, &he) && (he.StatusCode == http.StatusBadRequest || he.StatusCode == http.StatusMethodNotAllowed) {
		return fmt.Errorf("deleting %s:%s: %w (%v)", r.Name.Name(), tag, ErrTagDeleteUnsupported, err)
	}
	return err
}

// DeleteManifest sends DELETE /v2/NAME/manifests/DIGEST.
func (r *Repository) DeleteManifest(ctx context.Context, d digest.Digest) error {
	if _, err := ParseDigest(string(d)); err != nil {
		return err
	}
	return r.delete(ctx, string(d))
}

func (r *Repository) delete(ctx context.Context, identifier string) error {
	what := "deleting " + r.Name.Name() + refSep(identifier) + identifier
	resp, err := r.do(ctx, http.MethodDelete, r.url("manifests", identifier), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusAccepted, http.StatusOK, http.StatusNoContent:
		return nil
	}
	return responseError(resp, what)
}

// DeleteTag removes tag from the layout's index; blobs stay until a GC.
func (l *Layout) DeleteTag(ctx context.Context, tag string) error {
	if err := l.writable(); err != nil {
		return err
	}
	if err := l.s.Untag(ctx, tag); err != nil {
		return l.notFound(err, ":"+tag)
	}
	return nil
}

// DeleteManifest removes every entry of the layout's index with digest
// d, tagged or not; blobs stay until a GC.
func (l *Layout) DeleteManifest(ctx context.Context, d digest.Digest) error {
	if err := l.writable(); err != nil {
		return err
	}
	if err := l.s.RemoveRoot(ctx, d, nil); err != nil {
		return l.notFound(err, "@"+string(d))
	}
	return nil
}
