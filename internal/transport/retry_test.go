package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// get sends a GET for path to srv through rt and returns the status and
// body.
func get(t *testing.T, ctx context.Context, rt http.RoundTripper, url string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, string(body), nil
}

// failFirst answers the first n requests with status (and Retry-After if
// set), the rest with 200 "ok".
func failFirst(n, status int, retryAfter func() string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, i int) {
		if i < n {
			if retryAfter != nil {
				w.Header().Set("Retry-After", retryAfter())
			}
			w.WriteHeader(status)
			io.WriteString(w, "try later")
			return
		}
		io.WriteString(w, "ok")
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	for name, value := range map[string]func() string{
		"seconds":   func() string { return "1" },
		"HTTP date": func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv, rec := server(t, false, failFirst(1, http.StatusTooManyRequests, value))
			rt := newRT(t, Options{Host: hostOf(srv), Retry: fastRetry()})
			start := time.Now()
			resp, body, err := get(t, t.Context(), rt, srv.URL+"/v2/")
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || body != "ok" {
				t.Errorf("got %d %q, want 200 \"ok\" after the retry", resp.StatusCode, body)
			}
			if rec.count() != 2 {
				t.Errorf("server saw %d requests, want 2", rec.count())
			}
			if elapsed < time.Second {
				t.Errorf("retried after %v, before the 1s Retry-After", elapsed)
			}
		})
	}
}

