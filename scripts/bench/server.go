package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// server is a registry process the harness started: ferry serve or
// distribution's docker-registry, on a 127.0.0.1 port. Its cost is read
// from /proc (procstat.go); Stop ends it, and so does the harness's exit
// (isolate: its own process group, killed with the harness).
type server struct {
	Name string
	Host string // "127.0.0.1:port"
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// Pid is the server's process id, for /proc.
func (s *server) Pid() int { return s.cmd.Process.Pid }

// Stop sends SIGTERM, waits up to 10 s, then kills the process group.
func (s *server) Stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Cancel()
		<-s.done
	}
	s.log.Close()
}

// Mark starts measuring the server's CPU time and peak resident set.
func (s *server) Mark() usageMark { return markUsage(s.Pid()) }

// RSS is the server's resident set now; 0 when unknown.
func (s *server) RSS() int64 {
	rss, _, err := procMemory(s.Pid())
	if err != nil {
		return 0
	}
	return rss
}

// startProcess starts path with args, output into logPath, in its own
// process group. ready reads its stdout until it knows the address.
func startProcess(ctx context.Context, name, path string, args []string, logPath string,
	ready func(ctx context.Context, stdout io.Reader, exited <-chan struct{}) (string, error)) (*server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "$ %s %s\n", path, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, path, args...)
	// docker-registry reads REGISTRY_* variables as configuration: a
	// tool's REGISTRY_AUTH_FILE would be its auth section.
	for _, kv := range toolEnv(filepath.Dir(logPath)) {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd.WaitDelay = 5 * time.Second
	isolate(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	s := &server{Name: name, cmd: cmd, done: make(chan struct{}), log: logf}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	host, err := ready(rctx, stdout, s.done)
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("%s did not start: %w (log: %s)", name, err, logPath)
	}
	s.Host = host
	return s, nil
}

// startFerryServe runs `ferry serve --addr 127.0.0.1:0 --log-level error
// ARGS...` and waits for the line that says where it listens.
func startFerryServe(ctx context.Context, ferry string, args []string, logPath string) (*server, error) {
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--log-level", "error"}, args...)
	return startProcess(ctx, "ferry serve", ferry, args, logPath, func(ctx context.Context, stdout io.Reader, _ <-chan struct{}) (string, error) {
		lines := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			first := true
			for sc.Scan() {
				if first {
					lines <- sc.Text()
					first = false
				}
			}
			if first {
				close(lines)
			}
		}()
		select {
		case line, ok := <-lines:
			if !ok {
				return "", errors.New("it exited before it printed its address")
			}
			return serveAddress(line)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
}

// serveAddress reads HOST:PORT from ferry serve's first line,
// "serving http://127.0.0.1:5000 (root DIR)".
func serveAddress(line string) (string, error) {
	rest, ok := strings.CutPrefix(line, "serving http://")
	if !ok {
		return "", fmt.Errorf("unexpected first line %q", line)
	}
	host, _, _ := strings.Cut(rest, " ")
	if _, _, err := net.SplitHostPort(host); err != nil {
		return "", fmt.Errorf("unexpected first line %q", line)
	}
	return host, nil
}

// dockerRegistryConfig is the configuration the harness gives
// docker-registry: filesystem storage under root, deletes enabled, no
// access log, errors only.
func dockerRegistryConfig(root, addr string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
  secret: ferry-bench
`, root, addr)
}

// startDockerRegistry writes DIR/config.yml and runs `docker-registry
// serve` with storage in DIR/storage, on a free port.
func startDockerRegistry(ctx context.Context, path, dir, logPath string) (*server, error) {
	if err := os.MkdirAll(filepath.Join(dir, "storage"), 0o755); err != nil {
		return nil, err
	}
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		cfg := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfg, []byte(dockerRegistryConfig(filepath.Join(dir, "storage"), addr)), 0o644); err != nil {
			return nil, err
		}
		s, err := startProcess(ctx, "docker-registry", path, []string{"serve", cfg}, logPath,
			func(ctx context.Context, stdout io.Reader, exited <-chan struct{}) (string, error) {
				go func() { _, _ = io.Copy(io.Discard, stdout) }()
				return addr, waitHTTP(ctx, "http://"+addr+"/v2/", exited)
			})
		if err == nil {
			return s, nil
		}
		last = err // the port may have been taken meanwhile
	}
	return nil, last
}

// freePort is a 127.0.0.1 address nothing listens on, for a server that
// cannot pick its own port.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// waitHTTP polls url until it answers 200, or the server exits.
func waitHTTP(ctx context.Context, url string, exited <-chan struct{}) error {
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			return fmt.Errorf("%s: %w", url, err)
		case <-exited:
			return errors.New("it exited")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dockerRegistry finds docker-registry and its version; missing says why
// it cannot run.
func dockerRegistry(ctx context.Context) (path, version, missing string) {
	p, err := exec.LookPath("docker-registry")
	if err != nil {
		return "", "", "not installed"
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, "--version").Output()
	if err != nil {
		return p, "unknown", ""
	}
	// "docker-registry github.com/docker/distribution 2.8.2+ds1"
	f := strings.Fields(firstLine(string(out)))
	if len(f) == 0 {
		return p, "unknown", ""
	}
	return p, f[len(f)-1], ""
}
