package regtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FaultProxy is an HTTP reverse proxy on 127.0.0.1 in front of a registry
// that injects faults into the requests its rules pick: connection resets,
// truncated and altered bodies, stalls, error statuses, 429 with
// Retry-After, and latency. Requests no rule picks pass through untouched,
// with the Host header the client sent, so the registry builds upload
// Locations that point back at the proxy.
//
// Create one with Faults and add rules with Inject; a rule without a fault
// only counts the requests it matches. It is safe for concurrent use:
//
//	p := regtest.Faults(t, regtest.GGCR(t, nil))
//	p.Inject(regtest.Rule{Method: "GET", Path: `/blobs/`, Times: 2, Fault: regtest.ResetAfter(64 << 10)})
//	// use p.Host() as the registry's host

type FaultProxy struct {
	t    testing.TB
	host string
	rp   *httputil.ReverseProxy
	done chan struct{} // closed when the test ends: stalls give up

	mu       sync.Mutex
	rules    []*Hits
	requests int
	injected int
	log      []string
}

// Faults starts a FaultProxy in front of the plain-HTTP registry at
// upstream ("host:port") and returns it. The proxy is stopped in
// t.Cleanup: requests it holds (stalls, latency) end first. When the test
// has failed, the faults injected are logged.
func Faults(t testing.TB, upstream string) *FaultProxy {
	t.Helper()
	target, err := url.Parse("http://" + upstream)
	if err != nil || target.Host != upstream {
		t.Fatalf("regtest: Faults: upstream %q is not a host:port", upstream)
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}
	p := &FaultProxy{t: t, done: make(chan struct{})}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
		ModifyResponse: func(resp *http.Response) error {
			if loc := resp.Header.Get("Location"); strings.HasPrefix(loc, "http://"+upstream+"/") {
				resp.Header.Set("Location", "http://"+p.host+strings.TrimPrefix(loc, "http://"+upstream))
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil {
				p.note(fmt.Sprintf("%s %s: upstream: %v", r.Method, r.URL.Path, err))
			}
			w.WriteHeader(http.StatusBadGateway)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := httptest.NewUnstartedServer(p)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.host = srv.Listener.Addr().String()
	srv.Start()
	t.Cleanup(func() {
		close(p.done)
		srv.Close()
		tr.CloseIdleConnections()
		if t.Failed() {
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Logf("regtest: fault proxy %s → %s: %d requests, %d faults injected:\n%s", p.host, upstream, p.requests, p.injected, strings.Join(p.log, "\n"))
		}
	})
	return p
}

// Host is the proxy's "127.0.0.1:port": use it where the registry's would go.
func (p *FaultProxy) Host() string { return p.host }

// Rule picks requests and says what to do to them. A request is matched
// by every rule whose Method, Path and Query fit, and each of those counts
// it; the fault injected is that of the first rule, in the order they were
// added, for which the request falls in its window of occurrences.
type Rule struct {
	// Method matches the request method exactly; empty matches every one.
	Method string
	// Path is a regular expression searched for in the URL path; empty
	// matches every path.
	Path string
	// Query is a regular expression searched for in the query string,
	// unescaped ("digest=sha256:…"); empty matches every query.
	Query string
	// Skip lets the first Skip matching requests through untouched.
	Skip int
	// Times is how many matching requests after those get the fault; zero
	// means every one.
	Times int
	// Fault is what happens to them. The zero Fault injects nothing: the
	// rule only counts.
	Fault Fault
}

// Hits counts what happened to the requests one rule matched.
type Hits struct {
	rule        Rule
	path, query *regexp.Regexp
	mu          sync.Mutex
	seen        int
	injected    int
	answered    int
	arrivals    []time.Time
}

// Inject adds a rule and returns its counters. An invalid regular
// expression fails the test.
func (p *FaultProxy) Inject(r Rule) *Hits {
	p.t.Helper()
	h := &Hits{rule: r}
	var err error
	if h.path, err = regexp.Compile(r.Path); err != nil {
		p.t.Fatalf("regtest: fault rule Path %q: %v", r.Path, err)
	}
	if h.query, err = regexp.Compile(r.Query); err != nil {
		p.t.Fatalf("regtest: fault rule Query %q: %v", r.Query, err)
	}
	p.mu.Lock()
	p.rules = append(p.rules, h)
	p.mu.Unlock()
	return h
}

// Clear removes every rule: from now on requests pass through. The Hits
// of removed rules keep their counts.
func (p *FaultProxy) Clear() {
	p.mu.Lock()
	p.rules = nil
	p.mu.Unlock()
}

// Requests is how many requests the proxy has received.
func (p *FaultProxy) Requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests
}

// Injected is how many faults the proxy has injected, under every rule.
func (p *FaultProxy) Injected() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.injected
}

// Seen is how many requests the rule matched.
func (h *Hits) Seen() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen
}

// Injected is how many of them got the rule's fault. A fault that acts
// after n bytes of a body counts only when the body was that long.
func (h *Hits) Injected() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.injected
}

// Answered is how many of them the proxy answered in full, whether from
// the registry or with an injected status.
func (h *Hits) Answered() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.answered
}

