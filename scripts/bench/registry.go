package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// benchRegistry is go-containerregistry's registry (pkg/registry) serving
// plain HTTP on a 127.0.0.1 port, with blobs on disk.
//
// Two things differ from registry.New with its defaults, both so that the
// registry is not what a benchmark measures:
//   - blobs live on disk, one directory per repository (blobStore): a blob
//     pushed to one repository is unknown in another, as in distribution,
//     so every copy into a fresh repository moves every blob;
//   - uploads (POST, PATCH, PUT under /blobs/uploads/) are handled here
//     (uploadHandler): they stream to a file, hashing as they go, and only
//     the upload being written is locked. pkg/registry buffers each upload
//     in memory and holds one registry-wide lock while it reads a PATCH or
//     PUT body, which would serialise every client's parallel uploads.
//
// Manifests, tags, referrers and blob reads are pkg/registry's own.
type benchRegistry struct {
	store   *blobStore
	uploads *uploadHandler
	srv     *http.Server
	ln      net.Listener
}

// startRegistry starts a registry storing under dir; logw, when not nil,
// receives pkg/registry's request log.
func startRegistry(dir string, logw io.Writer) (*benchRegistry, error) {
	store, err := newBlobStore(dir)
	if err != nil {
		return nil, err
	}
	if logw == nil {
		logw = io.Discard
	}
	logger := log.New(logw, "", log.LstdFlags)
	reg := registry.New(
		registry.WithBlobHandler(store),
		registry.WithReferrersSupport(true),
		registry.Logger(logger),
	)
	up := &uploadHandler{store: store, uploads: map[string]*upload{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting a registry: %w", err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if repo, id, ok := uploadPath(r.URL.Path); ok {
				up.serve(w, r, repo, id)
				return
			}
			reg.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: time.Minute,
		ErrorLog:          logger,
	}
	go func() { _ = srv.Serve(ln) }()
	return &benchRegistry{store: store, uploads: up, srv: srv, ln: ln}, nil
}

// Host is the registry's "127.0.0.1:port".
func (r *benchRegistry) Host() string { return r.ln.Addr().String() }

// Close stops the server and drops its connections.
func (r *benchRegistry) Close() error { return r.srv.Close() }

// Drop forgets every blob and pending upload of repo, to free the disk.
// Its manifests stay (they are small and in memory).
func (r *benchRegistry) Drop(repo string) error {
	r.uploads.discard(repo)
	return os.RemoveAll(r.store.repoDir(repo))
}

// blobStore is a registry.BlobHandler on disk: DIR/repos/KEY/ALG/HEX, with
// KEY derived from the repository name.
type blobStore struct {
	dir string
}

var (
	_ registry.BlobHandler       = (*blobStore)(nil)
	_ registry.BlobStatHandler   = (*blobStore)(nil)
	_ registry.BlobPutHandler    = (*blobStore)(nil)
	_ registry.BlobDeleteHandler = (*blobStore)(nil)
)

