package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The registry side of the copy engine: Repository is both a Source and a
// Target. Endpoints are as in the OCI distribution spec:
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md

// String names the repository, host/path.
func (r *Repository) String() string { return r.Name.Name() }

// OpenBlob streams a blob, from offset with a Range request when offset is
// not zero. A registry that ignores Range is read from the start and the
// first offset bytes are dropped.
func (r *Repository) OpenBlob(ctx context.Context, desc ocispec.Descriptor, offset int64) (io.ReadCloser, error) {
	if _, err := ParseDigest(string(desc.Digest)); err != nil {
		return nil, err
	}
	hdr := http.Header{}
	if offset > 0 {
		// Some registries only understand a closed range.
		hdr.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, desc.Size-1))
	}
	resp, err := r.do(ctx, http.MethodGet, r.url("blobs", string(desc.Digest)), hdr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && offset > 0 {
		// No ranges here: read it all again and skip what we have.
		resp.Body.Close()
		if resp, err = r.do(ctx, http.MethodGet, r.url("blobs", string(desc.Digest)), nil); err != nil {
			return nil, err
		}
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		return resp.Body, nil
	case resp.StatusCode == http.StatusOK:
		if offset > 0 {
			if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
				resp.Body.Close()
				return nil, fmt.Errorf("fetching blob %s@%s: skipping to offset %d: %w", r.Name.Name(), desc.Digest, offset, err)
			}
		}
		return resp.Body, nil
	}
	defer resp.Body.Close()
	return nil, responseError(resp, "fetching blob "+r.Name.Name()+"@"+string(desc.Digest))
}

// Referrers lists the manifests that refer to subject, through the OCI 1.1
// referrers API, or the tag schema (tag "sha256-<hex>") on registries
// without it.
func (r *Repository) Referrers(ctx context.Context, subject ocispec.Descriptor, limit int) ([]ocispec.Descriptor, error) {
	out, ok, err := r.ReferrersAPI(ctx, subject, limit)
	if err != nil || ok {
		return out, err
	}
	return r.referrersByTag(ctx, subject, limit)
}

// ReferrersAPI lists the manifests that refer to subject through the OCI
// 1.1 referrers API only (GET /v2/NAME/referrers/DIGEST, which is not a
// manifest request). ok is false, with no error, when the registry does
// not offer the API; the tag schema is not consulted.
func (r *Repository) ReferrersAPI(ctx context.Context, subject ocispec.Descriptor, limit int) (descs []ocispec.Descriptor, ok bool, err error) {
	what := "listing referrers of " + r.Name.Name() + "@" + string(subject.Digest)
	if _, err := ParseDigest(string(subject.Digest)); err != nil {
		return nil, false, err
	}
	next := r.url("referrers", string(subject.Digest))
	var out []ocispec.Descriptor
	seen := map[string]bool{}
	for next != "" {
		if seen[next] {
			return nil, false, fmt.Errorf("%w: %s: the registry repeated the page %s", ErrTooMany, what, next)
		}
		seen[next] = true
		resp, err := r.do(ctx, http.MethodGet, next, http.Header{"Accept": {MediaTypeOCIIndex}})
		if err != nil {
			return nil, false, err
		}
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), MediaTypeOCIIndex) {
			defer resp.Body.Close()
			if len(out) > 0 {
				return nil, false, responseError(resp, what)
			}
			return nil, false, nil
		}
		var idx ocispec.Index
		err = readJSON(resp.Body, maxJSONAnswer, &idx)
		resp.Body.Close()
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, idx.Manifests...)
		if len(out) > limit {
			return nil, false, fmt.Errorf("%w: %s: more than %d", ErrTooMany, what, limit)
		}
		next = nextLink(resp.Header.Get("Link"))
		if next != "" {
			base, _ := url.Parse(r.url("referrers", string(subject.Digest)))
			ref, err := url.Parse(next)
			if err != nil || base.ResolveReference(ref).Host != base.Host {
				return nil, false, fmt.Errorf("%s: bad or foreign Link header %q", what, next)
			}
			next = base.ResolveReference(ref).String()
		}
	}
	out, err = validDescriptors(out, what)
	return out, err == nil, err
}

// referrersTag is the tag schema's fallback tag for subject.
func referrersTag(subject digest.Digest) string {
	return subject.Algorithm().String() + "-" + subject.Encoded()
}

func (r *Repository) referrersByTag(ctx context.Context, subject ocispec.Descriptor, limit int) ([]ocispec.Descriptor, error) {
	m, err := r.Manifest(ctx, referrersTag(subject.Digest))
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	if m.Descriptor.MediaType != MediaTypeOCIIndex {
		return nil, nil
	}
	if len(m.Manifests) > limit {
		return nil, fmt.Errorf("%w: referrers of %s@%s: more than %d", ErrTooMany, r.Name.Name(), subject.Digest, limit)
	}
	return m.Manifests, nil
}

func validDescriptors(ds []ocispec.Descriptor, what string) ([]ocispec.Descriptor, error) {
	for _, d := range ds {
		if _, err := ParseDigest(string(d.Digest)); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	return ds, nil
}

// BlobExists asks with a HEAD request.
func (r *Repository) BlobExists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	return r.exists(ctx, "blobs", desc.Digest)
}