// Arrivals are the times the matched requests reached the proxy, in order.
func (h *Hits) Arrivals() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.arrivals...)
}

// matches reports whether the rule's method, path and query fit r.
func (h *Hits) matches(r *http.Request) bool {
	query, err := url.QueryUnescape(r.URL.RawQuery)
	if err != nil {
		query = r.URL.RawQuery
	}
	return (h.rule.Method == "" || h.rule.Method == r.Method) &&
		h.path.MatchString(r.URL.Path) && h.query.MatchString(query)
}

// count records a matching request that arrived at now and reports
// whether it falls in the rule's window.
func (h *Hits) count(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen++
	h.arrivals = append(h.arrivals, now)
	n := h.seen - h.rule.Skip
	return h.rule.Fault.apply != nil && n > 0 && (h.rule.Times == 0 || n <= h.rule.Times)
}

func (h *Hits) addAnswered() {
	h.mu.Lock()
	h.answered++
	h.mu.Unlock()
}

// ServeHTTP implements http.Handler.
func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	p.mu.Lock()
	p.requests++
	n := p.requests
	rules := p.rules
	p.mu.Unlock()

	var matched []*Hits
	var picked *Hits
	for _, h := range rules {
		if !h.matches(r) {
			continue
		}
		matched = append(matched, h)
		if h.count(now) && picked == nil {
			picked = h
		}
	}
	c := &call{w: w, r: r, p: p}
	if picked == nil {
		p.rp.ServeHTTP(w, r)
	} else {
		c.fired = func() {
			picked.mu.Lock()
			picked.injected++
			picked.mu.Unlock()
			p.mu.Lock()
			p.injected++
			p.mu.Unlock()
			p.note(fmt.Sprintf("#%d %s %s: %s", n, r.Method, r.URL.RequestURI(), picked.rule.Fault))
		}
		picked.rule.Fault.apply(c)
	}
	if !c.cut {
		for _, h := range matched {
			h.addAnswered()
		}
	}
}

// note adds a line to what is logged when the test fails.
func (p *FaultProxy) note(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, line)
}

// Fault is what the proxy does to a request a rule picked. Make one with
// ResetAfter, Truncate, StallAfter, Stall, Status, TooManyRequests,
// TooManyRequestsUntil, Latency, ResetRequestAfter or Alter.
type Fault struct {
	desc  string
	apply func(c *call)
}

// String describes the fault.
func (f Fault) String() string { return f.desc }

// call is one request a fault acts on.
type call struct {
	w     http.ResponseWriter
	r     *http.Request
	p     *FaultProxy
	fired func() // counts the fault as injected
	cut   bool   // the connection was cut: the request was not answered
}

// forward sends the request on to the registry, writing the response to w.
func (c *call) forward(w http.ResponseWriter) { c.p.rp.ServeHTTP(w, c.r) }

// wait returns after d, when the client gives up, or when the test ends,
// whichever comes first.
func (c *call) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.r.Context().Done():
	case <-c.p.done:
	}
}

