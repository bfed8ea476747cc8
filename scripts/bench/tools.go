package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// toolNames are the tools the harness knows, ferry first.
var toolNames = []string{"ferry", "crane", "regctl", "skopeo"}

// tool is one copier to measure.
type tool struct {
	Name    string
	Path    string // the executable; empty when it cannot run
	Missing string // why it cannot run: "not installed", "not built", …
	Version string
	env     []string
	args    func(src, dst string) []string
}

// toolSetup is what finding the tools needs to know.
type toolSetup struct {
	ferry      string   // bin/ferry, or "" when it was not built
	ferryFlags []string // extra flags for ferry copy
	home       string   // a directory to make each tool's HOME in
	hosts      []string // every registry address the tools will talk to
}

// findTools looks up each named tool, asks its version and prepares its
// configuration. A tool that is missing or cannot be set up is returned
// with Missing set; that is a result to report, not an error.
func findTools(ctx context.Context, names []string, s toolSetup) []*tool {
	var tools []*tool
	for _, n := range names {
		t := &tool{Name: n}
		tools = append(tools, t)
		home := filepath.Join(s.home, n)
		if err := os.MkdirAll(filepath.Join(home, ".docker"), 0o700); err != nil {
			t.Missing = "setup failed: " + err.Error()
			continue
		}
		t.env = toolEnv(home)
		var versionArgs []string
		switch n {
		case "ferry":
			if s.ferry == "" {
				t.Missing = "not built"
				continue
			}
			p, err := filepath.Abs(s.ferry)
			if err == nil {
				_, err = os.Stat(p)
			}
			if err != nil {
				t.Missing = "not built"
				continue
			}
			t.Path = p
			versionArgs = []string{"version"}
			flags := s.ferryFlags
			t.args = func(src, dst string) []string {
				return append(append([]string{"copy"}, flags...), src, dst)
			}
		case "crane":
			versionArgs = []string{"version"}
			t.args = func(src, dst string) []string { return []string{"copy", "--insecure", src, dst} }
		case "regctl":
			versionArgs = []string{"version", "--format", "{{.VCSTag}}"}
			t.args = func(src, dst string) []string { return []string{"image", "copy", src, dst} }
		case "regsync":
			versionArgs = []string{"version", "--format", "{{.VCSTag}}"}
			t.args = func(string, string) []string { return nil }
		case "skopeo":
			versionArgs = []string{"--version"}
			// --insecure-policy: no /etc/containers/policy.json is needed.
			t.args = func(src, dst string) []string {
				return []string{"--insecure-policy", "copy", "--all",
					"--src-tls-verify=false", "--dest-tls-verify=false",
					"docker://" + src, "docker://" + dst}
			}
		default:
			t.Missing = "unknown tool"
			continue
		}
		if t.Path == "" {
			p, err := exec.LookPath(n)
			if err != nil {
				t.Missing = "not installed"
				continue
			}
			t.Path = p
		}
		out, err := t.output(ctx, versionArgs...)
		if err != nil {
			if n == "ferry" {
				t.Version = "unknown"
			} else {
				t.Missing = "broken: " + err.Error()
				t.Path = ""
				continue
			}
		} else {
			// "ferry v1.2.3", "skopeo version 1.9.3": the name goes.
			v := strings.TrimPrefix(firstLine(out), n+" ")
			t.Version = strings.TrimPrefix(v, "version ")
		}
		if n == "regctl" {
			// regctl keeps per-registry settings in HOME/.regctl.
			for _, h := range s.hosts {
				if _, err := t.output(ctx, "registry", "set", "--tls", "disabled", h); err != nil {
					t.Missing = "setup failed: " + err.Error()
					t.Path = ""
					break
				}
			}
		}
	}
	return tools
}

// toolEnv is the environment for a tool with its own HOME: no docker,
// containers or regctl configuration of the user's, and no HTTP proxy.
func toolEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HOME", "DOCKER_CONFIG", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "REGISTRY_AUTH_FILE",
			"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REGCTL_CONFIG":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+home,
		"DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_RUNTIME_DIR="+home,
		"REGISTRY_AUTH_FILE="+filepath.Join(home, "auth.json"),
		"NO_PROXY=127.0.0.1,localhost",
	)
}

// output runs the tool for a short setup step.
func (t *tool) output(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, t.Path, args...)
	cmd.Env = t.env
	isolate(cmd)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", t.Name, strings.Join(args, " "), err, lastLine(out.String()))
	}
	return out.String(), nil
}

// sample is what one run cost.
type sample struct {
	Wall   time.Duration
	CPU    time.Duration // user + system
	MaxRSS int64         // bytes; 0 when unknown
}

// measure runs the tool once, through the spawn helper, to copy src to
// dst, with its output in logPath, and returns what it cost.
func (t *tool) measure(ctx context.Context, src, dst, logPath string, timeout time.Duration) (sample, error) {
	return t.measureArgs(ctx, t.args(src, dst), logPath, timeout)
}

// measureArgs runs the tool once with args, through the spawn helper, with
// its output in logPath, and returns what it cost.
func (t *tool) measureArgs(ctx context.Context, args []string, logPath string, timeout time.Duration) (sample, error) {
	if t.Path == "" {
		return sample{}, fmt.Errorf("%s: %s", t.Name, t.Missing)
	}
	self, err := os.Executable()
	if err != nil {
		return sample{}, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return sample{}, err
	}
	defer logf.Close()
	rd, wr, err := os.Pipe()
	if err != nil {
		return sample{}, err
	}
	defer rd.Close()

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fmt.Fprintf(logf, "$ %s %s\n", t.Path, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, self, append([]string{spawnArg, t.Path}, args...)...)
	cmd.Env = t.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{wr}
	cmd.WaitDelay = 5 * time.Second
	isolate(cmd)
	err = cmd.Start()
	wr.Close()
	if err != nil {
		return sample{}, err
	}
	var r spawnResult
	derr := json.NewDecoder(rd).Decode(&r)
	werr := cmd.Wait()
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return sample{}, fmt.Errorf("timed out after %v", timeout)
	case ctx.Err() != nil:
		return sample{}, ctx.Err()
	case werr != nil:
		return sample{}, fmt.Errorf("spawn helper: %w: %s", werr, lastLine(tail(logPath)))
	case derr != nil:
		return sample{}, fmt.Errorf("spawn helper: reading its result: %w", derr)
	case r.Error != "":
		return sample{}, errors.New(r.Error)
	case r.Exit != 0:
		return sample{}, fmt.Errorf("exit status %d: %s", r.Exit, lastLine(tail(logPath)))
	}
	return sample{Wall: r.Wall, CPU: r.CPU, MaxRSS: r.MaxRSS}, nil
}

// tail is the end of a log file.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
