package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-oci/ferry/internal/store"
)

// Defaults of Options.
const (
	DefaultMaxManifestSize = 4 << 20
	DefaultMaxPageSize     = 1000
	DefaultUploadTimeout   = time.Hour
	DefaultMaxUploads      = 1024
)

// Options configures a Server. The zero value serves a writable registry
// without authentication and with the defaults above.
type Options struct {
	// ReadOnly refuses every write (blob uploads, manifest pushes, deletes)
	// with 405 UNSUPPORTED.
	ReadOnly bool
	// Auth, when set, requires HTTP basic authentication on every request,
	// /v2/ included: a missing or wrong password is answered 401 with
	// `WWW-Authenticate: Basic realm="ferry"` and an UNAUTHORIZED body.
	Auth Authenticator
	// Authorize, when set, decides what an authenticated user may do; a
	// refusal is answered 403 DENIED (ROBUSTNESS row 31). repo is empty for
	// /v2/_catalog, which then lists only the repositories the user may
	// pull; /v2/ needs authentication only. user is empty when Auth is
	// nil. Nil lets every authenticated user do everything.
	Authorize func(user, repo string, action Action) bool
	// MaxManifestSize caps a manifest PUT body (default 4 MiB, the size
	// the spec asks registries to accept); larger ones get 413
	// MANIFEST_INVALID without being read.
	MaxManifestSize int64
	// MaxPageSize caps n in tags/list and _catalog, and is the page size
	// when n is absent (default 1000); more results are behind a Link
	// header. Memory does not grow with n (ROBUSTNESS row 26).
	MaxPageSize int
	// Logger receives one access-log line per request (method, path
	// without the query, status, response bytes, duration, user, remote
	// address), at Info for successes and client errors and at Error for
	// server errors; never credentials or query strings. Nil logs nothing.
	Logger *slog.Logger
	// UploadTimeout cancels upload sessions idle for this long (default 1h)
	// and removes their data.
	UploadTimeout time.Duration
	// MaxUploads caps the upload sessions open at once (default 1024);
	// more are refused with 429 TOOMANYREQUESTS.
	MaxUploads int

	// Upstreams makes the registry a pull-through cache (see cache.go): a
	// repository whose name starts with a key and a slash is a cache of
	// that key's upstream, under the rest of its name
	// (docker.io/library/nginx is library/nginx at the "docker.io"
	// upstream), and the key "" is the upstream of every other name.
	// Content the layout lacks is fetched as clients ask for it,
	// verified, stored and served; pushes to cached repositories are
	// refused with 405 UNSUPPORTED. Only New accepts it.
	Upstreams map[string]Upstream
	// UpstreamTTL is how long a cached tag is served before the upstream
	// is asked again, with a HEAD request (default DefaultUpstreamTTL;
	// negative: on every request). Content by digest is never asked for
	// again.
	UpstreamTTL time.Duration
	// UpstreamTimeout bounds asking the upstream about a tag, a tag list
	// or referrers the cache holds (default DefaultUpstreamTimeout); past
	// it, the cached answer is served with a Warning header.
	UpstreamTimeout time.Duration
	// CacheMaxSize, when positive, caps the bytes of the layout's blobs:
	// beyond it, the cached images used least recently are dropped and
	// garbage collected (see evictor). Content used within the last
	// store.DefaultGrace is never dropped.
	CacheMaxSize int64
}

// Action is what a request does to a repository, for Options.Authorize.
type Action string

// Actions passed to Options.Authorize.
const (
	// ActionPull: GET and HEAD of manifests, blobs, tags, referrers, the
	// catalog.
	ActionPull Action = "pull"
	// ActionPush: blob uploads, mounts, manifest and tag pushes.
	ActionPush Action = "push"
	// ActionDelete: DELETE of a manifest, tag or blob.
	ActionDelete Action = "delete"
)

// Server is an http.Handler for the OCI distribution spec v1.1
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md)
// over an OCI image layout of internal/store. All repositories share the
// layout (see RepositoryAnnotation). It is safe for concurrent use; call
// Close when done to cancel open upload sessions.
type Server struct {
	r    store.Reader
	rw   *store.Store // nil when serving a read-only Reader
	dir  string       // the layout directory, "" for an archive
	opts Options
	log  *slog.Logger

	gen       atomic.Uint64 // index updates made by this server
	viewMu    sync.Mutex
	view      *view
	viewStamp indexStamp
	refsCache refsCache
	cache     *cache // nil without Options.Upstreams

	sessMu   sync.Mutex
	sessions map[string]*uploadSession
	closed   bool
}

