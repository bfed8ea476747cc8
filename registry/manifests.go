package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// Manifest media types the registry accepts.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// maxTagParams caps the ?tag= parameters of one manifest PUT (the spec asks
// for at least 10).
const maxTagParams = 100

func manifestUnknown(repo, ref string) *apiError {
	return newError(http.StatusNotFound, codeManifestUnknown, "manifest %s is not in repository %s", ref, repo).
		withDetail(map[string]string{"name": repo, "reference": ref})
}

// parseReference splits the <reference> of /v2/<name>/manifests/<reference>
// into a digest (it has a colon) or a tag. Errors are DIGEST_INVALID and,
// for a bad tag, badTag.
func parseReference(ref string, badTag *apiError) (tag string, d digest.Digest, aerr *apiError) {
	if strings.Contains(ref, ":") {
		d, aerr = parseDigest(ref)
		return "", d, aerr
	}
	if !validTag(ref) {
		return "", "", badTag
	}
	return ref, "", nil
}

// resolve finds the manifest rt names in its repository.
func (s *Server) resolve(ctx context.Context, rt route) (ocispec.Descriptor, *apiError) {
	notFound := manifestUnknown(rt.name, rt.ref)
	tag, d, aerr := parseReference(rt.ref, notFound)
	if aerr != nil {
		return ocispec.Descriptor{}, aerr
	}
	v, err := s.currentView(ctx)
	if err != nil {
		return ocispec.Descriptor{}, internalError(err)
	}
	if tag != "" {
		desc, ok := v.tagged[rt.name+":"+tag]
		if !ok {
			return ocispec.Descriptor{}, notFound
		}
		return desc, nil
	}
	desc, ok, err := s.manifestIn(ctx, v, rt.name, d)
	if err != nil {
		return ocispec.Descriptor{}, internalError(err)
	}
	if !ok {
		return ocispec.Descriptor{}, notFound
	}
	return desc, nil
}

// getManifest answers GET and HEAD /v2/<name>/manifests/<reference> with
// the stored bytes, the stored media type as Content-Type and the digest
// in Docker-Content-Digest.
func (s *Server) getManifest(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	ctx := r.Context()
	if s.cache != nil {
		if aerr := s.cache.prepareManifest(ctx, w.Header(), rt); aerr != nil {
			return aerr
		}
	}
	desc, aerr := s.resolve(ctx, rt)
	if aerr != nil {
		return aerr
	}
	rc, size, err := s.r.ReadBlob(ctx, desc.Digest)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			s.log.WarnContext(ctx, "manifest listed in index.json is missing from the layout", "repository", rt.name, "digest", desc.Digest)
		}
		return storeError(err, manifestUnknown(rt.name, rt.ref))
	}
	defer rc.Close()
	mt := desc.MediaType
	if mt == "" {
		if refs, err := s.refs(ctx, desc.Digest); err == nil {
			mt = refs.mediaType
		}
	}
	h := w.Header()
	etag := `"` + string(desc.Digest) + `"`
	h.Set("Docker-Content-Digest", string(desc.Digest))
	h.Set("ETag", etag)
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	if mt != "" {
		h.Set("Content-Type", mt)
	}
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = io.CopyN(w, rc, size)
	}
	return nil
}

