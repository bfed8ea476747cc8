package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrtransport "github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/transport"
)

// Remote opens registry repositories with shared credentials and a
// transport per registry host.
type Remote struct {
	// Keychain resolves credentials for a registry; nil means anonymous.
	Keychain authn.Keychain
	// Transport returns the RoundTripper for a registry host: TLS, retries
	// and the request policy (internal/transport). It must not be nil.
	Transport func(host string) (http.RoundTripper, error)
	// ManifestLimit caps the size of a manifest read; 0 means
	// DefaultManifestLimit.
	ManifestLimit int64
}

// Repository is an authenticated connection to one registry repository.
type Repository struct {
	Name          name.Repository
	client        *http.Client
	manifestLimit int64
	// noSinglePost is set once the registry turned down a single-POST
	// upload, so that later blobs go straight to POST + PUT.
	noSinglePost atomic.Bool
}

// Open performs the registry's auth handshake for repo, with push access
// when push is set, and returns a client for it. mountFrom names
// repositories of the same registry to ask pull access for as well, so
// that blobs can be mounted from them.
func (r *Remote) Open(ctx context.Context, repo name.Repository, push bool, mountFrom ...name.Repository) (*Repository, error) {
	access := ggcrtransport.PullScope
	if push {
		access = ggcrtransport.PushScope
	}
	return r.open(ctx, repo, access, mountFrom)
}

// OpenForDelete is Open with delete access as well, which token servers
// (distribution's, Harbor's) grant apart from push.
func (r *Remote) OpenForDelete(ctx context.Context, repo name.Repository) (*Repository, error) {
	return r.open(ctx, repo, ggcrtransport.PushScope+",delete", nil)
}

func (r *Remote) open(ctx context.Context, repo name.Repository, access string, mountFrom []name.Repository) (*Repository, error) {
	host := repo.RegistryStr()
	rt, err := r.Transport(host)
	if err != nil {
		return nil, err
	}
	auth := authn.Anonymous
	if r.Keychain != nil {
		auth, err = r.Keychain.Resolve(repo.Registry)
		if err != nil {
			return nil, fmt.Errorf("reading credentials for %s: %w", host, err)
		}
	}
	scopes := []string{repo.Scope(access)}
	for _, m := range mountFrom {
		if m.RegistryStr() == host && m.RepositoryStr() != repo.RepositoryStr() {
			scopes = append(scopes, m.Scope(ggcrtransport.PullScope))
		}
	}
	art, err := ggcrtransport.NewWithContext(ctx, repo.Registry, auth, rt, scopes)
	if err != nil {
		return nil, wrapTransportError(fmt.Sprintf("connecting to %s", host), host, err)
	}
	limit := r.ManifestLimit
	if limit <= 0 {
		limit = DefaultManifestLimit
	}
	return &Repository{Name: repo, client: &http.Client{Transport: art}, manifestLimit: limit}, nil
}

func (r *Repository) url(kind, rest string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", r.Name.Scheme(), r.Name.RegistryStr(), r.Name.RepositoryStr(), kind, rest)
}

func (r *Repository) do(ctx context.Context, method, u string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, wrapTransportError(method+" "+u, r.Name.RegistryStr(), err)
	}
	return resp, nil
}

// Manifest fetches the manifest for a tag or digest and validates it: at
// most the manifest limit is read, a body fetched by digest must hash to
// it, and a Docker-Content-Digest header must match the body (ROBUSTNESS
// rows 1, 6, 7, 8). A body that breaks off is fetched again (row 3).
func (r *Repository) Manifest(ctx context.Context, identifier string) (*Manifest, error) {
	return refetch(ctx, func() (*Manifest, error) { return r.manifest(ctx, identifier) })
}

// bodyAttempts is how many times a manifest or small blob is fetched when
// its body breaks off mid-read: the transport retries failures that come
// before a response, not those while its body is read.
const bodyAttempts = 3

// brokenBody is a response body that broke off while it was read (a
// connection reset, an early EOF).
type brokenBody struct{ err error }

