package regtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// DistributionBinary is the name of distribution's registry binary as the
// Debian docker-registry package installs it (/usr/bin/docker-registry).
const DistributionBinary = "docker-registry"

// Realm is the basic-auth realm of every registry this package starts.
const Realm = "ferry-test"

const (
	startAttempts = 5                // fresh ports to try when another process takes ours
	startTimeout  = 15 * time.Second // how long one start may take to answer /v2/
	stopTimeout   = 5 * time.Second  // how long to wait for a clean exit before SIGKILL
)

// DistributionOptions configures a registry started by Distribution.
// The zero value is an anonymous plain-HTTP registry.
type DistributionOptions struct {
	// Users maps user names to passwords. When it is not empty the registry
	// requires HTTP basic auth, checked against an htpasswd file (bcrypt).
	Users map[string]string

	// TLSCertFile and TLSKeyFile, when both are set, make the registry serve
	// HTTPS with this PEM certificate and key instead of plain HTTP. The
	// certificate must be valid for 127.0.0.1; clients must trust it.
	TLSCertFile string
	TLSKeyFile  string
}

// Distribution starts distribution's registry (the Debian docker-registry
// package, distribution v2) on a free 127.0.0.1 port and returns its
// "host:port". The registry stores content on the filesystem under a
// directory from t.TempDir, allows deletes, and has no notifications, proxy
// or other outbound connections configured. Distribution returns once /v2/
// answers; the process is stopped in t.Cleanup. Whatever the registry wrote
// to stdout and stderr is logged if the test fails.
//
// A missing binary fails the test with a hint to run
// scripts/install-test-deps.sh: it is never a reason to skip.
func Distribution(t testing.TB, opts DistributionOptions) string {
	t.Helper()

	bin, err := exec.LookPath(DistributionBinary)
	if err != nil {
		t.Fatalf("regtest: %s (distribution v2) not found in PATH: run scripts/install-test-deps.sh: %v", DistributionBinary, err)
	}
	if (opts.TLSCertFile == "") != (opts.TLSKeyFile == "") {
		t.Fatalf("regtest: DistributionOptions: TLSCertFile and TLSKeyFile must be set together")
	}

	dir := t.TempDir()
	storage := filepath.Join(dir, "storage")
	if err := os.Mkdir(storage, 0o755); err != nil {
		t.Fatalf("regtest: %v", err)
	}
	htpasswd := ""
	if len(opts.Users) > 0 {
		htpasswd = filepath.Join(dir, "htpasswd")
		if err := writeHtpasswd(htpasswd, opts.Users); err != nil {
			t.Fatalf("regtest: writing %s: %v", htpasswd, err)
		}
	}

	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("regtest: finding a free port: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", port)
		config := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(config, distributionConfig(addr, storage, htpasswd, opts), 0o644); err != nil {
			t.Fatalf("regtest: writing %s: %v", config, err)
		}

		p, err := startDistribution(t.Context(), bin, config, addr, opts.TLSCertFile != "")
		if err == nil {
			t.Cleanup(func() {
				p.stop()
				if t.Failed() {
					t.Logf("regtest: %s on %s logged:\n%s", DistributionBinary, addr, p.output.String())
				}
			})
			return addr
		}
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, "config.yml"))
	t.Fatalf("regtest: starting %s: %v\nconfig.yml:\n%s", DistributionBinary, lastErr, cfg)
	return ""
}

// distributionConfig renders a config.yml for distribution v2.8; see
// https://distribution.github.io/distribution/about/configuration/.
func distributionConfig(addr, storage, htpasswd string, opts DistributionOptions) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 0.1\n")
	fmt.Fprintf(&b, "log:\n  level: error\n  accesslog:\n    disabled: true\n")
	fmt.Fprintf(&b, "storage:\n  filesystem:\n    rootdirectory: %q\n  delete:\n    enabled: true\n", storage)
	fmt.Fprintf(&b, "  maintenance:\n    uploadpurging:\n      enabled: false\n")
	fmt.Fprintf(&b, "http:\n  addr: %q\n", addr)
	if opts.TLSCertFile != "" {
		fmt.Fprintf(&b, "  tls:\n    certificate: %q\n    key: %q\n", opts.TLSCertFile, opts.TLSKeyFile)
	}
	if htpasswd != "" {
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: %q\n    path: %q\n", Realm, htpasswd)
	}
	return []byte(b.String())
}

// writeHtpasswd writes users to path in htpasswd format with bcrypt hashes,
// the only kind distribution accepts.
func writeHtpasswd(path string, users map[string]string) error {
	var b bytes.Buffer
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if name == "" || strings.Contains(name, ":") {
			return fmt.Errorf("invalid user name %q", name)
		}
		// The lowest cost keeps tests fast; these passwords protect nothing.
		hash, err := bcrypt.GenerateFromPassword([]byte(users[name]), bcrypt.MinCost)
		if err != nil {
			return fmt.Errorf("hashing the password of %q: %w", name, err)
		}
		fmt.Fprintf(&b, "%s:%s\n", name, hash)
	}
	return os.WriteFile(path, b.Bytes(), 0o600)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the registry binds it; the caller
// retries with a new port when that happens.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

var errAddrInUse = errors.New("address already in use")

// process is a running registry.
type process struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's result, valid after done is closed
	output *syncBuffer
}

// startDistribution runs bin with config and waits until addr answers /v2/.
// It returns an error wrapping errAddrInUse when the port was taken.
func startDistribution(ctx context.Context, bin, config, addr string, useTLS bool) (*process, error) {
	p := &process{done: make(chan struct{}), output: new(syncBuffer)}
	p.cmd = exec.Command(bin, "serve", config)
	p.cmd.Env = registryEnv()
	p.cmd.Stdout = p.output
	p.cmd.Stderr = p.output
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()

	if err := p.waitReady(ctx, addr, useTLS); err != nil {
		p.stop()
		out := p.output.String()
		if strings.Contains(out, "address already in use") {
			return nil, fmt.Errorf("%s: %w", addr, errAddrInUse)
		}
		return nil, fmt.Errorf("%w; output:\n%s", err, out)
	}
	return p, nil
}

// waitReady polls GET /v2/ until it gets any HTTP response (200, or 401
// when auth is on), the process exits, or startTimeout passes.
func (p *process) waitReady(ctx context.Context, addr string, useTLS bool) error {
	scheme := "http"
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if useTLS {
		scheme = "https"
		// This probe only asks whether the server is up; clients verify.
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	client := &http.Client{Transport: tr, Timeout: time.Second}
	url := scheme + "://" + addr + "/v2/"

	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before answering %s: %v", url, p.err)
		case <-ctx.Done():
			return fmt.Errorf("no answer from %s: %w", url, ctx.Err())
		case <-tick.C:
		}
	}
}

// stop asks the registry to exit, and kills it if it does not in time.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// registryEnv is the environment for the registry process: ours, less the
// REGISTRY_* variables that would override its configuration file.
func registryEnv() []string {
	env := os.Environ()
	return slices.DeleteFunc(env, func(kv string) bool {
		return strings.HasPrefix(kv, "REGISTRY_")
	})
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
