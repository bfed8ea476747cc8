package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMeasureReportsTheToolsOwnPeak guards against reporting the harness's
// resident set as the tool's: a child forked straight from a process with a
// large heap reads at least that heap as its ru_maxrss.
func TestMeasureReportsTheToolsOwnPeak(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peak RSS is measured on Linux only")
	}
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1)")
	}
	ballast := make([]byte, 256*mib)
	for i := 0; i < len(ballast); i += 4 * kib {
		ballast[i] = 1 // resident, page by page
	}
	tl := &tool{Name: "true", Path: truePath, env: toolEnv(t.TempDir()),
		args: func(string, string) []string { return nil }}
	s, err := tl.measure(context.Background(), "", "", filepath.Join(t.TempDir(), "log"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("true(1): peak RSS %s", formatBytes(s.MaxRSS))
	if s.MaxRSS <= 0 || s.MaxRSS > 128*mib {
		t.Errorf("true(1) measured at %s of peak RSS beside a 256 MiB harness; want its own few MiB", formatBytes(s.MaxRSS))
	}
	if s.Wall <= 0 {
		t.Errorf("wall time %v", s.Wall)
	}
	runtime.KeepAlive(ballast)
}

func TestMeasureReportsFailure(t *testing.T) {
	falsePath, err := exec.LookPath("false")
	if err != nil {
		t.Skip("no false(1)")
	}
	tl := &tool{Name: "false", Path: falsePath, env: toolEnv(t.TempDir()),
		args: func(string, string) []string { return nil }}
	_, err = tl.measure(context.Background(), "", "", filepath.Join(t.TempDir(), "log"), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("measuring false(1): %v, want exit status 1", err)
	}
}

func TestMeasureTimesOut(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	tl := &tool{Name: "sleep", Path: sleep, env: toolEnv(t.TempDir()),
		args: func(string, string) []string { return []string{"60"} }}
	start := time.Now()
	_, err = tl.measure(context.Background(), "", "", filepath.Join(t.TempDir(), "log"), 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("measuring sleep 60 with a 200ms limit: %v, want a time-out", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("the time-out took %v to stop sleep(1)", time.Since(start))
	}
}