func newBlobStore(dir string) (*blobStore, error) {
	for _, d := range []string{filepath.Join(dir, "repos"), filepath.Join(dir, "uploads")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return &blobStore{dir: dir}, nil
}

func (s *blobStore) repoDir(repo string) string {
	sum := sha256.Sum256([]byte(repo))
	return filepath.Join(s.dir, "repos", hex.EncodeToString(sum[:8]))
}

func (s *blobStore) path(repo string, h v1.Hash) string {
	return filepath.Join(s.repoDir(repo), h.Algorithm, h.Hex)
}

// Stat trusts the file's size: content was verified when it was written.
func (s *blobStore) Stat(_ context.Context, repo string, h v1.Hash) (int64, error) {
	fi, err := os.Stat(s.path(repo, h))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, registry.ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Get returns the open file, which pkg/registry serves ranges from.
func (s *blobStore) Get(_ context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	f, err := os.Open(s.path(repo, h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, registry.ErrNotFound
	}
	return f, err
}

// Put is used by pkg/registry only for uploads that uploadHandler does not
// take; rc verifies the digest as it is read.
func (s *blobStore) Put(_ context.Context, repo string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	f, err := os.CreateTemp(filepath.Join(s.dir, "uploads"), "put-*")
	if err != nil {
		return err
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	return s.commit(repo, h, f.Name())
}

// Delete removes one blob from one repository.
func (s *blobStore) Delete(_ context.Context, repo string, h v1.Hash) error {
	err := os.Remove(s.path(repo, h))
	if errors.Is(err, fs.ErrNotExist) {
		return registry.ErrNotFound
	}
	return err
}

// commit moves a verified temporary file into place.
func (s *blobStore) commit(repo string, h v1.Hash, tmp string) error {
	p := s.path(repo, h)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Bytes is the total size of the blobs repo holds.
func (s *blobStore) Bytes(repo string) (int64, error) {
	total, err := dirBytes(s.repoDir(repo))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return total, err
}

// dirBytes is the total size of the regular files under dir.
func dirBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += fi.Size()
		}
		return nil
	})
	return total, err
}

// uploadPath splits /v2/REPO/blobs/uploads/[ID]; ok is false for every
// other path.
func uploadPath(p string) (repo, id string, ok bool) {
	rest, found := strings.CutPrefix(p, "/v2/")
	if !found {
		return "", "", false
	}
	const marker = "/blobs/uploads"
	i := strings.LastIndex(rest, marker)
	if i <= 0 {
		return "", "", false
	}
	repo, tail := rest[:i], rest[i+len(marker):]
	switch {
	case tail == "" || tail == "/":
		return repo, "", true
	case tail[0] == '/' && !strings.Contains(tail[1:], "/"):
		return repo, tail[1:], true
	}
	return "", "", false
}

// uploadHandler implements blob uploads, OCI distribution spec v1.1
// "Pushing blobs": monolithic (POST ?digest=, or POST then PUT with the
// body), chunked (PATCH, with or without Content-Range) and streamed.
// Cross-repository mounts are declined by starting an upload, which the
// spec allows.
// https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#pushing-blobs
type uploadHandler struct {
	store   *blobStore
	mu      sync.Mutex
	uploads map[string]*upload
}

// upload is one session: a temporary file and the digest of what it holds.
type upload struct {
	mu   sync.Mutex // held while a request writes to the session
	repo string
	f    *os.File
	h    hash.Hash
	size int64
	dead bool // discarded or committed
}

func (u *upload) write(r io.Reader) error {
	n, err := io.Copy(io.MultiWriter(u.f, u.h), r)
	u.size += n
	return err
}

func (u *upload) close() {
	u.dead = true
	u.f.Close()
	os.Remove(u.f.Name())
}

func (h *uploadHandler) serve(w http.ResponseWriter, r *http.Request, repo, id string) {
	defer r.Body.Close()
	if id == "" {
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", r.Method+" on an upload URL without a session")
			return
		}
		h.start(w, r, repo)
		return
	}
	h.mu.Lock()
	u := h.uploads[id]
	h.mu.Unlock()
	if u == nil || u.repo != repo {
		writeError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no upload session "+id)
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.dead {
		writeError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no upload session "+id)
		return
	}
	switch r.Method {
	case http.MethodGet:
		uploadStatus(w, repo, id, u.size, http.StatusNoContent)
	case http.MethodPatch:
		if cr := r.Header.Get("Content-Range"); cr != "" {
			var start, end int64
			if _, err := fmt.Sscanf(cr, "%d-%d", &start, &end); err != nil || start != u.size {
				w.Header().Set("Range", rangeHeader(u.size))
				writeError(w, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID",
					fmt.Sprintf("Content-Range %q does not follow the %d bytes received", cr, u.size))
				return
			}
		}
		if err := u.write(r.Body); err != nil {
			h.forget(id, u)
			writeError(w, http.StatusBadRequest, "BLOB_UPLOAD_INVALID", "reading the chunk: "+err.Error())
			return
		}
		uploadStatus(w, repo, id, u.size, http.StatusAccepted)
	case http.MethodPut:
		if err := u.write(r.Body); err != nil {
			h.forget(id, u)
			writeError(w, http.StatusBadRequest, "BLOB_UPLOAD_INVALID", "reading the body: "+err.Error())
			return
		}
		want, err := v1.NewHash(r.URL.Query().Get("digest"))
		if err != nil || want.Algorithm != "sha256" {
			writeError(w, http.StatusBadRequest, "DIGEST_INVALID", "a sha256 digest is required")
			return
		}
		h.forget(id, nil)
		h.finish(w, u, want)
	case http.MethodDelete:
		h.forget(id, u)
		w.WriteHeader(http.StatusNoContent)
	default:
		writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", r.Method+" on an upload session")
	}
}

// start handles POST: a monolithic upload when there is a digest, a new
// session otherwise.
func (h *uploadHandler) start(w http.ResponseWriter, r *http.Request, repo string) {
	f, err := os.CreateTemp(filepath.Join(h.store.dir, "uploads"), "upload-*")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	u := &upload{repo: repo, f: f, h: sha256.New()}
	if d := r.URL.Query().Get("digest"); d != "" {
		want, err := v1.NewHash(d)
		if err != nil || want.Algorithm != "sha256" {
			u.close()
			writeError(w, http.StatusBadRequest, "DIGEST_INVALID", "a sha256 digest is required")
			return
		}
		if err := u.write(r.Body); err != nil {
			u.close()
			writeError(w, http.StatusBadRequest, "BLOB_UPLOAD_INVALID", "reading the body: "+err.Error())
			return
		}
		h.finish(w, u, want)
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	h.mu.Lock()
	h.uploads[id] = u
	h.mu.Unlock()
	uploadStatus(w, repo, id, 0, http.StatusAccepted)
}

// finish verifies a complete upload and moves it into the store.
func (h *uploadHandler) finish(w http.ResponseWriter, u *upload, want v1.Hash) {
	got := hex.EncodeToString(u.h.Sum(nil))
	if got != want.Hex {
		u.close()
		writeError(w, http.StatusBadRequest, "DIGEST_INVALID",
			fmt.Sprintf("uploaded content has digest sha256:%s, not %s", got, want))
		return
	}
	u.dead = true
	if err := u.f.Close(); err != nil {
		os.Remove(u.f.Name())
		writeError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	if err := h.store.commit(u.repo, want, u.f.Name()); err != nil {
		writeError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	w.Header().Set("Location", "/v2/"+u.repo+"/blobs/"+want.String())
	w.Header().Set("Docker-Content-Digest", want.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// forget ends session id; u, when not nil, is closed and removed.
func (h *uploadHandler) forget(id string, u *upload) {
	h.mu.Lock()
	delete(h.uploads, id)
	h.mu.Unlock()
	if u != nil {
		u.close()
	}
}

// discard ends every session of repo.
func (h *uploadHandler) discard(repo string) {
	h.mu.Lock()
	var dropped []*upload
	for id, u := range h.uploads {
		if u.repo == repo {
			delete(h.uploads, id)
			dropped = append(dropped, u)
		}
	}
	h.mu.Unlock()
	for _, u := range dropped {
		u.mu.Lock()
		if !u.dead {
			u.close()
		}
		u.mu.Unlock()
	}
}

func rangeHeader(size int64) string {
	if size == 0 {
		return "0-0"
	}
	return fmt.Sprintf("0-%d", size-1)
}

func uploadStatus(w http.ResponseWriter, repo, id string, size int64, code int) {
	w.Header().Set("Location", "/v2/"+repo+"/blobs/uploads/"+id)
	w.Header().Set("Range", rangeHeader(size))
	w.Header().Set("Docker-Upload-UUID", id)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(code)
}

// writeError writes the spec's error body.
// https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#error-codes
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]string{{"code": code, "message": msg}},
	})
}