func TestRetryAfterBeyondCapReturnsAtOnce(t *testing.T) {
	t.Parallel()
	srv, rec := server(t, false, failFirst(1, http.StatusTooManyRequests, func() string { return "120" }))
	rt := newRT(t, Options{Host: hostOf(srv), Retry: Retry{Attempts: 5, Base: 5 * time.Millisecond, Cap: 2 * time.Second}})
	start := time.Now()
	resp, body, err := get(t, t.Context(), rt, srv.URL+"/v2/")
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("took %v; a Retry-After over the cap must not be waited for", elapsed)
	}
	if resp.StatusCode != http.StatusTooManyRequests || body != "try later" || resp.Header.Get("Retry-After") != "120" {
		t.Errorf("got %d %q Retry-After %q, want the server's 429 as is", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if rec.count() != 1 {
		t.Errorf("server saw %d requests, want 1", rec.count())
	}
}

func TestRetryAfterBeyondDeadlineReturnsAtOnce(t *testing.T) {
	t.Parallel()
	srv, rec := server(t, false, failFirst(1, http.StatusTooManyRequests, func() string { return "5" }))
	rt := newRT(t, Options{Host: hostOf(srv), Retry: fastRetry()})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	resp, _, err := get(t, ctx, rt, srv.URL+"/v2/")
	if err != nil {
		t.Fatalf("got %v, want the 429 returned before the deadline", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("took %v; a wait past the deadline must not start", elapsed)
	}
	if resp.StatusCode != http.StatusTooManyRequests || rec.count() != 1 {
		t.Errorf("got %d after %d requests, want 429 after 1", resp.StatusCode, rec.count())
	}
}

func TestRetryWaitEndsOnCancel(t *testing.T) {
	t.Parallel()
	srv, _ := server(t, false, failFirst(1, http.StatusServiceUnavailable, func() string { return "30" }))
	rt := newRT(t, Options{Host: hostOf(srv), Retry: Retry{Attempts: 5, Base: time.Millisecond, Cap: time.Minute}})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, _, err := get(t, ctx, rt, srv.URL+"/v2/")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("cancelling took %v to end the wait", elapsed)
	}
}

func TestRetry503ThenSuccess(t *testing.T) {
	t.Parallel()
	srv, rec := server(t, false, failFirst(2, http.StatusServiceUnavailable, nil))
	rt := newRT(t, Options{Host: hostOf(srv), Retry: fastRetry()})
	resp, body, err := get(t, t.Context(), rt, srv.URL+"/v2/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || body != "ok" || rec.count() != 3 {
		t.Errorf("got %d %q after %d requests, want 200 \"ok\" after 3", resp.StatusCode, body, rec.count())
	}
}

func TestRetryGivesUpWithLastResponse(t *testing.T) {
	t.Parallel()
	srv, rec := server(t, false, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"errors":[{"code":"UNKNOWN","message":"boom"}]}`)
	})
	rt := newRT(t, Options{Host: hostOf(srv), Retry: Retry{Attempts: 3, Base: time.Millisecond}})
	resp, body, err := get(t, t.Context(), rt, srv.URL+"/v2/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, "boom") {
		t.Errorf("got %d %q, want the last 500 with its body", resp.StatusCode, body)
	}
	if rec.count() != 3 {
		t.Errorf("server saw %d requests, want Attempts = 3", rec.count())
	}
}

// resetFirst resets the connection of the first request (no response at
// all) and answers the others with 200 "ok".
func resetFirst(w http.ResponseWriter, r *http.Request, n int) {
	if n == 0 {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		if tcp, ok := conn.(*net.TCPConn); ok {
			tcp.SetLinger(0) // RST, not FIN
		}
		conn.Close()
		return
	}
	io.WriteString(w, "ok")
}

func TestConnectionResetIsRetried(t *testing.T) {
	t.Parallel()
	srv, rec := server(t, false, resetFirst)
	rt := newRT(t, Options{Host: hostOf(srv), Retry: fastRetry()})
	resp, body, err := get(t, t.Context(), rt, srv.URL+"/v2/")
	if err != nil {
		t.Fatalf("got %v, want the reset retried", err)
	}
	if resp.StatusCode != http.StatusOK || body != "ok" || rec.count() != 2 {
		t.Errorf("got %d %q after %d requests, want 200 \"ok\" after 2", resp.StatusCode, body, rec.count())
	}

	// The same server without retries shows the failure the retry hid.
	srv2, rec2 := server(t, false, resetFirst)
	rt2 := newRT(t, Options{Host: hostOf(srv2), Retry: Retry{Attempts: 1}})
	if _, _, err := get(t, t.Context(), rt2, srv2.URL+"/v2/"); err == nil || rec2.count() != 1 {
		t.Errorf("without retries: err = %v after %d requests, want a connection error after 1", err, rec2.count())
	}
}

func TestBodyIsResentOnlyWhenReplayable(t *testing.T) {
	t.Parallel()
	const payload = "manifest bytes"
	put := func(rt http.RoundTripper, url string, body io.Reader) *http.Response {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, url, body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	t.Run("GetBody", func(t *testing.T) {
		srv, rec := server(t, false, failFirst(1, http.StatusServiceUnavailable, nil))
		rt := newRT(t, Options{Host: hostOf(srv), Retry: fastRetry()})
		resp := put(rt, srv.URL+"/v2/r/manifests/1", bytes.NewReader([]byte(payload)))
		if resp.StatusCode != http.StatusOK || rec.count() != 2 {
			t.Fatalf("got %d after %d requests, want 200 after 2", resp.StatusCode, rec.count())
		}
		if got := rec.get(1).Body; got != payload {
			t.Errorf("retried PUT carried %q, want the whole body %q again", got, payload)
		}
	})
	t.Run("streaming", func(t *testing.T) {
		srv, rec := server(t, false, failFirst(1, http.StatusServiceUnavailable, nil))
		rt := newRT(t, Options{Host: hostOf(srv), Retry: fastRetry()})
		resp := put(rt, srv.URL+"/v2/r/blobs/uploads/1", io.NopCloser(strings.NewReader(payload)))
		if resp.StatusCode != http.StatusServiceUnavailable || rec.count() != 1 {
			t.Errorf("got %d after %d requests, want the 503 after 1: a consumed stream cannot be resent", resp.StatusCode, rec.count())
		}
	})
	t.Run("PATCH after 500", func(t *testing.T) {
		// The server may have appended the chunk: the caller restarts
		// the upload session instead (ROBUSTNESS row 5).
		srv, rec := server(t, false, failFirst(1, http.StatusInternalServerError, nil))
		rt := newRT(t, Options{Host: hostOf(srv), Retry: fastRetry()})
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPatch, srv.URL+"/v2/r/blobs/uploads/1", strings.NewReader(payload))
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError || rec.count() != 1 {
			t.Errorf("got %d after %d requests, want the 500 after 1", resp.StatusCode, rec.count())
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"Sat, 01 Mar 2025 12:00:30 GMT", 30 * time.Second, true},
		{"Sat, 01 Mar 2025 11:00:00 GMT", 0, true}, // in the past
		{"-1", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	} {
		got, ok := RetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("RetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
