package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// spawnArg, as the first argument, makes this program the spawn helper.
//
// Why a helper: on Linux a child's ru_maxrss is at least the resident set
// its parent had when it forked (exec records the old address space's
// high-water mark). The harness holds registries, proxies and image data,
// so every tool it forked directly would report the harness's peak as its
// own. The helper is this binary started afresh, small; it forks the tool,
// and the tool's numbers are its own (the floor is the helper's few MiB).
const spawnArg = "__bench_spawn"

// spawnResult is what the helper reports on file descriptor 3.
type spawnResult struct {
	Wall   time.Duration `json:"wall"`
	CPU    time.Duration `json:"cpu"`
	MaxRSS int64         `json:"maxRSS"` // bytes; 0 when unknown
	Exit   int           `json:"exit"`   // -1: killed by a signal
	Error  string        `json:"error,omitempty"`
}

// spawnMain runs args[0] with args[1:], sharing this process's standard
// streams and environment, and writes a spawnResult to descriptor 3.
func spawnMain(args []string) int {
	out := os.NewFile(3, "result")
	if out == nil || len(args) == 0 {
		fmt.Fprintln(os.Stderr, "bench: the spawn helper is for the harness only")
		return 2
	}
	closeOnExec(out)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	dieWithParent(cmd)
	var r spawnResult
	start := time.Now()
	err := cmd.Run()
	r.Wall = time.Since(start)
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		r.Error = err.Error()
	}
	if ps := cmd.ProcessState; ps != nil {
		r.CPU = ps.UserTime() + ps.SystemTime()
		r.Exit = ps.ExitCode()
		if rss, ok := maxRSS(ps); ok {
			r.MaxRSS = rss
		}
	}
	if err := json.NewEncoder(out).Encode(r); err != nil {
		return 1
	}
	return 0
}