func (b brokenBody) Error() string { return b.err.Error() }
func (b brokenBody) Unwrap() error { return b.err }

// refetch calls fetch until it succeeds, fails other than with a
// brokenBody, or has made bodyAttempts attempts.
func refetch[T any](ctx context.Context, fetch func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := fetch()
		var broken brokenBody
		if err == nil || !errors.As(err, &broken) || attempt == bodyAttempts || ctx.Err() != nil {
			return v, err
		}
		if serr := sleepCtx(ctx, time.Duration(attempt)*100*time.Millisecond); serr != nil {
			return v, serr
		}
	}
}

func (r *Repository) manifest(ctx context.Context, identifier string) (*Manifest, error) {
	what := r.Name.Name() + refSep(identifier) + identifier
	want, byDigest, err := checkIdentifier(identifier)
	if err != nil {
		return nil, err
	}
	resp, err := r.do(ctx, http.MethodGet, r.url("manifests", identifier), http.Header{"Accept": {ManifestAccept}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, responseError(resp, "fetching manifest "+what)
	}
	if resp.ContentLength > r.manifestLimit {
		return nil, fmt.Errorf("%w: %s is %d bytes, over the limit of %d; raise it with --max-manifest-size if you trust the registry", ErrManifestTooLarge, what, resp.ContentLength, r.manifestLimit)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.manifestLimit+1))
	if err != nil {
		return nil, fmt.Errorf("reading manifest %s: %w", what, brokenBody{err})
	}
	if int64(len(body)) > r.manifestLimit {
		return nil, fmt.Errorf("%w: %s is over the limit of %d bytes; raise it with --max-manifest-size if you trust the registry", ErrManifestTooLarge, what, r.manifestLimit)
	}
	alg := digest.SHA256
	if byDigest {
		alg = want.Algorithm()
	}
	header := resp.Header.Get("Docker-Content-Digest")
	if !byDigest && header != "" {
		hd, err := ParseDigest(header)
		if err != nil {
			return nil, fmt.Errorf("manifest %s: registry sent an invalid Docker-Content-Digest: %w", what, err)
		}
		want, alg = hd, hd.Algorithm()
	}
	if want != "" {
		if got := alg.FromBytes(body); got != want {
			return nil, fmt.Errorf("%w: manifest %s: body hashes to %s, expected %s", ErrDigestMismatch, what, got, want)
		}
	}
	m, err := ParseManifest(body, resp.Header.Get("Content-Type"), alg)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", what, err)
	}
	return m, nil
}

// ManifestDigest asks for a manifest's digest with a HEAD request, which
// registries such as Docker Hub do not count as a pull. It falls back to
// GET when the registry does not send Docker-Content-Digest.
func (r *Repository) ManifestDigest(ctx context.Context, identifier string) (digest.Digest, error) {
	if _, _, err := checkIdentifier(identifier); err != nil {
		return "", err
	}
	resp, err := r.do(ctx, http.MethodHead, r.url("manifests", identifier), http.Header{"Accept": {ManifestAccept}})
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", responseError(resp, "checking manifest "+r.Name.Name()+refSep(identifier)+identifier)
	}
	if d, err := ParseDigest(resp.Header.Get("Docker-Content-Digest")); err == nil {
		return d, nil
	}
	m, err := r.Manifest(ctx, identifier)
	if err != nil {
		return "", err
	}
	return m.Descriptor.Digest, nil
}

// FetchBlob returns the verified content of a small blob (a config, a
// signature payload). limit bounds what is read whatever size says. A body
// that breaks off is fetched again.
func (r *Repository) FetchBlob(ctx context.Context, d digest.Digest, size, limit int64) ([]byte, error) {
	return refetch(ctx, func() ([]byte, error) { return r.fetchBlob(ctx, d, size, limit) })
}

