package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// Upstream is a registry that `ferry serve --upstream` caches. It has the
// methods of registry.Upstream and fetches with the client copy uses:
// credentials from the keychain, TLS, retries and the request policy of
// the transport, and the same checks of what registries send (manifests
// by digest hash to it, a tag's body matches Docker-Content-Digest, sizes
// are bounded).
//
// Not-found answers wrap store.ErrNotFound as well as ErrNotFound, as
// registry.Upstream asks. Repositories are opened (the auth handshake) on
// first use and kept; tokens are renewed when the registry asks.
type Upstream struct {
	remote  *Remote
	reg     name.Registry
	display string

	mu    sync.Mutex
	repos map[string]*Repository
}

// Caps on what one request to the cache makes it read from an upstream
// (ROBUSTNESS rows 13, 33): the referrers of a subject, and the pages and
// tags of a tag list.
const (
	upstreamReferrersLimit = 256
	upstreamTagPages       = 100
	upstreamTags           = 100_000
)

// maxUpstreamRepos bounds the open repositories an Upstream keeps.
const maxUpstreamRepos = 10_000

// NewUpstream returns the registry at rawURL: "https://HOST[:PORT]",
// "http://HOST:PORT", or a bare HOST[:PORT] for https; no path. Docker
// Hub may be named docker.io, registry-1.docker.io or index.docker.io.
// Plain http is used only where the transport allows it (loopback, or
// insecure set for the host); insecure also marks the registry as plain
// http for the client.
func NewUpstream(remote *Remote, rawURL string, insecure bool) (*Upstream, error) {
	scheme, host := "https", strings.TrimSuffix(rawURL, "/")
	if i := strings.Index(host, "://"); i >= 0 {
		scheme, host = strings.ToLower(host[:i]), host[i+3:]
	}
	if scheme != "https" && scheme != "http" || host == "" || strings.ContainsAny(host, "/?#@ ") {
		return nil, fmt.Errorf("%w: upstream %q: expected https://HOST[:PORT] or http://HOST[:PORT], without a path", ErrInvalidReference, rawURL)
	}
	switch host {
	case "docker.io", "registry-1.docker.io":
		host = name.DefaultRegistry
	}
	var opts []name.Option
	if scheme == "http" || insecure {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: upstream %q: %v", ErrInvalidReference, rawURL, err)
	}
	return &Upstream{remote: remote, reg: reg, display: reg.Scheme() + "://" + reg.RegistryStr(), repos: map[string]*Repository{}}, nil
}

// String names the upstream: its scheme and host.
func (u *Upstream) String() string { return u.display }

// Host returns the upstream's host[:port] as credentials and TLS settings
// are looked up (index.docker.io for Docker Hub).
func (u *Upstream) Host() string { return u.reg.RegistryStr() }

// repository returns the open repository repo, opening it on first use.
// A failed open is not kept: the next call tries again.
func (u *Upstream) repository(ctx context.Context, repo string) (*Repository, error) {
	u.mu.Lock()
	r, ok := u.repos[repo]
	u.mu.Unlock()
	if ok {
		return r, nil
	}
	if !store.ValidRepositoryName(repo) {
		return nil, fmt.Errorf("%w: repository %q of upstream %s", ErrInvalidReference, repo, u)
	}
	// The host is named explicitly, so that a first component with a dot
	// stays part of the repository; Docker Hub's "nginx" is library/nginx.
	ref, err := name.NewRepository(u.reg.RegistryStr() + "/" + repo)
	if err != nil {
		return nil, fmt.Errorf("%w: repository %q of upstream %s: %v", ErrInvalidReference, repo, u, err)
	}
	ref.Registry = u.reg // keeps the scheme
	r, err = u.remote.Open(ctx, ref, false)
	if err != nil {
		return nil, upstreamErr(err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if kept, ok := u.repos[repo]; ok {
		return kept, nil
	}
	if len(u.repos) >= maxUpstreamRepos {
		clear(u.repos) // reopened on next use
	}
	u.repos[repo] = r
	return r, nil
}

// Manifest fetches and validates manifest ref (a tag or a digest) of repo.
func (u *Upstream) Manifest(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error) {
	r, err := u.repository(ctx, repo)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	m, err := r.Manifest(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, nil, upstreamErr(err)
	}
	return m.Descriptor, m.Raw, nil
}

// ManifestDigest resolves ref of repo with a HEAD request.
func (u *Upstream) ManifestDigest(ctx context.Context, repo, ref string) (digest.Digest, error) {
	r, err := u.repository(ctx, repo)
	if err != nil {
		return "", err
	}
	d, err := r.ManifestDigest(ctx, ref)
	return d, upstreamErr(err)
}

// Blob opens blob d of repo and returns its size from Content-Length, or
// -1. The stream is not verified.
func (u *Upstream) Blob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error) {
	resp, err := u.blobRequest(ctx, http.MethodGet, repo, d)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// BlobSize asks for the size of blob d of repo with a HEAD request.
func (u *Upstream) BlobSize(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	resp, err := u.blobRequest(ctx, http.MethodHead, repo, d)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.ContentLength < 0 {
		return 0, fmt.Errorf("checking blob %s@%s: the registry did not send its size", repo, d)
	}
	return resp.ContentLength, nil
}

// blobRequest sends method for blob d of repo and returns a 200 response.
func (u *Upstream) blobRequest(ctx context.Context, method, repo string, d digest.Digest) (*http.Response, error) {
	if _, err := ParseDigest(string(d)); err != nil {
		return nil, err
	}
	r, err := u.repository(ctx, repo)
	if err != nil {
		return nil, err
	}
	resp, err := r.do(ctx, method, r.url("blobs", string(d)), nil)
	if err != nil {
		return nil, upstreamErr(err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, upstreamErr(responseError(resp, "fetching blob "+r.Name.Name()+"@"+string(d)))
	}
	return resp, nil
}

// Referrers lists the manifests of repo whose subject is d: through the
// referrers API, or the tag schema (tag "sha256-<hex>") where the upstream
// does not offer it.
func (u *Upstream) Referrers(ctx context.Context, repo string, d digest.Digest) ([]ocispec.Descriptor, error) {
	r, err := u.repository(ctx, repo)
	if err != nil {
		return nil, err
	}
	descs, err := r.Referrers(ctx, ocispec.Descriptor{Digest: d}, upstreamReferrersLimit)
	return descs, upstreamErr(err)
}

// Tags lists the tags of repo.
func (u *Upstream) Tags(ctx context.Context, repo string) ([]string, error) {
	r, err := u.repository(ctx, repo)
	if err != nil {
		return nil, err
	}
	tags, err := r.Tags(ctx, TagOptions{MaxPages: upstreamTagPages, MaxTags: upstreamTags})
	return tags, upstreamErr(err)
}

// upstreamErr makes a not-found error also match store.ErrNotFound.
func upstreamErr(err error) error {
	if err != nil && errors.Is(err, ErrNotFound) {
		return &notFoundError{err}
	}
	return err
}

// notFoundError is a not-found answer of a registry that also matches
// store.ErrNotFound.
type notFoundError struct{ err error }

func (e *notFoundError) Error() string   { return e.err.Error() }
func (e *notFoundError) Unwrap() []error { return []error{e.err, store.ErrNotFound} }
