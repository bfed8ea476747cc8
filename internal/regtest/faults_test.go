package regtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// pushedLayer pushes a random image of one layer of size bytes straight
// to host and returns the path of that layer's blob and its bytes.
func pushedLayer(t *testing.T, host string, size int64) (path string, data []byte) {
	t.Helper()
	PushRandom(t, host+"/app:v1", 1, size, "", "")
	img, err := remote.Image(parseRef(t, host+"/app:v1"), remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	path = "/v2/app/blobs/" + d.String()
	if data, _ = get(t, newClient(), "http://"+host+path); len(data) == 0 {
		t.Fatalf("GET %s: empty", path)
	}
	return path, data
}

// newClient is a client without connection reuse, so that the transport
// never retries a request on its own after a fault.
func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
}

// get fetches url and returns the body read and the error that ended the
// read; a status other than 200 fails the test.
func get(t *testing.T, c *http.Client, url string) ([]byte, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func TestFaultProxyPassesThrough(t *testing.T) {
	p := Faults(t, GGCR(t, nil))
	want := PushRandom(t, p.Host()+"/app:v1", 2, 4096, "", "")
	ref, err := name.ParseReference(p.Host() + "/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := img.Digest(); got.String() != want {
		t.Errorf("pulled %s through the proxy, pushed %s", got, want)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		rc, err := l.Compressed() // verified against its digest as it is read
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Errorf("reading a layer through the proxy: %v", err)
		}
		rc.Close()
	}
	if p.Requests() == 0 || p.Injected() != 0 {
		t.Errorf("%d requests, %d faults: want some requests and no fault", p.Requests(), p.Injected())
	}
}

func TestFaultProxyResetAfter(t *testing.T) {
	up := GGCR(t, nil)
	path, want := pushedLayer(t, up, 64<<10)
	p := Faults(t, up)
	h := p.Inject(Rule{Method: http.MethodGet, Path: `/blobs/sha256:`, Times: 1, Fault: ResetAfter(1000)})
	c := newClient()
	got, err := get(t, c, "http://"+p.Host()+path)
	if !errors.Is(err, syscall.ECONNRESET) || len(got) > 1000 {
		t.Errorf("first GET: %d bytes, err %v; want at most 1000 bytes and a connection reset", len(got), err)
	}
	got, err = get(t, c, "http://"+p.Host()+path)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("second GET: %d bytes, err %v; want the whole blob", len(got), err)
	}
	if h.Seen() != 2 || h.Injected() != 1 || h.Answered() != 1 {
		t.Errorf("seen %d, injected %d, answered %d; want 2, 1, 1", h.Seen(), h.Injected(), h.Answered())
	}
}

func TestFaultProxyTruncate(t *testing.T) {
	up := GGCR(t, nil)
	path, want := pushedLayer(t, up, 64<<10)
	p := Faults(t, up)
	for _, f := range []Fault{Truncate(5000), StallAfter(5000, 50*time.Millisecond)} {
		t.Run(f.String(), func(t *testing.T) {
			p.Clear()
			p.Inject(Rule{Method: http.MethodGet, Path: `/blobs/`, Fault: f})
			resp, err := newClient().Get("http://" + p.Host() + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.ContentLength != int64(len(want)) {
				t.Errorf("Content-Length %d, want the blob's %d", resp.ContentLength, len(want))
			}
			got, err := io.ReadAll(resp.Body)
			if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(got, want[:5000]) {
				t.Errorf("read %d bytes, err %v; want the first 5000 and an unexpected EOF", len(got), err)
			}
		})
	}
}

func TestFaultProxyStall(t *testing.T) {
	p := Faults(t, GGCR(t, nil))
	p.Inject(Rule{Path: `^/v2/$`, Times: 1, Fault: Stall(time.Hour)})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Host()+"/v2/", nil)
	if _, err := newClient().Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stalled request: err %v, want the client's deadline", err)
	}

	// A bounded stall ends with the connection closed, unanswered.
	p.Inject(Rule{Path: `^/v2/$`, Times: 1, Fault: Stall(10 * time.Millisecond)})
	if resp, err := newClient().Get("http://" + p.Host() + "/v2/"); err == nil {
		resp.Body.Close()
		t.Errorf("stall: got %s, want no response", resp.Status)
	}
	if resp, err := newClient().Get("http://" + p.Host() + "/v2/"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("after the stalls: %v, %v; want 200", resp, err)
	}
}