// drop closes the client's connection without more bytes: with reset it
// sends a TCP RST (the client reads "connection reset by peer"), otherwise
// a FIN (an early EOF). A response begun is flushed first.
func (c *call) drop(reset bool, begun bool) {
	c.cut = true
	rc := http.NewResponseController(c.w)
	if begun {
		_ = rc.Flush()
	}
	conn, buf, err := rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // the server closes the connection
	}
	_ = buf.Flush()
	if tcp, ok := conn.(*net.TCPConn); ok && reset {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// drain reads the request body to its end, as a registry that fails after
// receiving it would, so the client is not cut off mid-send.
func (c *call) drain() { _, _ = io.Copy(io.Discard, c.r.Body) }

// ResetAfter forwards the request and resets the connection (TCP RST) once
// n bytes of the response body have reached the client. A body no longer
// than n bytes passes whole.
func ResetAfter(n int64) Fault {
	return Fault{fmt.Sprintf("reset after %d bytes of the response", n), func(c *call) {
		c.forward(&cutWriter{ResponseWriter: c.w, limit: n, cut: func() { c.fired(); c.drop(true, true) }})
	}}
}

// Truncate forwards the request with the registry's headers, Content-Length
// included, and closes the connection after n bytes of the body: the client
// reads an early EOF. A body no longer than n bytes passes whole.
func Truncate(n int64) Fault {
	return Fault{fmt.Sprintf("truncate the response after %d bytes", n), func(c *call) {
		c.forward(&cutWriter{ResponseWriter: c.w, limit: n, cut: func() { c.fired(); c.drop(false, true) }})
	}}
}

// StallAfter forwards the request, sends n bytes of the body, then sends
// nothing more for d (or until the client gives up) and closes the
// connection. A body no longer than n bytes passes whole.
func StallAfter(n int64, d time.Duration) Fault {
	return Fault{fmt.Sprintf("stall %s after %d bytes of the response", d, n), func(c *call) {
		c.forward(&cutWriter{ResponseWriter: c.w, limit: n, cut: func() {
			c.fired()
			_ = http.NewResponseController(c.w).Flush()
			c.wait(d)
			c.drop(false, true)
		}})
	}}
}

// Stall holds the request unanswered for d, or until the client gives up,
// then closes the connection without a response. The registry never sees
// the request.
func Stall(d time.Duration) Fault {
	return Fault{fmt.Sprintf("stall %s without answering", d), func(c *call) {
		c.fired()
		c.wait(d)
		c.drop(false, false)
	}}
}

// Status answers with code and a distribution-spec error body, without
// forwarding the request; its body is read first. Status(503) with Times k
// is a burst of k errors.
func Status(code int) Fault {
	return Fault{fmt.Sprintf("answer %d", code), func(c *call) {
		c.fired()
		c.drain()
		writeError(c.w, code, nil)
	}}
}

// TooManyRequests answers 429 with Retry-After in seconds: wait rounded up
// to a whole second.
func TooManyRequests(wait time.Duration) Fault {
	secs := int64((wait + time.Second - 1) / time.Second)
	return Fault{fmt.Sprintf("answer 429, Retry-After: %d", secs), func(c *call) {
		c.fired()
		c.drain()
		writeError(c.w, http.StatusTooManyRequests, http.Header{"Retry-After": {strconv.FormatInt(secs, 10)}})
	}}
}

// TooManyRequestsUntil answers 429 with Retry-After as an HTTP date at
// least wait after the moment it answers (rounded up to the next whole
// second, the date's resolution).
func TooManyRequestsUntil(wait time.Duration) Fault {
	return Fault{fmt.Sprintf("answer 429, Retry-After: a date %s ahead", wait), func(c *call) {
		c.fired()
		c.drain()
		at := time.Now().Add(wait)
		if t := at.Truncate(time.Second); t.Before(at) {
			at = t.Add(time.Second)
		}
		writeError(c.w, http.StatusTooManyRequests, http.Header{"Retry-After": {at.UTC().Format(http.TimeFormat)}})
	}}
}

// Latency holds the request for d (less if the client gives up) and then
// forwards it.
func Latency(d time.Duration) Fault {
	return Fault{fmt.Sprintf("delay %s", d), func(c *call) {
		c.fired()
		c.wait(d)
		if c.r.Context().Err() != nil {
			c.cut = true
			return
		}
		c.forward(c.w)
	}}
}

// ResetRequestAfter reads n bytes of the request body and resets the
// connection, as a network failing mid-upload would; the registry never
// sees the request. A body no longer than n bytes is forwarded whole.
func ResetRequestAfter(n int64) Fault {
	return Fault{fmt.Sprintf("reset after %d bytes of the request body", n), func(c *call) {
		head, err := io.ReadAll(io.LimitReader(c.r.Body, n+1))
		if err == nil && int64(len(head)) <= n {
			c.r.Body = io.NopCloser(bytes.NewReader(head))
			c.forward(c.w)
			return
		}
		c.fired()
		c.drop(true, false)
	}}
}

// Alter forwards the request, reads the whole response, and sends the
// status and headers with the body fn returns; fn may change the headers
// too. Content-Length is set to the new body's length. For HEAD, fn gets
// no body and only its header changes count.
func Alter(fn func(h http.Header, body []byte) []byte) Fault {
	return Fault{"alter the response", func(c *call) {
		rec := httptest.NewRecorder()
		c.forward(rec)
		c.fired()
		head := c.r.Method == http.MethodHead
		var body []byte
		if head {
			fn(rec.Header(), nil) // headers only; Content-Length stays the registry's
		} else {
			body = fn(rec.Header(), rec.Body.Bytes())
			rec.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		for k, v := range rec.Header() {
			c.w.Header()[k] = v
		}
		c.w.WriteHeader(rec.Code)
		_, _ = c.w.Write(body)
	}}
}

// writeError writes a distribution-spec error response.
func writeError(w http.ResponseWriter, code int, h http.Header) {
	for k, v := range h {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"errors":[{"code":"UNKNOWN","message":"injected fault: %d %s"}]}`+"\n", code, http.StatusText(code))
}

// cutWriter passes limit bytes of a response body and then calls cut
// once; writes after that fail.
type cutWriter struct {
	http.ResponseWriter
	limit   int64
	written int64
	cut     func()
	isCut   bool
}

func (w *cutWriter) Write(b []byte) (int, error) {
	if w.isCut {
		return 0, errCut
	}
	if room := w.limit - w.written; int64(len(b)) > room {
		n, _ := w.ResponseWriter.Write(b[:room])
		w.written += int64(n)
		w.isCut = true
		w.cut()
		return n, errCut
	}
	n, err := w.ResponseWriter.Write(b)
	w.written += int64(n)
	return n, err
}

// FlushError flushes what was written, unless the response was cut. The
// reverse proxy flushes streamed responses from a timer: that must not
// reach a connection the fault took over.
func (w *cutWriter) FlushError() error {
	if w.isCut {
		return errCut
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *cutWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// errCut is what writes to a response get after the proxy cut it.
var errCut = errors.New("regtest: the fault proxy cut this response")
