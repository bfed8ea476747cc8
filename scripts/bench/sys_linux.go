package main

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// isolate puts cmd in its own process group, which cancelling kills whole,
// and has the kernel kill it if this process dies first (even by SIGKILL).
func isolate(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// dieWithParent has the kernel kill cmd if this process dies first.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

func closeOnExec(f *os.File) { syscall.CloseOnExec(int(f.Fd())) }

// maxRSS is the peak resident set of the finished process, in bytes.
func maxRSS(ps *os.ProcessState) (int64, bool) {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, false
	}
	return ru.Maxrss * 1024, true // KiB on Linux
}

// selfCPU is the CPU time this process (the harness, with its registries
// and proxies) has used so far; false when unknown.
func selfCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

// settle writes every dirty page to disk, so that a measured run does not
// pay for what the runs before it wrote.
func settle() { syscall.Sync() }