// A stall still held when the test ends does not keep the test from ending.
func TestFaultProxyCleanupEndsStalls(t *testing.T) {
	up := GGCR(t, nil)
	errc := make(chan error, 1)
	t.Run("stalled", func(t *testing.T) {
		p := Faults(t, up)
		h := p.Inject(Rule{Fault: Stall(time.Hour)})
		go func() {
			resp, err := newClient().Get("http://" + p.Host() + "/v2/")
			if err == nil {
				resp.Body.Close()
				err = fmt.Errorf("answered %s", resp.Status)
			}
			errc <- err
		}()
		for h.Injected() == 0 {
			time.Sleep(time.Millisecond)
		}
	})
	if err := <-errc; err == nil {
		t.Error("the stalled request was answered")
	}
}

func TestFaultProxyStatusBurst(t *testing.T) {
	p := Faults(t, GGCR(t, nil))
	h := p.Inject(Rule{Method: http.MethodGet, Path: `^/v2/$`, Times: 3, Fault: Status(http.StatusServiceUnavailable)})
	var codes []int
	for range 4 {
		resp, err := newClient().Get("http://" + p.Host() + "/v2/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusServiceUnavailable && !bytes.Contains(body, []byte(`"errors"`)) {
			t.Errorf("503 body %q is not a distribution error", body)
		}
	}
	if fmt.Sprint(codes) != "[503 503 503 200]" {
		t.Errorf("statuses %v, want three 503 then 200", codes)
	}
	if h.Seen() != 4 || h.Injected() != 3 || h.Answered() != 4 || p.Injected() != 3 {
		t.Errorf("seen %d, injected %d (proxy %d), answered %d; want 4, 3 (3), 4", h.Seen(), h.Injected(), p.Injected(), h.Answered())
	}
}