// ManifestExists asks with a HEAD request.
func (r *Repository) ManifestExists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	return r.exists(ctx, "manifests", desc.Digest)
}

func (r *Repository) exists(ctx context.Context, kind string, d digest.Digest) (bool, error) {
	if _, err := ParseDigest(string(d)); err != nil {
		return false, err
	}
	hdr := http.Header{}
	if kind == "manifests" {
		hdr.Set("Accept", ManifestAccept)
	}
	resp, err := r.do(ctx, http.MethodHead, r.url(kind, string(d)), hdr)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, responseError(resp, "checking "+strings.TrimSuffix(kind, "s")+" "+r.Name.Name()+"@"+string(d))
}

// ChecksDigests marks a Repository as a DigestCheckingTarget: a registry
// checks the digest of every upload (the distribution spec's
// DIGEST_INVALID).
func (r *Repository) ChecksDigests() {}

// WriteBlob uploads a blob in two requests: POST opens a session, and one
// PUT streams the body and commits it. A body that fails mid-stream aborts
// the PUT, so the registry never commits it.
//
// Blobs up to singlePostLimit are read into memory first (and so verified
// before anything is sent) and go in a single POST with their digest,
// which saves a round trip per blob on registries that accept it; those
// that do not get the same bytes in a PUT to the session they open.
func (r *Repository) WriteBlob(ctx context.Context, desc ocispec.Descriptor, body io.Reader) error {
	what := "uploading blob " + r.Name.Name() + "@" + string(desc.Digest)
	if desc.Size <= singlePostLimit {
		data, err := readExactly(body, desc.Size, what)
		if err != nil {
			return err
		}
		return r.writeSmallBlob(ctx, desc, data, what)
	}
	loc, err := r.startUpload(ctx, "", what)
	if err != nil {
		return err
	}
	u, err := uploadURL(loc, desc.Digest)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, io.NopCloser(body))
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	req.ContentLength = desc.Size
	if desc.Size == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := r.client.Do(req)
	if err != nil {
		return wrapTransportError(what, r.Name.RegistryStr(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return responseError(resp, what)
	}
	return nil
}

// readExactly reads a body of size bytes into one buffer of that size (no
// garbage from growing it, which matters when many jobs do this at once)
// and on to its end, where the engine's verifier reports a wrong digest.
func readExactly(body io.Reader, size int64, what string) ([]byte, error) {
	data := make([]byte, size)
	if _, err := io.ReadFull(body, data); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: %s: shorter than its %d bytes", ErrSizeMismatch, what, size)
		}
		return nil, err
	}
	extra, err := io.ReadAll(io.LimitReader(body, 1))
	if err != nil {
		return nil, err
	}
	if len(extra) > 0 {
		return nil, fmt.Errorf("%w: %s: longer than its %d bytes", ErrSizeMismatch, what, size)
	}
	return data, nil
}

// singlePostLimit is the largest blob sent in one POST.
const singlePostLimit = 1 << 20

func (r *Repository) writeSmallBlob(ctx context.Context, desc ocispec.Descriptor, data []byte, what string) error {
	loc := ""
	if !r.noSinglePost.Load() {
		q := url.Values{"digest": {string(desc.Digest)}}
		resp, err := r.send(ctx, http.MethodPost, r.url("blobs", "uploads/")+"?"+q.Encode(), data, what)
		if err != nil {
			return err
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusCreated:
			return nil
		case http.StatusAccepted:
			// An ordinary session: the registry ignored the body.
			r.noSinglePost.Store(true)
			if loc, err = resolveLocation(resp, r.url("blobs", "uploads/"), what); err != nil {
				return err
			}
		case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType, http.StatusNotImplemented:
			r.noSinglePost.Store(true)
		default:
			return responseError(resp, what)
		}
	}
	if loc == "" {
		var err error
		if loc, err = r.startUpload(ctx, "", what); err != nil {
			return err
		}
	}
	u, err := uploadURL(loc, desc.Digest)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	resp, err := r.send(ctx, http.MethodPut, u, data, what)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return responseError(resp, what)
	}
	return nil
}

// send makes a request with an in-memory body, which the transport can
// replay after a transient failure.
func (r *Repository) send(ctx context.Context, method, u string, data []byte, what string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, wrapTransportError(what, r.Name.RegistryStr(), err)
	}
	return resp, nil
}

// resolveLocation is the absolute URL of an upload session's Location.
func resolveLocation(resp *http.Response, base, what string) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("%s: the registry opened an upload session without a Location", what)
	}
	b, _ := url.Parse(base)
	l, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("%s: bad upload Location %q: %w", what, loc, err)
	}
	return b.ResolveReference(l).String(), nil
}

// startUpload opens an upload session, with a cross-repository mount
// query when query is set, and returns the session's Location resolved
// against the registry. A 201 answer (mounted) returns "".
func (r *Repository) startUpload(ctx context.Context, query, what string) (string, error) {
	u := r.url("blobs", "uploads/") + query
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, http.NoBody)
	if err != nil {
		return "", err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return "", wrapTransportError(what, r.Name.RegistryStr(), err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusCreated:
		return "", nil
	case http.StatusAccepted:
	default:
		return "", responseError(resp, what)
	}
	return resolveLocation(resp, u, what)
}

