package main

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// The command name may hold spaces and parentheses.
	stat := "4242 (ferry (serve) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 37 0 0 20 0 12 0 5000 1000000 3000 18446744073709551615"
	got, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 287 * clockTick; got != want {
		t.Errorf("CPU %v, want %v", got, want)
	}
	if _, err := parseStatCPU("4242 (x) S 1 2"); err == nil {
		t.Error("a short line was accepted")
	}
}

func TestParseStatusMemory(t *testing.T) {
	status := "Name:\tferry\nVmPeak:\t 1000000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   12288 kB\nThreads:\t8\n"
	rss, peak, err := parseStatusMemory(status)
	if err != nil {
		t.Fatal(err)
	}
	if rss != 12*mib || peak != 20*mib {
		t.Errorf("rss %d, peak %d; want %d, %d", rss, peak, 12*mib, 20*mib)
	}
	if _, _, err := parseStatusMemory("Name:\tx\n"); err == nil {
		t.Error("a status without VmRSS was accepted")
	}
}

func TestProcOfThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	m := markUsage(os.Getpid())
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	cpu, peak := m.since()
	if cpu <= 0 || peak <= 0 {
		t.Errorf("after 200 ms of spinning: CPU %v, peak %d", cpu, peak)
	}
}
