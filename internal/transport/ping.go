package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// go-containerregistry pings a registry (GET /v2/) before anything else,
// to learn its scheme and how it authenticates. For a registry where plain
// http is allowed it asks https first and http only once https has failed:
// two round trips and a TLS attempt, one after the other, each time a
// repository of a plain-http registry is opened.
//
// racePing sends both, the plain one a few milliseconds ahead. When the
// plain request gets a registry's answer (200 or 401) before https
// answers, the https request fails at once with errPlainHTTP and the
// answer is kept for the http ping that go-containerregistry sends next,
// which takes it without a round trip; on loopback, no TLS handshake is
// even started. When https answers first, it is the registry's scheme, as
// before, and the plain answer is dropped; later pings of that registry
// ask https alone. Either way the scheme chosen is one the registry
// speaks, and http only where AllowsHTTP.

// errPlainHTTP fails the https ping of a registry that answered plain http
// first.
var errPlainHTTP = errors.New("the registry answered plain http first")

// pingAnswer is a registry's answer to a plain-http ping, body read.
type pingAnswer struct {
	status int
	header http.Header
	body   []byte
}

// maxPingBody bounds the body of a ping answer that is kept.
const maxPingBody = 64 << 10

// isPing reports whether req is go-containerregistry's ping of the
// registry itself.
func (t *roundTripper) isPing(req *http.Request) bool {
	return req.Method == http.MethodGet && req.URL.Path == "/v2/" && req.URL.RawQuery == "" &&
		t.policy.allowHTTP && req.URL.Host == t.policy.host
}

// plainHeadStart is how long the plain ping goes alone before https
// joins: on loopback a plain-http registry answers within it, and no TLS
// handshake is started at all.
const plainHeadStart = 5 * time.Millisecond

// racePing answers the https ping req, racing a plain-http one.
func (t *roundTripper) racePing(req *http.Request) (*http.Response, error) {
	plainCtx, cancelPlain := context.WithCancel(req.Context())
	defer cancelPlain()
	plain := req.Clone(plainCtx)
	plain.URL.Scheme = "http"
	plainDone := make(chan *pingAnswer, 1) // nil: not a registry's answer
	go func() { plainDone <- registryAnswer(t.send(plain)) }()
	plainHTTP := func(a *pingAnswer) (*http.Response, error) {
		t.keepPing(a)
		return nil, fmt.Errorf("https://%s/v2/: %w", t.policy.host, errPlainHTTP)
	}

	head := time.NewTimer(plainHeadStart)
	defer head.Stop()
	plainFailed := false
	select {
	case a := <-plainDone:
		if a != nil {
			return plainHTTP(a)
		}
		plainFailed = true
	case <-head.C:
	}

	tlsCtx, cancelTLS := context.WithCancel(req.Context())
	type result struct {
		resp *http.Response
		err  error
	}
	tlsDone := make(chan result, 1)
	go func() {
		resp, err := t.send(req.WithContext(tlsCtx))
		tlsDone <- result{resp, err}
	}()
	// overTLS returns the https result; the plain request is cancelled on
	// return, the https one once its body is closed.
	overTLS := func(r result) (*http.Response, error) {
		if r.err != nil {
			cancelTLS()
			return nil, r.err
		}
		t.speaksTLS.Store(true)
		r.resp.Body = &cancelOnClose{ReadCloser: r.resp.Body, cancel: cancelTLS}
		return r.resp, nil
	}
	if plainFailed {
		return overTLS(<-tlsDone)
	}
	select {
	case r := <-tlsDone:
		if r.err != nil {
			// go-containerregistry asks http next: the plain answer in
			// flight is that answer.
			if a := <-plainDone; a != nil {
				t.keepPing(a)
			}
		}
		return overTLS(r)
	case a := <-plainDone:
		if a == nil {
			return overTLS(<-tlsDone)
		}
		cancelTLS()
		go func() {
			if r := <-tlsDone; r.err == nil {
				discard(r.resp)
			}
		}()
		return plainHTTP(a)
	}
}

// registryAnswer keeps a plain ping's response when it is a registry's
// answer, 200 or 401, with a body of at most maxPingBody; any other
// response is closed.
func registryAnswer(resp *http.Response, err error) *pingAnswer {
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPingBody+1))
	if err != nil || len(body) > maxPingBody {
		return nil
	}
	return &pingAnswer{status: resp.StatusCode, header: resp.Header, body: body}
}

// keepPing keeps a for the next plain-http ping.
func (t *roundTripper) keepPing(a *pingAnswer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pings = append(t.pings, a)
}

// takePing returns a kept answer for the plain-http ping req, or nil.
func (t *roundTripper) takePing(req *http.Request) *http.Response {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.pings) == 0 {
		return nil
	}
	a := t.pings[0]
	t.pings = t.pings[1:]
	if t.debug != nil {
		t.debug(fmt.Sprintf("--- GET %s: answered by the plain http ping raced with https", redactURL(req.URL)))
	}
	return a.response(req)
}

// response is a as the response to req.
func (a *pingAnswer) response(req *http.Request) *http.Response {
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", a.status, http.StatusText(a.status)),
		StatusCode:    a.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        a.header.Clone(),
		Body:          io.NopCloser(bytes.NewReader(a.body)),
		ContentLength: int64(len(a.body)),
		Request:       req,
	}
}

// cancelOnClose cancels a request's context once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
	once   sync.Once
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(c.cancel)
	return err
}
