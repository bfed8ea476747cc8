package transport

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeNet is a Base transport that routes requests by URL host to test
// servers on 127.0.0.1, so tests can use real-looking host names (and
// non-loopback addresses) without a request ever leaving the machine. A
// host it does not know is recorded and answered with an error, never
// dialled.
type fakeNet struct {
	mu    sync.Mutex
	hosts map[string]*httptest.Server // by URL host, e.g. "registry.example.com"
	seen  []string                    // "METHOD url" of every request that reached it
}

func newFakeNet() *fakeNet { return &fakeNet{hosts: map[string]*httptest.Server{}} }

// add routes host (as in a URL, with a port if the URL has one) to srv.
func (f *fakeNet) add(host string, srv *httptest.Server) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts[host] = srv
}

func (f *fakeNet) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.seen = append(f.seen, req.Method+" "+req.URL.String())
	srv := f.hosts[req.URL.Host]
	f.mu.Unlock()
	if srv == nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("test network: no route to %s", req.URL.Host)
	}
	r := req.Clone(req.Context())
	r.URL.Host = srv.Listener.Addr().String()
	r.Host = req.URL.Host
	return srv.Client().Transport.RoundTrip(r)
}

// reached reports the requests that got past the policy to host.
func (f *fakeNet) reached(host string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, s := range f.seen {
		if strings.Contains(s, "://"+host+"/") || strings.HasSuffix(s, "://"+host) {
			out = append(out, s)
		}
	}
	return out
}

func (f *fakeNet) all() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// seenRequest is what a test server recorded of a request.
type seenRequest struct {
	Method, Path string
	Header       http.Header
	Body         string
}

// recorder records the requests a test server receives.
type recorder struct {
	mu   sync.Mutex
	reqs []seenRequest
}

// record stores r (reading its body) and returns how many requests came
// before it.
func (rec *recorder) record(r *http.Request) int {
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.reqs = append(rec.reqs, seenRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: string(body)})
	return len(rec.reqs) - 1
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.reqs)
}

func (rec *recorder) get(i int) seenRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.reqs[i]
}

// server starts a test server (TLS if tls is set) whose handler is given
// the index of each request; its requests are recorded in the returned
// recorder.
func server(t *testing.T, tls bool, h func(w http.ResponseWriter, r *http.Request, n int)) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h(w, r, rec.record(r))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, rec
}

// hostOf is the host:port of a test server.
func hostOf(srv *httptest.Server) string { return srv.Listener.Addr().String() }

// newRT builds the transport under test or fails the test.
func newRT(t *testing.T, opts Options) http.RoundTripper {
	t.Helper()
	rt, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	return rt
}

// fastRetry keeps backoffs short in tests.
func fastRetry() Retry { return Retry{Attempts: 5, Base: 5 * time.Millisecond, Cap: 10 * time.Second} }