// manifestDoc is the part of a manifest the registry validates and follows.
type manifestDoc struct {
	SchemaVersion *int                 `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
}

func manifestInvalid(format string, args ...any) *apiError {
	return newError(http.StatusBadRequest, codeManifestInvalid, format, args...)
}

// isForeign reports whether a layer may be absent: non-distributable
// (foreign) layers, and layers with download URLs.
func isForeign(d ocispec.Descriptor) bool {
	return len(d.URLs) > 0 || strings.Contains(d.MediaType, "nondistributable") || strings.Contains(d.MediaType, "foreign")
}

// validateManifest checks a pushed manifest and returns it with its media
// type: a JSON object; Content-Type (parameters ignored) and the mediaType
// field agree when both are set (ROBUSTNESS row 7); an OCI or Docker image
// manifest has a config and no "manifests", an OCI index or Docker manifest
// list has "manifests" and no config or layers (a document that is both is
// refused as ambiguous, CVE-2021-41190); schemaVersion is 2; every
// descriptor has a media type, a size and a valid digest.
func validateManifest(raw []byte, contentType string) (*manifestDoc, string, *apiError) {
	ct := ""
	if contentType != "" {
		mt, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return nil, "", manifestInvalid("malformed Content-Type %q: %v", contentType, err)
		}
		ct = mt
	}
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, "", manifestInvalid("the manifest is not a JSON object")
	}
	var doc manifestDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, "", manifestInvalid("the manifest is not valid JSON: %v", err)
	}
	mt := ct
	switch {
	case ct != "" && doc.MediaType != "" && ct != doc.MediaType:
		return nil, "", manifestInvalid("Content-Type is %q but the manifest's mediaType is %q: they must agree", ct, doc.MediaType)
	case mt == "":
		mt = doc.MediaType
	}
	if mt == "" {
		switch {
		case doc.Manifests != nil && doc.Config == nil && doc.Layers == nil:
			mt = ocispec.MediaTypeImageIndex
		case doc.Config != nil && doc.Manifests == nil:
			mt = ocispec.MediaTypeImageManifest
		default:
			return nil, "", manifestInvalid("the manifest has no mediaType and no Content-Type was sent")
		}
	}
	switch mt {
	case ocispec.MediaTypeImageManifest, mediaTypeDockerManifest:
		if doc.Manifests != nil {
			return nil, "", manifestInvalid("the manifest is an image (%s) but has a manifests list: it is ambiguous", mt)
		}
		if doc.Config == nil {
			return nil, "", manifestInvalid("the image manifest has no config")
		}
	case ocispec.MediaTypeImageIndex, mediaTypeDockerManifestList:
		if doc.Config != nil || doc.Layers != nil {
			return nil, "", manifestInvalid("the manifest is an index (%s) but has a config or layers: it is ambiguous", mt)
		}
		if doc.Manifests == nil {
			return nil, "", manifestInvalid("the index has no manifests list")
		}
	default:
		return nil, "", manifestInvalid("manifest media type %q is not supported: use %s, %s, %s or %s", mt,
			ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, mediaTypeDockerManifest, mediaTypeDockerManifestList)
	}
	if doc.SchemaVersion == nil || *doc.SchemaVersion != 2 {
		return nil, "", manifestInvalid("schemaVersion must be 2")
	}
	check := func(field string, d ocispec.Descriptor) *apiError {
		if d.MediaType == "" {
			return manifestInvalid("%s: the descriptor of %s has no mediaType", field, d.Digest)
		}
		if d.Size < 0 {
			return manifestInvalid("%s: the descriptor of %s has a negative size", field, d.Digest)
		}
		if isForeign(d) {
			if err := d.Digest.Validate(); err != nil {
				return manifestInvalid("%s: invalid digest %q: %v", field, d.Digest, err)
			}
		} else if err := store.ValidateDigest(d.Digest); err != nil {
			return manifestInvalid("%s: %v", field, err)
		}
		return nil
	}
	if doc.Config != nil {
		if aerr := check("config", *doc.Config); aerr != nil {
			return nil, "", aerr
		}
	}
	for i, l := range doc.Layers {
		if aerr := check(fmt.Sprintf("layers[%d]", i), l); aerr != nil {
			return nil, "", aerr
		}
	}
	for i, m := range doc.Manifests {
		if aerr := check(fmt.Sprintf("manifests[%d]", i), m); aerr != nil {
			return nil, "", aerr
		}
	}
	if doc.Subject != nil {
		if err := store.ValidateDigest(doc.Subject.Digest); err != nil {
			return nil, "", manifestInvalid("subject: %v", err)
		}
	}
	return &doc, mt, nil
}

// references lists what must be stored before doc: config, layers (but
// foreign ones) and child manifests; not the subject.
func (doc *manifestDoc) references() []ocispec.Descriptor {
	var refs []ocispec.Descriptor
	if doc.Config != nil {
		refs = append(refs, *doc.Config)
	}
	for _, l := range doc.Layers {
		if !isForeign(l) {
			refs = append(refs, l)
		}
	}
	return append(refs, doc.Manifests...)
}

// checkReferences returns MANIFEST_BLOB_UNKNOWN naming the missing blobs
// and manifests of doc (ROBUSTNESS row 27), or MANIFEST_INVALID for a size
// that does not match the stored blob.
func (s *Server) checkReferences(ctx context.Context, doc *manifestDoc) error {
	var missing []string
	for _, ref := range doc.references() {
		size, err := s.rw.Stat(ctx, ref.Digest)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if !slices.Contains(missing, string(ref.Digest)) {
				missing = append(missing, string(ref.Digest))
			}
		case err != nil:
			return err
		case size != ref.Size:
			return manifestInvalid("the manifest gives %s a size of %d bytes, the registry holds %d", ref.Digest, ref.Size, size)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	shown := missing
	if len(shown) > 10 {
		shown = shown[:10]
	}
	return newError(http.StatusBadRequest, codeManifestBlobUnknown, "the manifest references %d blobs or manifests the registry does not hold (%s): push them first",
		len(missing), strings.Join(shown, ", ")).withDetail(map[string][]string{"digests": shown})
}

// putManifest answers PUT /v2/<name>/manifests/<reference>[?tag=…].
//
// The body is read up to MaxManifestSize (413 beyond), hashed with the
// algorithm of the digest in the URL (400 DIGEST_INVALID when it differs,
// ROBUSTNESS row 25; sha256 for a tag), validated, and stored with its
// exact bytes. The check that everything it references is stored and the
// update of index.json run in one store.Update, under the lock GC takes,
// so a GC cannot remove a blob between the check and the manifest
// becoming a root (ROBUSTNESS row 29).
func (s *Server) putManifest(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	ctx := r.Context()
	tag, want, aerr := parseReference(rt.ref, manifestInvalid("invalid tag %q: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", rt.ref))
	if aerr != nil {
		return aerr
	}
	var tags []string
	if tag != "" {
		tags = append(tags, tag)
	}
	params := r.URL.Query()["tag"]
	if len(params) > maxTagParams {
		return manifestInvalid("%d tag parameters: at most %d are accepted in one request", len(params), maxTagParams)
	}
	for _, t := range params {
		if !validTag(t) {
			return manifestInvalid("invalid tag %q: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", t)
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}

	limit := s.opts.MaxManifestSize
	if r.ContentLength > limit {
		return newError(http.StatusRequestEntityTooLarge, codeManifestInvalid, "the manifest has %d bytes, the limit is %d", r.ContentLength, limit)
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return newError(http.StatusBadRequest, codeManifestInvalid, "reading the manifest: %v", err)
	}
	if int64(len(raw)) > limit {
		return newError(http.StatusRequestEntityTooLarge, codeManifestInvalid, "the manifest has more than %d bytes, the limit", limit)
	}
	d := digest.Canonical.FromBytes(raw)
	if want != "" {
		d = want.Algorithm().FromBytes(raw)
		if d != want {
			return newError(http.StatusBadRequest, codeDigestInvalid, "the manifest hashes to %s, not %s", d, want).
				withDetail(map[string]string{"expected": string(want), "actual": string(d)})
		}
	}
	doc, mt, aerr := validateManifest(raw, r.Header.Get("Content-Type"))
	if aerr != nil {
		return aerr
	}
	// Fail fast, before writing anything; checked again under the lock.
	if err := s.checkReferences(ctx, doc); err != nil {
		return storeError(err, nil)
	}
	desc := ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw)), ArtifactType: doc.ArtifactType}
	if err := s.rw.WriteBlob(ctx, d, desc.Size, bytes.NewReader(raw)); err != nil {
		return storeError(err, nil)
	}
	err = s.rw.Update(ctx, func(idx *ocispec.Index) error {
		if err := s.checkReferences(ctx, doc); err != nil {
			return err
		}
		// A GC without grace may have swept the manifest blob since it
		// was written; WriteBlob takes no lock, so write it again here.
		if err := s.rw.WriteBlob(ctx, d, desc.Size, bytes.NewReader(raw)); err != nil {
			return err
		}
		addMember(idx, rt.name, desc)
		for _, t := range tags {
			setTag(idx, rt.name+":"+t, desc)
		}
		return nil
	})
	s.gen.Add(1)
	if err != nil {
		return storeError(err, nil)
	}
	h := w.Header()
	h.Set("Location", "/v2/"+rt.name+"/manifests/"+string(d))
	h.Set("Docker-Content-Digest", string(d))
	if doc.Subject != nil {
		h.Set("OCI-Subject", string(doc.Subject.Digest))
	}
	if len(params) > 0 {
		h.Set("OCI-Tag", strings.Join(tags, ", "))
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// addMember records that desc belongs to repo, once.
func addMember(idx *ocispec.Index, repo string, desc ocispec.Descriptor) {
	for _, e := range idx.Manifests {
		if e.Digest == desc.Digest && e.Annotations[RepositoryAnnotation] == repo {
			if _, tagged := e.Annotations[ocispec.AnnotationRefName]; !tagged {
				return
			}
		}
	}
	e := desc
	e.Annotations = map[string]string{RepositoryAnnotation: repo}
	idx.Manifests = append(idx.Manifests, e)
}

// setTag points name ("REPO:TAG") at desc: the first entry with the name
// is replaced in place, others with it are dropped.
func setTag(idx *ocispec.Index, name string, desc ocispec.Descriptor) {
	e := desc
	e.Annotations = map[string]string{ocispec.AnnotationRefName: name}
	out := idx.Manifests[:0]
	placed := false
	for _, m := range idx.Manifests {
		switch {
		case m.Annotations[ocispec.AnnotationRefName] != name:
			out = append(out, m)
		case !placed:
			out = append(out, e)
			placed = true
		}
	}
	if !placed {
		out = append(out, e)
	}
	idx.Manifests = out
}

// deleteManifest answers DELETE /v2/<name>/manifests/<reference>: by tag,
// the tag goes (the manifest stays, reachable by digest); by digest, the
// manifest leaves the repository with all its tags there. 202 either way;
// the blobs stay until garbage collection.
func (s *Server) deleteManifest(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	ctx := r.Context()
	notFound := manifestUnknown(rt.name, rt.ref)
	tag, d, aerr := parseReference(rt.ref, notFound)
	if aerr != nil {
		return aerr
	}
	removed := 0
	err := s.rw.Update(ctx, func(idx *ocispec.Index) error {
		n := len(idx.Manifests)
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(e ocispec.Descriptor) bool {
			repo, t, ok := entryRepo(e)
			if !ok || repo != rt.name {
				return false
			}
			if tag != "" {
				return t == tag
			}
			return e.Digest == d
		})
		removed = n - len(idx.Manifests)
		return nil
	})
	s.gen.Add(1)
	if err != nil {
		return storeError(err, nil)
	}
	if removed == 0 {
		if d != "" {
			if v, err := s.currentView(ctx); err == nil {
				if _, ok, _ := s.manifestIn(ctx, v, rt.name, d); ok {
					return newError(http.StatusMethodNotAllowed, codeUnsupported,
						"manifest %s is listed by an index in repository %s: delete the index instead", d, rt.name)
				}
			}
		}
		return notFound
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