func (r *Repository) fetchBlob(ctx context.Context, d digest.Digest, size, limit int64) ([]byte, error) {
	if _, err := ParseDigest(string(d)); err != nil {
		return nil, err
	}
	what := r.Name.Name() + "@" + string(d)
	if size > limit {
		return nil, fmt.Errorf("blob %s is %d bytes, over the limit of %d", what, size, limit)
	}
	resp, err := r.do(ctx, http.MethodGet, r.url("blobs", string(d)), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, responseError(resp, "fetching blob "+what)
	}
	data, err := io.ReadAll(newVerifier(resp.Body, d, size, "blob "+what))
	if err != nil && !errors.Is(err, ErrVerification) {
		return nil, brokenBody{fmt.Errorf("reading blob %s: %w", what, err)}
	}
	return data, err
}

// TagOptions bound a tag listing (ROBUSTNESS row 13).
type TagOptions struct {
	PageSize int // n per request; 0 lets the registry choose
	MaxPages int // 0 means 10,000
	MaxTags  int // 0 means 1,000,000
}

// Tags lists every tag, following Link pagination. It stops with ErrTooMany
// past the caps or when the registry sends a cursor it sent before.
func (r *Repository) Tags(ctx context.Context, opts TagOptions) ([]string, error) {
	if opts.MaxPages <= 0 {
		opts.MaxPages = 10_000
	}
	if opts.MaxTags <= 0 {
		opts.MaxTags = 1_000_000
	}
	next := r.url("tags", "list")
	if opts.PageSize > 0 {
		next += fmt.Sprintf("?n=%d", opts.PageSize)
	}
	seen := map[string]bool{}
	var tags []string
	for page := 0; next != ""; page++ {
		if page >= opts.MaxPages {
			return nil, fmt.Errorf("%w: listing tags of %s: more than %d pages", ErrTooMany, r.Name.Name(), opts.MaxPages)
		}
		if seen[next] {
			return nil, fmt.Errorf("%w: listing tags of %s: the registry repeated the page %s", ErrTooMany, r.Name.Name(), next)
		}
		seen[next] = true
		var list struct {
			Tags []string `json:"tags"`
		}
		link, err := r.getJSON(ctx, next, &list, "listing tags of "+r.Name.Name())
		if err != nil {
			return nil, err
		}
		if len(tags)+len(list.Tags) > opts.MaxTags {
			return nil, fmt.Errorf("%w: listing tags of %s: more than %d tags", ErrTooMany, r.Name.Name(), opts.MaxTags)
		}
		tags = append(tags, list.Tags...)
		next = link
	}
	return tags, nil
}

// getJSON GETs u into v (at most 16 MiB) and returns the resolved URL of a
// Link rel="next" header, if any; a link to another host is an error.
func (r *Repository) getJSON(ctx context.Context, u string, v any, what string) (string, error) {
	resp, err := r.do(ctx, http.MethodGet, u, http.Header{"Accept": {"application/json"}})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", responseError(resp, what)
	}
	if err := readJSON(resp.Body, maxJSONAnswer, v); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	link := nextLink(resp.Header.Get("Link"))
	if link == "" {
		return "", nil
	}
	base, _ := url.Parse(u)
	ref, err := url.Parse(link)
	if err != nil {
		return "", fmt.Errorf("%s: bad Link header %q: %w", what, link, err)
	}
	abs := base.ResolveReference(ref)
	if abs.Host != base.Host {
		return "", fmt.Errorf("%s: the registry's Link header points at another host (%s); refusing to follow it", what, abs.Host)
	}
	return abs.String(), nil
}

// maxJSONAnswer caps a JSON answer of the registry: a page of tags, of
// referrers.
const maxJSONAnswer = 16 << 20

// readJSON reads a response body of at most limit bytes to its end and
// decodes it into v. Reading to the end matters: net/http closes the
// connection of a response whose body is closed unread, and a decoder
// stops at the end of the value, before a trailing newline.
func readJSON(body io.Reader, limit int64, v any) error {
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return fmt.Errorf("reading the registry's answer: %w", err)
	}
	if int64(len(b)) > limit {
		return fmt.Errorf("the registry's answer is larger than %d bytes", limit)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding the registry's answer: %w", err)
	}
	return nil
}

