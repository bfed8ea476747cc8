package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// A server's cost is read from /proc, not from the spawn helper: the
// servers run for a whole suite, and each measurement is the difference
// between two readings. Elsewhere than Linux every reading is unknown (0).

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// 100 on every Linux this runs on (sysconf needs cgo).
const clockTick = 10 * time.Millisecond

// procCPU is the user + system time process pid has used so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/PID/stat line. The command name, field 2, is in parentheses and
// may hold spaces and parentheses itself: fields are counted after the
// last ")".
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat: no command name in %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name", len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc stat: utime %q, stime %q", f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// procMemory is a process's resident set now (VmRSS) and its peak since
// it started or since resetPeak (VmHWM), in bytes.
func procMemory(pid int) (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStatusMemory(string(b))
}

func parseStatusMemory(status string) (rss, peak int64, err error) {
	for _, line := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, perr := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if perr != nil {
			return 0, 0, fmt.Errorf("/proc status: %s: %q", k, v)
		}
		if k == "VmRSS" {
			rss = kb * kib
		} else {
			peak = kb * kib
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("/proc status: no VmRSS")
	}
	return rss, peak, nil
}

// resetPeak sets VmHWM back to the current resident set (Linux 4.0 and
// later), so that the next reading is the peak of what came after.
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// usageMark is a reading taken before a measured step.
type usageMark struct {
	pid int
	cpu time.Duration
	ok  bool
}

// markUsage resets pid's peak and reads its CPU time.
func markUsage(pid int) usageMark {
	_ = resetPeak(pid)
	cpu, err := procCPU(pid)
	return usageMark{pid: pid, cpu: cpu, ok: err == nil}
}

// since is the CPU time used since the mark and the peak resident set
// since then; -1 for what cannot be read.
func (m usageMark) since() (cpu time.Duration, peak int64) {
	cpu, peak = -1, -1
	if now, err := procCPU(m.pid); err == nil && m.ok {
		cpu = now - m.cpu
	}
	if _, p, err := procMemory(m.pid); err == nil {
		peak = p
	}
	return cpu, peak
}
