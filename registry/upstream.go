package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// Upstream is a registry that the server caches, pull-through: what a
// client asks for and the layout does not hold is fetched from the
// upstream, stored, and served (see Options.Upstreams).
//
// Errors that wrap store.ErrNotFound mean that the upstream answered and
// does not have the content; the client then gets a 404. Any other error
// means that the upstream could not answer (unreachable, rate limited,
// credentials refused): content the layout holds is served instead, and
// without it the client gets 502. Implementations must be safe for
// concurrent use and honour ctx.
type Upstream interface {
	// String names the upstream in log lines and messages, such as
	// "https://registry-1.docker.io".
	String() string
	// Manifest fetches manifest ref (a tag or a digest) of repository repo
	// and returns its descriptor (media type, digest, size) and its exact
	// bytes. A manifest fetched by digest must hash to it.
	Manifest(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error)
	// ManifestDigest resolves ref of repo to a digest as cheaply as the
	// upstream allows (a HEAD request, which Docker Hub does not count as
	// a pull).
	ManifestDigest(ctx context.Context, repo, ref string) (digest.Digest, error)
	// Blob opens blob d of repo and returns its size, or -1 when the
	// upstream does not say. The stream is not verified: the cache
	// verifies the digest and the size as it stores it.
	Blob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error)
	// BlobSize returns the size of blob d of repo without fetching it.
	BlobSize(ctx context.Context, repo string, d digest.Digest) (int64, error)
	// Referrers lists the manifests of repo whose subject is d, through
	// the OCI 1.1 referrers API; an upstream without the API returns none.
	Referrers(ctx context.Context, repo string, d digest.Digest) ([]ocispec.Descriptor, error)
	// Tags lists the tags of repo.
	Tags(ctx context.Context, repo string) ([]string, error)
}

// Defaults of the pull-through cache options.
const (
	// DefaultUpstreamTTL is how long a cached tag is served before it is
	// checked again with the upstream.
	DefaultUpstreamTTL = 5 * time.Minute
	// DefaultUpstreamTimeout bounds a check of a cached tag, a listing of
	// tags or referrers; past it the cached answer is served, marked stale.
	DefaultUpstreamTimeout = 10 * time.Second
)

// manifestFetchTimeout bounds fetching one manifest that the cache does not
// hold; there is nothing stale to serve instead, so it is generous.
const manifestFetchTimeout = time.Minute

// staleWarning is the Warning header (RFC 9111 section 5.5, obsoleted but
// still understood) of an answer from the cache that the upstream could not
// confirm.
const staleWarning = `110 - "Response is Stale"`

// upstreamRoutes maps repository names to upstreams: a namespace, the
// first components of a name, selects its upstream ("docker.io" serves
// docker.io/library/nginx as library/nginx there); names no namespace
// matches go to the default upstream, if any.
type upstreamRoutes struct {
	namespaces []string // longest first
	byNS       map[string]Upstream
	def        Upstream
}

// newUpstreamRoutes validates Options.Upstreams.
func newUpstreamRoutes(ups map[string]Upstream) (*upstreamRoutes, error) {
	r := &upstreamRoutes{byNS: map[string]Upstream{}}
	for ns, up := range ups {
		switch {
		case up == nil:
			return nil, fmt.Errorf("registry: upstream for namespace %q is nil", ns)
		case ns == "":
			r.def = up
		case !store.ValidRepositoryName(ns):
			return nil, fmt.Errorf("registry: upstream namespace %q is not a repository name prefix (lowercase components joined by '/', e.g. docker.io)", ns)
		default:
			r.byNS[ns] = up
			r.namespaces = append(r.namespaces, ns)
		}
	}
	slices.SortFunc(r.namespaces, func(a, b string) int { return len(b) - len(a) })
	return r, nil
}

// route returns the upstream of repo and repo's name there; ok is false
// for names that are local (no namespace matches and no default).
func (r *upstreamRoutes) route(repo string) (up Upstream, upstreamRepo string, ok bool) {
	for _, ns := range r.namespaces {
		if rest, found := strings.CutPrefix(repo, ns+"/"); found {
			return r.byNS[ns], rest, true
		}
	}
	if r.def != nil {
		return r.def, repo, true
	}
	return nil, "", false
}

// isUpstreamNotFound reports whether err says the upstream does not have
// the content, as opposed to not answering.
func isUpstreamNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
