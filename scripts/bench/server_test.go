package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestDockerRegistryStarts(t *testing.T) {
	path, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skip("no docker-registry")
	}
	dir := t.TempDir()
	s, err := startDockerRegistry(context.Background(), path, dir, filepath.Join(dir, "log"))
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "log"))
		t.Fatalf("%v\n%s", err, b)
	}
	defer s.Stop()
	if s.RSS() == 0 {
		t.Error("no RSS")
	}
}

func TestServeAddress(t *testing.T) {
	host, err := serveAddress("serving http://127.0.0.1:40123 (root /tmp/x, removed on exit)")
	if err != nil || host != "127.0.0.1:40123" {
		t.Errorf("got %q, %v", host, err)
	}
	for _, bad := range []string{"", "serving https://127.0.0.1:1 (root x)", "serving http://nowhere (root x)"} {
		if _, err := serveAddress(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

func TestDockerRegistryConfig(t *testing.T) {
	got := dockerRegistryConfig("/tmp/r s", "127.0.0.1:5000")
	for _, want := range []string{"rootdirectory: \"/tmp/r s\"\n", "addr: \"127.0.0.1:5000\"\n",
		"  delete:\n    enabled: true\n", "level: error\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("config lacks %q:\n%s", want, got)
		}
	}
}
