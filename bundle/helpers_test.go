package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/transfer"
)

// testRemote talks plain HTTP to the loopback test registries.
func testRemote() *transfer.Remote {
	return &transfer.Remote{Transport: func(string) (http.RoundTripper, error) { return http.DefaultTransport, nil }}
}

var fixedNow = func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) }

// source is a registry seeded with the images the tests bundle.
type source struct {
	host                          string
	app, multi, signed, sig, sbom string // digests
	big                           string // an image with layers of several MiB
}

func newSource(t *testing.T) *source {
	t.Helper()
	h := regtest.GGCR(t, nil)
	s := &source{host: h}
	s.app = regtest.PushImage(t, h+"/team/app:v1", regtest.Image{Layers: 2}, "", "")
	s.multi = regtest.PushRandomIndex(t, h+"/multi:v1", []string{"linux/amd64", "linux/arm64/v8"}, "", "")
	s.signed = regtest.PushImage(t, h+"/signed:v1", regtest.Image{Layers: 1}, "", "")
	s.sig = regtest.PushSignature(t, h+"/signed", s.signed, "", "")
	s.sbom = regtest.PushReferrer(t, h+"/signed", s.signed, "application/vnd.example.sbom", "", "")
	return s
}

// withBig adds big:v1, an image with two layers of 3 MiB: each streams
// into the tar through several copy buffers.
func (s *source) withBig(t *testing.T) *source {
	t.Helper()
	s.big = regtest.PushRandom(t, s.host+"/big:v1", 2, 3<<20, "", "")
	return s
}

func (s *source) refs(names ...string) []Request {
	var out []Request
	for _, n := range names {
		out = append(out, Request{Reference: s.host + "/" + n})
	}
	return out
}

// create writes a bundle of refs into dir/name and returns its path.
func create(t *testing.T, dir, name string, reqs []Request, mod func(*CreateOptions)) (string, *CreateResult) {
	t.Helper()
	path := filepath.Join(dir, name)
	opts := CreateOptions{Output: path, Remote: testRemote(), FerryVersion: "test", Now: fixedNow}
	if mod != nil {
		mod(&opts)
	}
	res, err := Create(context.Background(), reqs, opts)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return path, res
}

// importTo imports the bundle at path to a registry or layout.
func importTo(t *testing.T, path, to string, mod func(*ImportOptions)) (*ImportResult, error) {
	t.Helper()
	opts := ImportOptions{To: to, Remote: testRemote(), FerryVersion: "test", Now: fixedNow}
	if mod != nil {
		mod(&opts)
	}
	return Import(context.Background(), path, opts)
}

// catalogOf lists a registry's repositories.
func catalogOf(t *testing.T, host string) []string {
	t.Helper()
	resp, err := http.Get("http://" + host + "/v2/_catalog")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c.Repositories
}

// digestOf resolves ref ("host/repo:tag") with a HEAD request.
func digestOf(t *testing.T, ref string) string {
	t.Helper()
	i := strings.LastIndex(ref, ":")
	if at := strings.Index(ref, "@"); at >= 0 {
		i = at
	}
	slash := strings.Index(ref, "/")
	req, _ := http.NewRequest(http.MethodHead, "http://"+ref[:slash]+"/v2/"+ref[slash+1:i]+"/manifests/"+ref[i+1:], nil)
	req.Header.Set("Accept", transfer.ManifestAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return resp.Header.Get("Docker-Content-Digest")
}

// entry is a tar entry of a bundle being forged.
type entry struct {
	hdr  *tar.Header
	data []byte
	raw  []byte // written as is, instead of hdr and data
}

// readEntries reads every entry of a small tar.
func readEntries(t *testing.T, path string) []entry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []entry
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{hdr: hdr, data: data})
	}
}

// writeEntries writes a tar of entries to path and, when sums is set,
// a matching FILE.sha256, so that only the archive checks can object.
func writeEntries(t *testing.T, path string, entries []entry, sums bool) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if e.raw != nil {
			tw.Flush()
			buf.Write(e.raw)
			continue
		}
		if err := tw.WriteHeader(e.hdr); err != nil {
			t.Fatalf("writing %s: %v", e.hdr.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatalf("writing %s: %v", e.hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil && !strings.Contains(err.Error(), "too short") {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if sums {
		sum := sha256.Sum256(buf.Bytes())
		line := hex.EncodeToString(sum[:]) + "  " + filepath.Base(path) + "\n"
		if err := os.WriteFile(path+".sha256", []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// rawHeader returns the 512-byte header block tar writes for hdr, without
// any content: a header can claim more than follows.
func rawHeader(t *testing.T, hdr *tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	return slices.Clone(buf.Bytes())
}

// blobEntry finds the entry of a blob.
func blobEntry(entries []entry, d string) int {
	name := "blobs/sha256/" + strings.TrimPrefix(d, "sha256:")
	for i, e := range entries {
		if e.hdr != nil && e.hdr.Name == name {
			return i
		}
	}
	return -1
}

// problems joins a report's messages, for assertions.
func problems(rep *Report) string {
	var msgs []string
	for _, p := range rep.Problems {
		msgs = append(msgs, p.Message)
	}
	return strings.Join(msgs, "\n")
}

// faulty is go-containerregistry's registry behind a handler that can
// break blob downloads and slow down uploads, counting uploads done.
type faulty struct {
	host string
	// breakAfter, when set, cuts every GET of a blob of more than 1 KiB
	// after this many bytes, or half of it: resuming never gets to its end.
	breakAfter atomic.Int64
	// uploadDelay delays every blob upload's last request.
	uploadDelay atomic.Int64
	uploads     atomic.Int64
	// blobDelay delays every blob download.
	blobDelay atomic.Int64

	mu   sync.Mutex
	seen []string
}

func newFaulty(t *testing.T) *faulty {
	t.Helper()
	f := &faulty{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		if n := f.breakAfter.Load(); n > 0 && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			rec := httptest.NewRecorder()
			reg.ServeHTTP(rec, r)
			if rec.Body.Len() > 1024 {
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(rec.Body.Bytes()[:min(int(n), rec.Body.Len()/2)])
				panic(http.ErrAbortHandler) // cut the connection
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return
		}
		if d := f.blobDelay.Load(); d > 0 && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			select {
			case <-time.After(time.Duration(d)):
			case <-r.Context().Done():
				return
			}
		}
		upload := (r.Method == http.MethodPut || r.Method == http.MethodPost) && strings.Contains(r.URL.Path, "/blobs/uploads") && r.URL.Query().Get("digest") != ""
		if upload {
			if d := f.uploadDelay.Load(); d > 0 {
				time.Sleep(time.Duration(d))
			}
		}
		reg.ServeHTTP(w, r)
		if upload {
			f.uploads.Add(1)
		}
	}))
	t.Cleanup(srv.Close)
	f.host = strings.TrimPrefix(srv.URL, "http://")
	return f
}

func mustRepo(t *testing.T, s string) name.Repository {
	t.Helper()
	r, err := transfer.ParseRepository(s, false)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
