package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// startServe runs `ferry serve args...` in this process and returns the
// URL it prints, a func that stops it (as SIGINT would) and returns its
// exit code, and its stderr.
func startServe(t *testing.T, args ...string) (string, func() int, *syncBuf) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	errBuf := &syncBuf{}
	done := make(chan int, 1)
	go func() {
		code := Main(ctx, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...), IOStreams{In: strings.NewReader(""), Out: pw, Err: errBuf})
		pw.Close()
		done <- code
	}()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	var line string
	select {
	case line = <-lines:
	case code := <-done:
		t.Fatalf("ferry serve exited with %d: %s", code, errBuf.String())
	case <-time.After(10 * time.Second):
		t.Fatal("ferry serve did not start")
	}
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "serving" {
		t.Fatalf("first line %q, want serving URL", line)
	}
	stopped := false
	stop := func() int {
		if stopped {
			return 0
		}
		stopped = true
		cancel()
		select {
		case c := <-done:
			return c
		case <-time.After(10 * time.Second):
			t.Fatal("ferry serve did not stop")
			return -1
		}
	}
	t.Cleanup(func() { stop() })
	return f[1], stop, errBuf
}

func get(t *testing.T, c *http.Client, url, user, pass string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestServeEphemeralAndGracefulStop(t *testing.T) {
	url, stop, errBuf := startServe(t)
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("url %q", url)
	}
	if resp := get(t, http.DefaultClient, url+"/v2/", "", ""); resp.StatusCode != 200 {
		t.Fatalf("/v2/: %s", resp.Status)
	}
	if code := stop(); code != 0 {
		t.Errorf("exit code %d after stop, want 0; stderr: %s", code, errBuf.String())
	}
	if !strings.Contains(errBuf.String(), "GET") || !strings.Contains(errBuf.String(), "/v2/") {
		t.Errorf("access log has no line for the request: %q", errBuf.String())
	}
}

func TestServeRootPersists(t *testing.T) {
	root := t.TempDir()
	url, stop, _ := startServe(t, "--root", root)
	resp, err := http.Post(url+"/v2/app/blobs/uploads/?digest=sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", "application/octet-stream", strings.NewReader("foo"))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %v %v", resp, err)
	}
	stop()
	if _, err := os.Stat(filepath.Join(root, "blobs", "sha256", "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae")); err != nil {
		t.Errorf("the blob is not in --root after a stop: %v", err)
	}
}

func TestServeTLSSelfSignedHtpasswdReadOnly(t *testing.T) {
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	htpasswd := filepath.Join(dir, "htpasswd")
	os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600)
	ca := filepath.Join(dir, "ca.pem")
	url, _, errBuf := startServe(t, "--tls-self-signed", "--ca-file", ca, "--htpasswd", htpasswd, "--read-only")
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("url %q, want https", url)
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatalf("CA file: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if resp := get(t, c, url+"/v2/", "", ""); resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("anonymous: %s %q, want 401 with a Basic challenge", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	if resp := get(t, c, url+"/v2/", "alice", "s3cret"); resp.StatusCode != 200 {
		t.Errorf("alice: %s", resp.Status)
	}
	req, _ := http.NewRequest(http.MethodPost, url+"/v2/app/blobs/uploads/", nil)
	req.SetBasicAuth("alice", "s3cret")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("write in --read-only: %s, want 405", resp.Status)
	}
	if strings.Contains(errBuf.String(), "s3cret") {
		t.Error("the access log shows the password")
	}
}

func TestServeUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--tls-cert", "x.pem"},
		{"serve", "--tls-self-signed", "--tls-cert", "a", "--tls-key", "b"},
		{"serve", "--log-level", "loud"},
		{"serve", "--htpasswd", "/nonexistent/htpasswd"},
	} {
		var errBuf syncBuf
		code := Main(context.Background(), args, IOStreams{In: strings.NewReader(""), Out: io.Discard, Err: &errBuf})
		if code != ExitUsage {
			t.Errorf("%v: exit %d, want %d: %s", args, code, ExitUsage, errBuf.String())
		}
	}
}

// syncBuf is a bytes.Buffer safe for the server's goroutines.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