func TestFaultProxyRetryAfter(t *testing.T) {
	p := Faults(t, GGCR(t, nil))
	p.Inject(Rule{Path: `^/v2/$`, Times: 1, Fault: TooManyRequests(1500 * time.Millisecond)})
	p.Inject(Rule{Path: `^/v2/$`, Skip: 1, Times: 1, Fault: TooManyRequestsUntil(3 * time.Second)})

	resp, err := newClient().Get("http://" + p.Host() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("seconds form: %s, Retry-After %q; want 429 and 2", resp.Status, resp.Header.Get("Retry-After"))
	}

	before := time.Now()
	if resp, err = newClient().Get("http://" + p.Host() + "/v2/"); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	at, err := http.ParseTime(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || err != nil || at.Before(before.Add(3*time.Second)) {
		t.Errorf("date form: %s, Retry-After %q (%v); want 429 and a date at least 3s after %s", resp.Status, resp.Header.Get("Retry-After"), err, before.UTC().Format(http.TimeFormat))
	}
}

func TestFaultProxyLatency(t *testing.T) {
	p := Faults(t, GGCR(t, nil))
	h := p.Inject(Rule{Fault: Latency(100 * time.Millisecond)})
	start := time.Now()
	resp, err := newClient().Get("http://" + p.Host() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// A lower bound only: the fault's contract is "at least d".
	if took := time.Since(start); resp.StatusCode != http.StatusOK || took < 100*time.Millisecond {
		t.Errorf("%s after %s; want 200 after at least 100ms", resp.Status, took)
	}
	if h.Injected() != 1 || h.Answered() != 1 {
		t.Errorf("injected %d, answered %d; want 1, 1", h.Injected(), h.Answered())
	}
}

func TestFaultProxyResetRequestAfter(t *testing.T) {
	up := GGCR(t, nil)
	p := Faults(t, up)
	h := p.Inject(Rule{Method: http.MethodPost, Path: `/blobs/uploads/`, Times: 1, Fault: ResetRequestAfter(1000)})
	body := bytes.Repeat([]byte("ferry"), 20000)
	d := fmt.Sprintf("sha256:%x", sha256.Sum256(body))
	upload := func(host string) (int, error) {
		url := "http://" + host + "/v2/app/blobs/uploads/?digest=" + d
		resp, err := newClient().Post(url, "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := upload(p.Host()); err == nil {
		t.Errorf("first upload answered %d, want the connection reset", code)
	}
	head := func() int {
		resp, err := newClient().Head("http://" + up + "/v2/app/blobs/" + d)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := head(); got != http.StatusNotFound {
		t.Errorf("after the reset upload the registry answers HEAD with %d, want 404", got)
	}
	if code, err := upload(p.Host()); err != nil || code != http.StatusCreated {
		t.Errorf("second upload: %d, %v; want 201", code, err)
	}
	if got := head(); got != http.StatusOK || h.Injected() != 1 {
		t.Errorf("HEAD %d after the second upload, %d faults; want 200 and 1", got, h.Injected())
	}
}

func TestFaultProxyAlter(t *testing.T) {
	up := GGCR(t, nil)
	path, want := pushedLayer(t, up, 4096)
	p := Faults(t, up)
	p.Inject(Rule{Method: http.MethodGet, Path: `/blobs/`, Fault: Alter(func(h http.Header, body []byte) []byte {
		h.Set("X-Altered", "yes")
		return append(body, '!')
	})})
	p.Inject(Rule{Method: http.MethodHead, Path: `/blobs/`, Fault: Alter(func(h http.Header, body []byte) []byte {
		h.Del("Docker-Content-Digest")
		return body
	})})
	resp, err := newClient().Get("http://" + p.Host() + path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, append(want, '!')) || resp.Header.Get("X-Altered") != "yes" || resp.ContentLength != int64(len(want)+1) {
		t.Errorf("altered GET: %d bytes (Content-Length %d), X-Altered %q, err %v; want the blob and '!'", len(got), resp.ContentLength, resp.Header.Get("X-Altered"), err)
	}
	if resp, err = newClient().Head("http://" + p.Host() + path); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Docker-Content-Digest") != "" || resp.Header.Get("Content-Length") != strconv.Itoa(len(want)) {
		t.Errorf("altered HEAD: Docker-Content-Digest %q, Content-Length %q; want none and %d", resp.Header.Get("Docker-Content-Digest"), resp.Header.Get("Content-Length"), len(want))
	}
}

// Rules count every request they match; the first rule whose window a
// request falls in injects its fault.
func TestFaultProxyRuleWindows(t *testing.T) {
	p := Faults(t, GGCR(t, nil))
	count := p.Inject(Rule{Path: `^/v2/`})
	p.Inject(Rule{Path: `^/v2/$`, Skip: 1, Times: 1, Fault: Status(http.StatusInternalServerError)})
	p.Inject(Rule{Path: `^/v2/$`, Times: 3, Fault: Status(http.StatusBadGateway)})
	var codes []int
	for range 4 {
		resp, err := newClient().Get("http://" + p.Host() + "/v2/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if fmt.Sprint(codes) != "[502 500 502 200]" {
		t.Errorf("statuses %v, want 502 500 502 200", codes)
	}
	if count.Seen() != 4 || count.Injected() != 0 || len(count.Arrivals()) != 4 {
		t.Errorf("counting rule: seen %d, injected %d, %d arrivals; want 4, 0, 4", count.Seen(), count.Injected(), len(count.Arrivals()))
	}
	p.Clear()
	resp, err := newClient().Get("http://" + p.Host() + "/v2/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after Clear: %v, %v", resp, err)
	}
	resp.Body.Close()
	if count.Seen() != 4 {
		t.Errorf("a cleared rule went on counting")
	}
}
