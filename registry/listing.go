package registry

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// page returns the part of sorted after last with at most n items and the
// value for the next page's "last", or "" when there is no next page. It
// allocates nothing: memory does not grow with n (ROBUSTNESS row 26).
func page(sorted []string, last string, n int) ([]string, string) {
	i := 0
	if last != "" {
		i = sort.SearchStrings(sorted, last)
		if i < len(sorted) && sorted[i] == last {
			i++
		}
	}
	rest := sorted[i:]
	if n >= len(rest) {
		return rest, ""
	}
	if n == 0 {
		return rest[:0], ""
	}
	return rest[:n], rest[n-1]
}

// pageParams reads n and last; n is clamped to MaxPageSize, which is also
// its default.
func (s *Server) pageParams(r *http.Request) (n int, last string, aerr *apiError) {
	q := r.URL.Query()
	n = s.opts.MaxPageSize
	if v := q.Get("n"); v != "" {
		parsed, err := strconv.ParseInt(v, 10, 64)
		if err != nil || parsed < 0 {
			return 0, "", newError(http.StatusBadRequest, codeUnsupported, "n must be a non-negative integer, not %q", v)
		}
		n = int(min(parsed, int64(s.opts.MaxPageSize)))
	}
	return n, q.Get("last"), nil
}

// writeJSON answers 200 with v as JSON.
func writeJSON(w http.ResponseWriter, r *http.Request, contentType string, v any) *apiError {
	body, err := json.Marshal(v)
	if err != nil {
		return internalError(err)
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return nil
}

func nextLink(path string, n int, last string) string {
	return "<" + path + "?n=" + strconv.Itoa(n) + "&last=" + url.QueryEscape(last) + `>; rel="next"`
}

// getTags answers GET /v2/<name>/tags/list[?n=&last=]: the repository's
// tags in lexical order, a page at a time with a Link header to the next;
// 404 NAME_UNKNOWN for a repository without entries.
func (s *Server) getTags(w http.ResponseWriter, r *http.Request, repo string) *apiError {
	n, last, aerr := s.pageParams(r)
	if aerr != nil {
		return aerr
	}
	v, err := s.currentView(r.Context())
	if err != nil {
		return internalError(err)
	}
	var all []string
	listed := false
	if s.cache != nil {
		if all, listed, aerr = s.cache.tags(r.Context(), w.Header(), repo); aerr != nil {
			return aerr
		}
	}
	if !listed {
		if !v.hasRepo(repo) {
			return newError(http.StatusNotFound, codeNameUnknown, "repository %s is not known to this registry", repo).withDetail(map[string]string{"name": repo})
		}
		all = v.tags[repo]
	}
	tags, next := page(all, last, n)
	if next != "" {
		w.Header().Set("Link", nextLink("/v2/"+repo+"/tags/list", n, next))
	}
	if tags == nil {
		tags = []string{}
	}
	return writeJSON(w, r, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{repo, tags})
}

// getCatalog answers GET /v2/_catalog[?n=&last=]: the repositories that
// have entries (and that user may pull, with Options.Authorize), in
// lexical order, paginated like tags.
func (s *Server) getCatalog(w http.ResponseWriter, r *http.Request, user string) *apiError {
	n, last, aerr := s.pageParams(r)
	if aerr != nil {
		return aerr
	}
	v, err := s.currentView(r.Context())
	if err != nil {
		return internalError(err)
	}
	visible := v.repos
	if s.opts.Authorize != nil {
		// Only the repositories the user may pull.
		visible = make([]string, 0, len(v.repos))
		for _, repo := range v.repos {
			if s.opts.Authorize(user, repo, ActionPull) {
				visible = append(visible, repo)
			}
		}
	}
	repos, next := page(visible, last, n)
	if next != "" {
		w.Header().Set("Link", nextLink("/v2/_catalog", n, next))
	}
	if repos == nil {
		repos = []string{}
	}
	return writeJSON(w, r, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{repos})
}

// getReferrers answers GET /v2/<name>/referrers/<digest>[?artifactType=]:
// an OCI index of the manifests of the repository whose subject is the
// digest (mediaType, digest, size, artifactType, annotations), empty
// rather than 404 when there are none or the repository does not exist.
// With artifactType, only those of that type, and
// "OCI-Filters-Applied: artifactType".
func (s *Server) getReferrers(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	ctx := r.Context()
	subject, aerr := parseDigest(rt.ref)
	if aerr != nil {
		return aerr
	}
	if s.cache != nil {
		s.cache.prepareReferrers(ctx, w.Header(), rt.name, subject)
	}
	all, err := s.r.Referrers(ctx, subject)
	if err != nil {
		return storeError(err, nil)
	}
	v, err := s.currentView(ctx)
	if err != nil {
		return internalError(err)
	}
	q := r.URL.Query()
	filter, filtered := q.Get("artifactType"), q.Has("artifactType") && q.Get("artifactType") != ""
	out := []ocispec.Descriptor{}
	for _, d := range all {
		if filtered && d.ArtifactType != filter {
			continue
		}
		if _, ok, err := s.manifestIn(ctx, v, rt.name, d.Digest); err != nil {
			return internalError(err)
		} else if !ok {
			continue
		}
		out = append(out, d)
	}
	if filtered {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: out}
	idx.SchemaVersion = 2
	return writeJSON(w, r, ocispec.MediaTypeImageIndex, idx)
}
