package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-oci/ferry/internal/regtest"
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

func TestServeUpstreamUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--upstream", "ftp://registry.example"},
		{"serve", "--upstream", "https://registry.example/team"},
		{"serve", "--upstream", "Bad_NS=https://registry.example"},
		{"serve", "--upstream", "https://a.example", "--upstream", "https://b.example"},
		{"serve", "--upstream", "hub=https://a.example", "--upstream", "hub=https://b.example"},
		{"serve", "--cache-max-size", "10GiB"},
		{"serve", "--upstream", "https://a.example", "--cache-max-size", "lots"},
		{"serve", "--upstream", "https://a.example", "--upstream-ttl", "-1s"},
		{"serve", "--upstream", "https://a.example", "--bundle", "b.tar"},
	} {
		var errBuf syncBuf
		code := Main(context.Background(), args, IOStreams{In: strings.NewReader(""), Out: io.Discard, Err: &errBuf})
		if code != ExitUsage || !strings.Contains(errBuf.String(), "--") {
			t.Errorf("%v: exit %d, want %d with a message naming the flag: %s", args, code, ExitUsage, errBuf.String())
		}
	}
}

// TestServeUpstreamPullThrough runs `ferry serve --upstream` in front of a
// registry, with htpasswd, and then serves what it cached from --root
// alone.
func TestServeUpstreamPullThrough(t *testing.T) {
	up := regtest.GGCR(t, nil)
	want := regtest.PushImage(t, up+"/team/app:v1", regtest.Image{Layers: 1}, "", "")
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	url, stop, _ := startServe(t, "--root", root, "--htpasswd", htpasswd, "--upstream", "hub="+"http://"+up, "--cache-max-size", "1GiB")

	manifest := func(url, user string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url+"/v2/hub/team/app/manifests/v1", nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		if user != "" {
			req.SetBasicAuth(user, "s3cret")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := manifest(url, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous pull through the cache: %s, want 401", resp.Status)
	}
	if resp := manifest(url, "alice"); resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != want {
		t.Fatalf("pull through the cache: %s %q, want 200 with %s", resp.Status, resp.Header.Get("Docker-Content-Digest"), want)
	}
	if code := stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}

	// The cache is a layout like any other: served without the upstream.
	url, _, _ = startServe(t, "--root", root, "--htpasswd", htpasswd)
	if resp := manifest(url, "alice"); resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != want {
		t.Errorf("the cached tag from --root alone: %s %q, want 200 with %s", resp.Status, resp.Header.Get("Docker-Content-Digest"), want)
	}
}

var update = flag.Bool("update", false, "rewrite the golden files of testdata/nodeconfig")

// TestServeNodeConfig checks `ferry serve node-config` against the golden
// files in testdata/nodeconfig (rewritten with -update), and that what it
// prints parses as the TOML and JSON the nodes read.
func TestServeNodeConfig(t *testing.T) {
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"all.txt", []string{"--mirror", "https://ferry.lan:5000", "--ca-file", "/etc/ferry/ca.pem", "--default", "docker.io", "ghcr.io", "quay.io"}},
		{"all-without-docker.txt", []string{"--mirror", "https://ferry.lan:5000", "ghcr.io"}},
		{"containerd-http.toml", []string{"--mirror", "http://10.0.0.5:5000", "--format", "containerd", "registry-1.docker.io", "ghcr.io"}},
		{"registries-http.conf", []string{"--mirror", "http://10.0.0.5:5000", "--format", "registries.conf", "--default", "docker.io", "quay.io"}},
		{"daemon.json", []string{"--mirror", "https://ferry.lan:5000", "--default", "index.docker.io", "--format", "docker"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			var out, errBuf syncBuf
			code := Main(context.Background(), append([]string{"serve", "node-config"}, tc.args...), IOStreams{In: strings.NewReader(""), Out: &out, Err: &errBuf})
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errBuf.String())
			}
			path := filepath.Join("..", "..", "testdata", "nodeconfig", tc.golden)
			if *update {
				if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run the test with -update to write it)", err)
			}
			if out.String() != string(want) {
				t.Errorf("output differs from %s (run with -update after checking it):\n%s", path, out.String())
			}
			checkNodeConfigSyntax(t, tc.golden, out.String())
		})
	}
}