// New returns a registry that stores into s.
func New(s *store.Store, opts Options) (*Server, error) {
	if s == nil {
		return nil, errors.New("registry: no store")
	}
	srv, err := newServer(s, opts)
	if err != nil {
		return nil, err
	}
	srv.rw = s
	if len(opts.Upstreams) > 0 {
		if srv.cache, err = newCache(srv); err != nil {
			return nil, err
		}
	}
	return srv, nil
}

// NewReadOnly returns a read-only registry over any layout reader, such as
// a *store.Archive (an OCI layout inside a tar file, served in place).
// Options.ReadOnly is implied.
func NewReadOnly(r store.Reader, opts Options) (*Server, error) {
	if r == nil {
		return nil, errors.New("registry: no store")
	}
	if len(opts.Upstreams) > 0 {
		return nil, errors.New("registry: a read-only layout cannot cache upstreams")
	}
	opts.ReadOnly = true
	return newServer(r, opts)
}

func newServer(r store.Reader, opts Options) (*Server, error) {
	switch {
	case opts.MaxManifestSize < 0:
		return nil, fmt.Errorf("registry: MaxManifestSize %d is negative", opts.MaxManifestSize)
	case opts.MaxPageSize < 0:
		return nil, fmt.Errorf("registry: MaxPageSize %d is negative", opts.MaxPageSize)
	case opts.UploadTimeout < 0:
		return nil, fmt.Errorf("registry: UploadTimeout %v is negative", opts.UploadTimeout)
	case opts.MaxUploads < 0:
		return nil, fmt.Errorf("registry: MaxUploads %d is negative", opts.MaxUploads)
	}
	if opts.MaxManifestSize == 0 {
		opts.MaxManifestSize = DefaultMaxManifestSize
	}
	if opts.MaxPageSize == 0 {
		opts.MaxPageSize = DefaultMaxPageSize
	}
	if opts.UploadTimeout == 0 {
		opts.UploadTimeout = DefaultUploadTimeout
	}
	if opts.MaxUploads == 0 {
		opts.MaxUploads = DefaultMaxUploads
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := &Server{r: r, opts: opts, log: log, sessions: map[string]*uploadSession{}}
	if st, ok := r.(*store.Store); ok {
		// index.json of a directory can change under us (another process,
		// ferry gc); an archive cannot.
		srv.dir = st.Dir()
	}
	return srv, nil
}

// Close cancels the open upload sessions and removes their data. Requests
// still running on them fail; new uploads are refused. The store is not
// closed.
func (s *Server) Close() error {
	s.sessMu.Lock()
	s.closed = true
	sessions := s.sessions
	s.sessions = map[string]*uploadSession{}
	s.sessMu.Unlock()
	for _, sess := range sessions {
		sess.cancel()
	}
	if s.cache != nil {
		s.cache.close()
	}
	return nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	user, aerr := s.serve(rec, r)
	if aerr != nil && !rec.written {
		writeError(rec, r, aerr)
	}
	s.logRequest(r, rec, user, time.Since(start), aerr)
	if rec.abort {
		panic(http.ErrAbortHandler)
	}
}

// serve handles one request and returns the authenticated user, and the
// error to write when the handler did not answer itself.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	user, aerr := s.authenticate(r)
	if aerr != nil {
		return user, aerr
	}
	rt, aerr := parseRoute(r)
	if aerr != nil {
		return user, aerr
	}
	if rt.kind == routeNone {
		return user, newError(http.StatusNotFound, codeUnsupported, "%s is not an endpoint of the OCI distribution API", r.URL.Path)
	}
	action, allowed := routeAction(rt, r.Method)
	if !allowed {
		return user, methodNotAllowed(rt, r.Method)
	}
	if aerr := s.authorize(user, rt, action); aerr != nil {
		return user, aerr
	}
	if s.opts.ReadOnly && action != ActionPull {
		return user, newError(http.StatusMethodNotAllowed, codeUnsupported, "this registry is read-only: %s %s is refused", r.Method, r.URL.Path).
			withHeader("Allow", "GET, HEAD")
	}
	if action == ActionPush && s.cache != nil && s.cache.cached(rt.name) {
		return user, pushToCache(rt)
	}
	switch rt.kind {
	case routeBase:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write([]byte("{}"))
		}
		return user, nil
	case routeCatalog:
		return user, s.getCatalog(w, r, user)
	case routeTags:
		return user, s.getTags(w, r, rt.name)
	case routeReferrers:
		return user, s.getReferrers(w, r, rt)
	case routeManifest:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			return user, s.getManifest(w, r, rt)
		case http.MethodPut:
			return user, s.putManifest(w, r, rt)
		case http.MethodDelete:
			return user, s.deleteManifest(w, r, rt)
		}
	case routeBlob:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			return user, s.getBlob(w, r, rt)
		case http.MethodDelete:
			return user, s.deleteBlob(w, r, rt)
		}
	case routeUploadStart:
		return user, s.startUpload(w, r, rt)
	case routeUpload:
		switch r.Method {
		case http.MethodGet:
			return user, s.uploadStatus(w, r, rt)
		case http.MethodPatch:
			return user, s.patchUpload(w, r, rt)
		case http.MethodPut:
			return user, s.putUpload(w, r, rt)
		case http.MethodDelete:
			return user, s.cancelUpload(w, r, rt)
		}
	}
	return user, methodNotAllowed(rt, r.Method)
}

