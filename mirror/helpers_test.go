package mirror

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/ferry-oci/ferry/internal/transfer"
	"github.com/ferry-oci/ferry/internal/transport"
)

// request is one request a counted registry answered.
type request struct {
	Method string
	Kind   string // ping, manifests, blobs, uploads, tags, referrers
	Repo   string
	Ref    string // tag or digest; "" for tags, ping and uploads
	Status int
}

func (r request) String() string {
	return fmt.Sprintf("%s %s %s %s → %d", r.Method, r.Kind, r.Repo, r.Ref, r.Status)
}

// counted is go-containerregistry's registry behind a handler that
// records every request.
type counted struct {
	Host string

	mu   sync.Mutex
	reqs []request
	// fail, when set, answers a request with this status instead of the
	// registry when it returns true.
	fail func(r request) int
}

func newCounted(t *testing.T) *counted {
	t.Helper()
	c := &counted{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := classify(r)
		c.mu.Lock()
		fail := c.fail
		c.mu.Unlock()
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		if fail != nil {
			if code := fail(req); code != 0 {
				http.Error(rw, `{"errors":[{"code":"UNKNOWN","message":"injected"}]}`, code)
				req.Status = code
				c.record(req)
				return
			}
		}
		reg.ServeHTTP(rw, r)
		req.Status = rw.status
		c.record(req)
	}))
	t.Cleanup(srv.Close)
	c.Host = strings.TrimPrefix(srv.URL, "http://")
	return c
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func classify(r *http.Request) request {
	p := r.URL.Path
	req := request{Method: r.Method}
	if p == "/v2/" || p == "/v2" {
		req.Kind = "ping"
		return req
	}
	rest := strings.TrimPrefix(p, "/v2/")
	for _, kind := range []string{"/manifests/", "/blobs/uploads", "/blobs/", "/tags/list", "/referrers/"} {
		if i := strings.LastIndex(rest, kind); i >= 0 {
			req.Repo = rest[:i]
			req.Ref = strings.TrimPrefix(rest[i+len(kind):], "/")
			req.Kind = strings.Trim(kind, "/")
			switch kind {
			case "/blobs/uploads":
				req.Kind, req.Ref = "uploads", ""
			case "/tags/list":
				req.Kind, req.Ref = "tags", ""
			}
			return req
		}
	}
	req.Kind = "other"
	return req
}

func (c *counted) record(r request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, r)
}

// take returns the requests recorded so far and forgets them.
func (c *counted) take() []request {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.reqs
	c.reqs = nil
	return out
}

func (c *counted) reset() { c.take() }

func (c *counted) setFail(f func(request) int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail = f
}

// summary counts requests by "METHOD kind".
func summary(reqs []request) map[string]int {
	m := map[string]int{}
	for _, r := range reqs {
		m[r.Method+" "+r.Kind]++
	}
	return m
}

func dump(reqs []request) string {
	lines := make([]string, len(reqs))
	for i, r := range reqs {
		lines[i] = r.String()
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// remote is a transfer.Remote with ferry's own transport, anonymous.
func ferryRemote() *transfer.Remote {
	return &transfer.Remote{Transport: func(host string) (http.RoundTripper, error) {
		return transport.New(transport.Options{Host: host})
	}}
}

// writeConfig writes a mirror config to a temporary directory and loads it.
func writeConfig(t *testing.T, dir, text string) *Config {
	t.Helper()
	path := filepath.Join(dir, "mirror.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("loading:\n%s\n%v", text, err)
	}
	return cfg
}

func mirrorRun(t *testing.T, cfg *Config, opts Options) *Report {
	t.Helper()
	if opts.Remote == nil {
		opts.Remote = ferryRemote()
	}
	rep, err := Run(context.Background(), cfg, opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

// actions lists "action tag (reason)" for each item, failed ones as
// "failed tag: error".
func actions(rep *Report) string {
	var out []string
	for _, it := range rep.Items {
		if it.Err != nil {
			out = append(out, fmt.Sprintf("failed %s: %v", it.Tag, it.Err))
			continue
		}
		out = append(out, fmt.Sprintf("%s %s (%s)", it.Action, it.Tag, it.Reason))
	}
	for _, f := range rep.Failures {
		out = append(out, fmt.Sprintf("sync %d failed: %v", f.Sync, f.Err))
	}
	return strings.Join(out, "\n")
}

func item(t *testing.T, rep *Report, tag string) *Item {
	t.Helper()
	for _, it := range rep.Items {
		if it.Tag == tag {
			return it
		}
	}
	t.Fatalf("no item for %s in:\n%s", tag, actions(rep))
	return nil
}