func uploadURL(loc string, d digest.Digest) (string, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("digest", string(d))
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// Mount asks the registry to mount desc from src when src is another
// repository on the same registry.
func (r *Repository) Mount(ctx context.Context, desc ocispec.Descriptor, src Source) (bool, error) {
	from, ok := src.(*Repository)
	if !ok || from.Name.RegistryStr() != r.Name.RegistryStr() || from.Name.RepositoryStr() == r.Name.RepositoryStr() {
		return false, nil
	}
	what := "mounting blob " + string(desc.Digest) + " from " + from.Name.Name() + " into " + r.Name.Name()
	q := url.Values{"mount": {string(desc.Digest)}, "from": {from.Name.RepositoryStr()}}
	loc, err := r.startUpload(ctx, "?"+q.Encode(), what)
	if err != nil {
		return false, err
	}
	if loc == "" {
		return true, nil
	}
	// The registry opened a session instead: close it, and copy.
	if req, err := http.NewRequestWithContext(ctx, http.MethodDelete, loc, nil); err == nil {
		if resp, err := r.client.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	return false, nil
}

// PutManifest uploads m by tag, or by digest when tag is empty. For a
// manifest with a subject on a registry without the referrers API (no
// OCI-Subject in the answer) it also updates the tag schema's index.
func (r *Repository) PutManifest(ctx context.Context, m *Manifest, tag string) error {
	if m.Subject != nil && tag == "" {
		return r.PutReferrer(ctx, m)
	}
	return r.putManifest(ctx, m.Raw, m.Descriptor, tag)
}

func (r *Repository) putManifest(ctx context.Context, raw []byte, desc ocispec.Descriptor, tag string) error {
	ident := string(desc.Digest)
	if tag != "" {
		ident = tag
	}
	what := "writing manifest " + r.Name.Name() + refSep(ident) + ident
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, r.url("manifests", ident), bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Content-Type", desc.MediaType)
	resp, err := r.client.Do(req)
	if err != nil {
		return wrapTransportError(what, r.Name.RegistryStr(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return responseError(resp, what)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != string(desc.Digest) {
		return fmt.Errorf("%w: %s: the registry stored it as %s, not %s", ErrDigestMismatch, what, got, desc.Digest)
	}
	return nil
}

// PutReferrer uploads a manifest with a subject by digest and, when the
// registry does not answer with OCI-Subject (no referrers API), adds it to
// the tag schema's index "sha256-<subject hex>".
func (r *Repository) PutReferrer(ctx context.Context, m *Manifest) error {
	what := "writing referrer " + r.Name.Name() + "@" + string(m.Descriptor.Digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, r.url("manifests", string(m.Descriptor.Digest)), bytes.NewReader(m.Raw))
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Content-Type", m.Descriptor.MediaType)
	resp, err := r.client.Do(req)
	if err != nil {
		return wrapTransportError(what, r.Name.RegistryStr(), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return responseError(resp, what)
	}
	if resp.Header.Get("OCI-Subject") != "" || m.Subject == nil {
		return nil
	}
	return r.addToReferrersTag(ctx, m)
}

// addToReferrersTag adds m's descriptor to the tag schema's index for its
// subject, creating the index if there is none.
func (r *Repository) addToReferrersTag(ctx context.Context, m *Manifest) error {
	tag := referrersTag(m.Subject.Digest)
	idx := ocispec.Index{MediaType: MediaTypeOCIIndex}
	idx.SchemaVersion = 2
	cur, err := r.Manifest(ctx, tag)
	switch {
	case err == nil && cur.Descriptor.MediaType == MediaTypeOCIIndex:
		if err := json.Unmarshal(cur.Raw, &idx); err != nil {
			return fmt.Errorf("reading the referrers index %s:%s: %w", r.Name.Name(), tag, err)
		}
		for _, d := range idx.Manifests {
			if d.Digest == m.Descriptor.Digest {
				return nil
			}
		}
	case err != nil && !isNotFound(err):
		return err
	}
	desc := ocispec.Descriptor{
		MediaType:    m.Descriptor.MediaType,
		Digest:       m.Descriptor.Digest,
		Size:         m.Descriptor.Size,
		ArtifactType: m.Descriptor.ArtifactType,
		Annotations:  m.Annotations,
	}
	idx.Manifests = append(idx.Manifests, desc)
	raw, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return r.putManifest(ctx, raw, ocispec.Descriptor{MediaType: MediaTypeOCIIndex, Digest: digest.FromBytes(raw), Size: int64(len(raw))}, tag)
}

// TagDigest resolves tag with a HEAD request.
func (r *Repository) TagDigest(ctx context.Context, tag string) (digest.Digest, error) {
	return r.ManifestDigest(ctx, tag)
}

func isNotFound(err error) bool { return err != nil && errors.Is(err, ErrNotFound) }