// nextLink extracts the target of rel="next" from a Link header.
func nextLink(h string) string {
	for _, part := range strings.Split(h, ",") {
		target, params, ok := strings.Cut(part, ";")
		if !ok || !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
			continue
		}
		target = strings.TrimSpace(target)
		return strings.TrimSuffix(strings.TrimPrefix(target, "<"), ">")
	}
	return ""
}

func checkIdentifier(identifier string) (digest.Digest, bool, error) {
	if strings.Contains(identifier, ":") {
		d, err := ParseDigest(identifier)
		return d, true, err
	}
	if _, err := name.NewTag("x:" + identifier); err != nil || identifier == "" {
		return "", false, fmt.Errorf("%w: tag %q", ErrInvalidReference, identifier)
	}
	return "", false, nil
}

func refSep(identifier string) string {
	if strings.Contains(identifier, ":") {
		return "@"
	}
	return ":"
}

// HTTPError is an unexpected answer from a registry.
type HTTPError struct {
	What       string // what ferry was doing, naming the operand
	Host       string // the registry, for the login hint
	StatusCode int
	Status     string
	Codes      []string      // error codes from the body, e.g. MANIFEST_UNKNOWN
	Message    string        // first message from the body
	RetryAfter time.Duration // the wait a 429 asked for, if it said
}

func (e *HTTPError) Error() string {
	detail := e.Status
	if len(e.Codes) > 0 {
		detail += ": " + strings.Join(e.Codes, ", ")
	}
	if e.Message != "" {
		detail += ": " + e.Message
	}
	switch e.StatusCode {
	case http.StatusNotFound:
		return fmt.Sprintf("%s: not found (%s)", e.What, detail)
	case http.StatusUnauthorized, http.StatusForbidden:
		host := e.Host
		if host == "" {
			host = "HOST"
		}
		return fmt.Sprintf("%s: access denied (%s); check your credentials with: ferry login %s", e.What, detail, host)
	case http.StatusTooManyRequests:
		when := "later"
		if e.RetryAfter > 0 {
			when = "in " + e.RetryAfter.Round(time.Second).String() + ", as the registry asks"
		}
		return fmt.Sprintf("%s: rate limited (%s) after ferry's own retries; rerun %s, or log in, as anonymous clients get lower limits", e.What, detail, when)
	}
	return fmt.Sprintf("%s: %s", e.What, detail)
}

// Unwrap maps the status to ErrNotFound or ErrUnauthorized.
func (e *HTTPError) Unwrap() error {
	switch e.StatusCode {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrUnauthorized
	}
	return nil
}

func responseError(resp *http.Response, what string) error {
	e := &HTTPError{What: what, StatusCode: resp.StatusCode, Status: resp.Status}
	if resp.Request != nil && resp.Request.URL != nil {
		e.Host = resp.Request.URL.Host
	}
	if e.Status == "" {
		e.Status = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		e.RetryAfter, _ = transport.RetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if resp.Request != nil && resp.Request.Method != http.MethodHead {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &body) == nil {
			for _, x := range body.Errors {
				e.Codes = append(e.Codes, x.Code)
				if e.Message == "" {
					e.Message = x.Message
				}
			}
		}
	}
	return e
}

// wrapTransportError turns go-containerregistry's handshake errors into
// ferry's: a refused login becomes ErrUnauthorized with a hint.
func wrapTransportError(what, host string, err error) error {
	var terr *ggcrtransport.Error
	if errors.As(err, &terr) {
		e := &HTTPError{What: what, Host: host, StatusCode: terr.StatusCode, Status: fmt.Sprintf("%d %s", terr.StatusCode, http.StatusText(terr.StatusCode))}
		for _, d := range terr.Errors {
			e.Codes = append(e.Codes, string(d.Code))
			if e.Message == "" {
				e.Message = d.Message
			}
		}
		return e
	}
	return fmt.Errorf("%s: %w", what, err)
}
