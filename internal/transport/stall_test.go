package transport

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A body that stops sending mid-way fails the read with ErrStalled
// instead of hanging; one that sends slowly but steadily is read whole.
func TestStalledBody(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		if r.URL.Path == "/steady" {
			for range 10 {
				w.Write([]byte(strings.Repeat("x", 100)))
				w.(http.Flusher).Flush()
				time.Sleep(50 * time.Millisecond)
			}
			return
		}
		w.Write([]byte(strings.Repeat("x", 100)))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	host := strings.TrimPrefix(srv.URL, "http://")
	rt, err := New(Options{Host: host, BodyIdle: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: rt}

	resp, err := client.Get(srv.URL + "/stall")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		b, err := io.ReadAll(resp.Body)
		if len(b) != 100 {
			t.Errorf("read %d bytes before the stall, want 100", len(b))
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "no data for 300ms") {
			t.Errorf("reading a stalled body: %v, want ErrStalled saying how long", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("reading a stalled body did not end")
	}
	resp.Body.Close()

	resp, err = client.Get(srv.URL + "/steady")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, err := io.ReadAll(resp.Body); err != nil || len(b) != 1000 {
		t.Errorf("a slow, steady body: %d bytes, %v; want all 1000", len(b), err)
	}
}