// allowedMethods lists what a route accepts.
func allowedMethods(kind routeKind) []string {
	switch kind {
	case routeBase, routeCatalog, routeTags, routeReferrers:
		return []string{http.MethodGet, http.MethodHead}
	case routeManifest:
		return []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete}
	case routeBlob:
		return []string{http.MethodGet, http.MethodHead, http.MethodDelete}
	case routeUploadStart:
		return []string{http.MethodPost}
	case routeUpload:
		return []string{http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete}
	}
	return nil
}

// routeAction returns what method does on rt, and whether rt accepts it.
func routeAction(rt route, method string) (Action, bool) {
	switch {
	case !slices.Contains(allowedMethods(rt.kind), method):
		return "", false
	case method == http.MethodDelete && (rt.kind == routeManifest || rt.kind == routeBlob):
		return ActionDelete, true
	case method == http.MethodGet && rt.kind == routeUpload:
		return ActionPush, true // the state of an upload is part of pushing
	case method == http.MethodGet || method == http.MethodHead:
		return ActionPull, true
	}
	return ActionPush, true
}

func methodNotAllowed(rt route, method string) *apiError {
	allow := strings.Join(allowedMethods(rt.kind), ", ")
	return newError(http.StatusMethodNotAllowed, codeUnsupported, "%s is not supported on %s", method, rt).withHeader("Allow", allow)
}

// recorder remembers the status and counts the body bytes of a response
// for the access log.
type recorder struct {
	http.ResponseWriter
	status  int
	bytes   int64
	written bool
	abort   bool // cut the connection once the request is logged
}

func (w *recorder) WriteHeader(code int) {
	if !w.written {
		w.status, w.written = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	w.written = true
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the sendfile path of the underlying writer for blobs.
func (w *recorder) ReadFrom(src io.Reader) (int64, error) {
	w.written = true
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(src)
		w.bytes += n
		return n, err
	}
	return io.Copy(writerOnly{w}, src)
}

// writerOnly hides ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }

// Unwrap lets http.ResponseController reach the connection (sendfile,
// deadlines, flushing).
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequest writes the access-log line. The path is logged without the
// query (which can carry tokens of other registries' schemes) and the
// Authorization header is never logged.
func (s *Server) logRequest(r *http.Request, rec *recorder, user string, d time.Duration, aerr *apiError) {
	level := slog.LevelInfo
	if rec.status >= 500 {
		level = slog.LevelError
	}
	ctx := context.WithoutCancel(r.Context())
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", rec.status),
		slog.Int64("bytes", rec.bytes),
		slog.Duration("duration", d),
		slog.String("remote", r.RemoteAddr),
	}
	if user != "" {
		attrs = append(attrs, slog.String("user", user))
	}
	if aerr != nil {
		attrs = append(attrs, slog.String("code", aerr.code))
		msg := aerr.message
		if aerr.cause != nil {
			msg += ": " + aerr.cause.Error()
		}
		attrs = append(attrs, slog.String("error", msg))
	}
	s.log.LogAttrs(ctx, level, "request", attrs...)
}