// checkNodeConfigSyntax parses each hosts.toml, registries.conf and
// daemon.json in out.
func checkNodeConfigSyntax(t *testing.T, golden, out string) {
	t.Helper()
	switch {
	case strings.HasSuffix(golden, ".json"):
		var daemon struct {
			Mirrors []string `json:"registry-mirrors"`
		}
		if err := json.Unmarshal([]byte(out), &daemon); err != nil || len(daemon.Mirrors) != 1 {
			t.Errorf("daemon.json does not parse with one mirror: %v\n%s", err, out)
		}
	case strings.HasSuffix(golden, ".conf"):
		var conf struct {
			Registry []struct {
				Prefix, Location string
				Mirror           []struct {
					Location string
					Insecure bool
				}
			}
		}
		if _, err := toml.Decode(out, &conf); err != nil || len(conf.Registry) == 0 || len(conf.Registry[0].Mirror) != 1 {
			t.Errorf("registries.conf does not parse with a mirror per registry: %v\n%s", err, out)
		}
	case strings.HasSuffix(golden, ".toml"):
		files := strings.Split(out, "# /etc/containerd/certs.d/")[1:]
		for _, f := range files {
			var hosts struct {
				Server string
				Host   map[string]struct {
					Capabilities []string
					OverridePath bool `toml:"override_path"`
				}
			}
			if _, err := toml.Decode(f[strings.IndexByte(f, '\n'):], &hosts); err != nil || hosts.Server == "" || len(hosts.Host) != 1 {
				t.Errorf("hosts.toml does not parse with a server and one host: %v\n%s", err, f)
			}
		}
		if len(files) == 0 {
			t.Errorf("no hosts.toml in:\n%s", out)
		}
	}
}

func TestServeNodeConfigUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"docker.io"},
		{"--mirror", "ferry.lan:5000", "docker.io"},
		{"--mirror", "https://ferry.lan:5000/v2/x", "docker.io"},
		{"--mirror", "https://ferry.lan:5000"},
		{"--mirror", "https://ferry.lan:5000", "--format", "podman", "docker.io"},
		{"--mirror", "https://ferry.lan:5000", "--format", "docker", "docker.io"},
		{"--mirror", "https://ferry.lan:5000", "docker.io", "index.docker.io"},
		{"--mirror", "https://ferry.lan:5000", "ghcr.io/team"},
	} {
		var errBuf syncBuf
		code := Main(context.Background(), append([]string{"serve", "node-config"}, args...), IOStreams{In: strings.NewReader(""), Out: io.Discard, Err: &errBuf})
		if code != ExitUsage {
			t.Errorf("%v: exit %d, want %d: %s", args, code, ExitUsage, errBuf.String())
		}
	}
}

// TestServeUpstreamCredentials: the cache fetches from a registry that
// wants a password with the credentials `ferry login` stored.
func TestServeUpstreamCredentials(t *testing.T) {
	up := regtest.GGCR(t, map[string]string{"alice": "s3cret"})
	want := regtest.PushImage(t, up+"/app:v1", regtest.Image{Layers: 1}, "alice", "s3cret")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	var errBuf syncBuf
	if code := Main(context.Background(), []string{"login", up, "-u", "alice", "--password-stdin"}, IOStreams{In: strings.NewReader("s3cret\n"), Out: io.Discard, Err: &errBuf}); code != 0 {
		t.Fatalf("login: exit %d: %s", code, errBuf.String())
	}
	url, _, logs := startServe(t, "--upstream", "http://"+up)
	req, _ := http.NewRequest(http.MethodGet, url+"/v2/app/manifests/v1", nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != want {
		t.Errorf("pull through a cache of a registry with a password: %s %q, want 200 with %s; log:\n%s", resp.Status, resp.Header.Get("Docker-Content-Digest"), want, logs.String())
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Error("the log shows the upstream's password")
	}
}
