package registry

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/store"
)

// tagRE is the tag grammar of
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests,
// [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}, with the length checked apart: a
// counted repetition compiles into 127 copies of the class, which every
// ferry command would pay for at start-up. Repository names are
// store.ValidRepositoryName's.
var tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]*$`)

// validTag reports whether tag matches the spec's tag grammar.
func validTag(tag string) bool { return len(tag) <= maxTagLength && tagRE.MatchString(tag) }

// maxTagLength is the spec's longest tag.
const maxTagLength = 128

// checkName returns the NAME_INVALID error for an invalid name, else nil.
func checkName(name string) *apiError {
	if store.ValidRepositoryName(name) {
		return nil
	}
	shown := name
	if len(shown) > 80 {
		shown = shown[:80] + "…"
	}
	return newError(http.StatusBadRequest, codeNameInvalid,
		"invalid repository name %q: names are lowercase components of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/', at most %d characters", shown, store.MaxRepositoryName)
}

// parseDigest validates a digest from a URL (sha256 or sha512, lowercase
// hex of the right length) before it is used anywhere.
func parseDigest(s string) (digest.Digest, *apiError) {
	d := digest.Digest(s)
	if err := store.ValidateDigest(d); err != nil {
		return "", newError(http.StatusBadRequest, codeDigestInvalid, "%v", err)
	}
	return d, nil
}

type routeKind int

const (
	routeNone routeKind = iota
	routeBase
	routeCatalog
	routeTags
	routeManifest
	routeBlob
	routeUploadStart // POST /v2/<name>/blobs/uploads/
	routeUpload      // /v2/<name>/blobs/uploads/<id>
	routeReferrers
)

// route is a parsed request path.
type route struct {
	kind routeKind
	name string // repository
	ref  string // tag or digest, blob digest, upload id, referrers subject
}

// parseRoute splits the path of r. The repository name may contain
// slashes, so the path is split at the last "/manifests/", "/blobs/" or
// "/referrers/" (or a final "/tags/list"). It works on the escaped path:
// a percent-encoded name ("%2e%2e", "%2F") is invalid rather than decoded
// into something else. It returns a NAME_INVALID error for a bad name and
// routeNone for paths that are not part of the API.
func parseRoute(r *http.Request) (route, *apiError) {
	p := r.URL.EscapedPath()
	if p == "/v2" || p == "/v2/" {
		return route{kind: routeBase}, nil
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return route{}, nil
	}
	if rest == "_catalog" {
		return route{kind: routeCatalog}, nil
	}
	at, kind, marker := -1, routeNone, ""
	if strings.HasSuffix(rest, "/tags/list") {
		at, kind, marker = len(rest)-len("/tags/list"), routeTags, "/tags/list"
	}
	for _, m := range []struct {
		marker string
		kind   routeKind
	}{{"/manifests/", routeManifest}, {"/blobs/", routeBlob}, {"/referrers/", routeReferrers}} {
		if i := strings.LastIndex(rest, m.marker); i > at {
			at, kind, marker = i, m.kind, m.marker
		}
	}
	if at <= 0 {
		return route{}, nil
	}
	name := rest[:at]
	if err := checkName(name); err != nil {
		return route{}, err
	}
	ref := rest[at+len(marker):]
	rt := route{kind: kind, name: name}
	switch kind {
	case routeTags:
		return rt, nil
	case routeBlob:
		switch {
		case ref == "uploads" || ref == "uploads/":
			rt.kind = routeUploadStart
			return rt, nil
		case strings.HasPrefix(ref, "uploads/"):
			rt.kind, ref = routeUpload, ref[len("uploads/"):]
		}
	}
	// The reference is a tag, a digest or an upload id: none of them has a
	// character that needs escaping, but some clients escape the colon of
	// a digest. The handlers validate it strictly.
	ref, err := url.PathUnescape(ref)
	if err != nil || ref == "" {
		return route{}, nil
	}
	rt.ref = ref
	return rt, nil
}

// String names the route in log lines and messages.
func (rt route) String() string {
	switch rt.kind {
	case routeBase:
		return "/v2/"
	case routeCatalog:
		return "/v2/_catalog"
	case routeTags:
		return fmt.Sprintf("/v2/%s/tags/list", rt.name)
	case routeManifest:
		return fmt.Sprintf("/v2/%s/manifests/%s", rt.name, rt.ref)
	case routeBlob:
		return fmt.Sprintf("/v2/%s/blobs/%s", rt.name, rt.ref)
	case routeUploadStart:
		return fmt.Sprintf("/v2/%s/blobs/uploads/", rt.name)
	case routeUpload:
		return fmt.Sprintf("/v2/%s/blobs/uploads/%s", rt.name, rt.ref)
	case routeReferrers:
		return fmt.Sprintf("/v2/%s/referrers/%s", rt.name, rt.ref)
	}
	return "?"
}
