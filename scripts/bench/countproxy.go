package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// countingProxy is an HTTP reverse proxy on 127.0.0.1 in front of a
// registry that counts the requests it passes, by kind (requestKind), and
// the GETs of each blob. The mirror suite puts it in front of the source
// to count what a rerun asks; the cache suite in front of the upstream, to
// check that a blob is fetched once however many clients want it.
type countingProxy struct {
	srv *http.Server
	ln  net.Listener

	mu       sync.Mutex
	kinds    map[string]int
	blobGets map[string]int // digest → GETs
}

func startCountingProxy(upstream string) (*countingProxy, error) {
	target, err := url.Parse("http://" + upstream)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, DisableCompression: true}
	rp.ErrorLog = nil
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting a counting proxy: %w", err)
	}
	p := &countingProxy{ln: ln, kinds: map[string]int{}, blobGets: map[string]int{}}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.count(r.Method, r.URL.Path)
			rp.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: time.Minute,
	}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Host is the proxy's "127.0.0.1:port".
func (p *countingProxy) Host() string { return p.ln.Addr().String() }

func (p *countingProxy) Close() error { return p.srv.Close() }

func (p *countingProxy) count(method, path string) {
	kind, digest := requestKind(method, path)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.kinds[kind]++
	if kind == "blob GET" {
		p.blobGets[digest]++
	}
}

// Reset forgets every count.
func (p *countingProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.kinds = map[string]int{}
	p.blobGets = map[string]int{}
}

// Counts is a copy of the counts so far.
func (p *countingProxy) Counts() requestCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := requestCounts{Kinds: map[string]int{}, BlobGets: map[string]int{}}
	for k, v := range p.kinds {
		c.Kinds[k] = v
	}
	for k, v := range p.blobGets {
		c.BlobGets[k] = v
	}
	return c
}

// requestKind names a registry request for counting: "ping", "tag list",
// "manifest HEAD", "blob GET" (and the blob's digest), "referrers",
// "upload", "catalog", or "other".
// https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#endpoints
func requestKind(method, path string) (kind, digest string) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	switch {
	case path == "/v2" || path == "/v2/":
		return "ping", ""
	case !ok:
		return "other", ""
	case rest == "_catalog":
		return "catalog", ""
	case strings.HasSuffix(rest, "/tags/list"):
		return "tag list", ""
	case strings.Contains(rest, "/blobs/uploads"):
		return "upload", ""
	}
	// The endpoint is the last of these in the path: a repository may
	// have "manifests" or "blobs" in its name.
	at, seg := -1, ""
	for _, s := range []string{"/manifests/", "/blobs/", "/referrers/"} {
		if i := strings.LastIndex(rest, s); i > at {
			at, seg = i, s
		}
	}
	if at <= 0 {
		return "other", ""
	}
	ref := rest[at+len(seg):]
	switch {
	case ref == "" || strings.Contains(ref, "/"):
		return "other", ""
	case seg == "/manifests/":
		return "manifest " + method, ""
	case seg == "/blobs/":
		return "blob " + method, ref
	}
	return "referrers", ""
}

// requestCounts is what a countingProxy saw.
type requestCounts struct {
	Kinds    map[string]int
	BlobGets map[string]int
}

// Total is the number of requests.
func (c requestCounts) Total() int {
	n := 0
	for _, v := range c.Kinds {
		n += v
	}
	return n
}

// String is "53 requests: 1 ping, 1 tag list, 50 manifest HEAD, …", the
// kinds in a fixed order.
func (c requestCounts) String() string {
	order := []string{"ping", "catalog", "tag list", "manifest HEAD", "manifest GET", "referrers", "blob HEAD", "blob GET", "upload"}
	var kinds []string
	for k := range c.Kinds {
		if !slices.Contains(order, k) {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)
	kinds = append(order, kinds...)
	var parts []string
	for _, k := range kinds {
		if n := c.Kinds[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
	}
	noun := "requests"
	if c.Total() == 1 {
		noun = "request"
	}
	if len(parts) == 0 {
		return "0 requests"
	}
	return fmt.Sprintf("%d %s: %s", c.Total(), noun, strings.Join(parts, ", "))
}

// OncePerBlob checks that each of blobs was fetched exactly once, and
// nothing else: "" when so, else what differs.
func (c requestCounts) OncePerBlob(blobs []string) string {
	var problems []string
	for _, d := range blobs {
		if n := c.BlobGets[d]; n != 1 {
			problems = append(problems, fmt.Sprintf("%s fetched %d times", short(d), n))
		}
	}
	for d, n := range c.BlobGets {
		if !slices.Contains(blobs, d) {
			problems = append(problems, fmt.Sprintf("%s (not the image's) fetched %d times", short(d), n))
		}
	}
	slices.Sort(problems)
	return strings.Join(problems, "; ")
}

// short is a digest's algorithm and first 12 hex digits.
func short(d string) string {
	if alg, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return alg + ":" + hex[:12]
	}
	return d
}
