//go:build !linux

package main

import (
	"os"
	"os/exec"
	"time"
)

// isolate: elsewhere than Linux, cancelling kills the process only.
func isolate(*exec.Cmd) {}

func dieWithParent(*exec.Cmd) {}

func closeOnExec(*os.File) {}

// maxRSS is left unknown elsewhere than Linux (ru_maxrss units differ).
func maxRSS(*os.ProcessState) (int64, bool) { return 0, false }

// selfCPU is left unknown elsewhere than Linux.
func selfCPU() (time.Duration, bool) { return 0, false }

// settle would write dirty pages to disk before a measured run; only the
// Linux build does.
func settle() {}
