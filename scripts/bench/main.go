// Command bench measures `ferry copy` against crane, regctl and skopeo.
//
// It generates synthetic images with random (incompressible) layers, pushes
// them to a registry on 127.0.0.1, and copies each one to a second registry
// with every tool, N times, into a fresh repository each time: directly, and
// through TCP proxies that add a round-trip time. For each case, path and
// tool it reports the median wall time, CPU time (user+system) and peak
// resident set of the tool's process. Nothing goes beyond 127.0.0.1.
//
// scripts/bench.sh builds ferry, installs the peers it can, and runs this
// with `go run ./scripts/bench`; docs/benchmarks.md explains the cases and
// holds the latest results.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command line.
type options struct {
	cases      []string
	tools      []string
	paths      []string
	n          int
	delay      time.Duration
	window     int64
	quick      bool
	keep       bool
	md         string
	ferry      string
	ferryFlags []string
	timeout    time.Duration
	verbose    bool
	workdir    string
}

// errUsage marks a bad command line.
var errUsage = errors.New("usage")

func main() {
	if len(os.Args) > 1 && os.Args[1] == spawnArg {
		os.Exit(spawnMain(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if err := bench(ctx, o, stdout, stderr); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "bench: interrupted")
			return 130
		}
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: go run ./scripts/bench [flags]   (normally: bash scripts/bench.sh [flags])

Copies synthetic images between two registries on 127.0.0.1 with ferry,
crane, regctl and skopeo, directly and through a delaying proxy, and
reports wall time, CPU time and peak RSS (medians of -n runs).

Flags:
`)
		fs.PrintDefaults()
	}
	var o options
	cases := fs.String("cases", "big,small,index", "cases to run, comma-separated: big, small, index")
	tools := fs.String("tools", strings.Join(toolNames, ","), "tools to measure, comma-separated")
	paths := fs.String("paths", "direct,delayed", "network paths, comma-separated: direct, delayed (through the proxy)")
	fs.IntVar(&o.n, "n", 3, "runs of each case, path and tool; the median is reported")
	fs.DurationVar(&o.delay, "delay", 25*time.Millisecond, "one-way delay the proxy adds in each direction (round trip: twice this)")
	window := fs.String("window", "4MiB", "TCP window of each proxied connection: at most this many bytes per round trip")
	fs.BoolVar(&o.quick, "quick", false, "small images and -n 1: checks the harness in under a minute")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (registry storage, each run's output) and print where")
	fs.StringVar(&o.md, "md", "", "also write the results as markdown into this file, between its bench markers (e.g. docs/benchmarks.md)")
	fs.StringVar(&o.ferry, "ferry", "bin/ferry", "the ferry binary; empty when it could not be built")
	ferryFlags := fs.String("ferry-flags", "", "extra flags for `ferry copy`, space-separated")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "longest one copy may take")
	fs.BoolVar(&o.verbose, "v", false, "log every registry request to stderr")
	fs.StringVar(&o.workdir, "workdir", "", "where to make the work directory (default: the system's temp dir)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	nSet := false
	fs.Visit(func(f *flag.Flag) { nSet = nSet || f.Name == "n" })
	if o.quick && !nSet {
		o.n = 1
	}
	var err error
	if o.cases, err = list("-cases", *cases, []string{"big", "small", "index"}); err != nil {
		return o, err
	}
	if o.tools, err = list("-tools", *tools, toolNames); err != nil {
		return o, err
	}
	if o.paths, err = list("-paths", *paths, []string{"direct", "delayed"}); err != nil {
		return o, err
	}
	if o.n < 1 {
		return o, fmt.Errorf("%w: -n %d: at least 1", errUsage, o.n)
	}
	if o.delay < 0 {
		return o, fmt.Errorf("%w: -delay %v: must not be negative", errUsage, o.delay)
	}
	if o.window, err = parseSize(*window); err != nil || o.window < 2*chunkSize {
		return o, fmt.Errorf("%w: -window %q: a size of at least %d KiB, like 4MiB", errUsage, *window, 2*chunkSize/kib)
	}
	o.ferryFlags = strings.Fields(*ferryFlags)
	return o, nil
}

// list splits a comma-separated flag, keeping known's order.
func list(flagName, v string, known []string) ([]string, error) {
	var got []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(known, s) {
			return nil, fmt.Errorf("%w: %s: unknown %q (known: %s)", errUsage, flagName, s, strings.Join(known, ", "))
		}
		got = append(got, s)
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("%w: %s: empty", errUsage, flagName)
	}
	var ordered []string
	for _, k := range known {
		if slices.Contains(got, k) {
			ordered = append(ordered, k)
		}
	}
	return ordered, nil
}

// parseSize reads "4MiB", "512KiB", "1GiB" or a number of bytes.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", mib}, {"KiB", kib}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// bench is the whole run: registries, proxies, images, tools, copies, report.
func bench(ctx context.Context, o options, stdout, stderr io.Writer) (err error) {
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", a...) }
	work, err := os.MkdirTemp(o.workdir, "ferry-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			logf("kept the work directory %s", work)
			return
		}
		if rerr := os.RemoveAll(work); rerr != nil && err == nil {
			err = rerr
		}
	}()

	var reglog io.Writer
	if o.verbose {
		reglog = stderr
	}
	src, err := startRegistry(filepath.Join(work, "src"), reglog)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := startRegistry(filepath.Join(work, "dst"), reglog)
	if err != nil {
		return err
	}
	defer dst.Close()
	hosts := map[string][2]string{"direct": {src.Host(), dst.Host()}}
	allHosts := []string{src.Host(), dst.Host()}
	if slices.Contains(o.paths, "delayed") {
		sp, err := startProxy(src.Host(), o.delay, o.window)
		if err != nil {
			return err
		}
		defer sp.Close()
		dp, err := startProxy(dst.Host(), o.delay, o.window)
		if err != nil {
			return err
		}
		defer dp.Close()
		hosts["delayed"] = [2]string{sp.Host(), dp.Host()}
		allHosts = append(allHosts, sp.Host(), dp.Host())
	}
	logf("source registry %s, destination %s; work directory %s", src.Host(), dst.Host(), work)

	var sources []source
	for _, c := range cases(o.quick) {
		if !slices.Contains(o.cases, c.Name) {
			continue
		}
		start := time.Now()
		s, err := generate(ctx, c, work, src.Host())
		if err != nil {
			return err
		}
		if s.Bytes, err = src.store.Bytes(s.Repo); err != nil {
			return err
		}
		logf("generated %s: %s, %s of blobs, %s (%.1fs)", c.Name, c.Describe(), formatBytes(s.Bytes),
			s.Digest, time.Since(start).Seconds())
		sources = append(sources, s)
	}

	tools := findTools(ctx, o.tools, toolSetup{
		ferry: o.ferry, ferryFlags: o.ferryFlags, home: filepath.Join(work, "home"),
		hosts: allHosts,
	})
	for _, t := range tools {
		if t.Missing != "" {
			logf("%s: %s", t.Name, t.Missing)
		} else {
			logf("%s %s (%s)", t.Name, t.Version, t.Path)
		}
	}
	logDir := filepath.Join(work, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}

	rep := &report{opts: o, tools: tools, sources: sources, machine: describeMachine()}
	rep.rssFloor = rssFloor(ctx, work, logDir)
	for _, s := range sources {
		for _, path := range o.paths {
			h := hosts[path]
			rows := map[string]*result{}
			for _, t := range tools {
				r := &result{Case: s.Name, Path: path, Tool: t.Name, Missing: t.Missing}
				rows[t.Name] = r
				rep.results = append(rep.results, r)
			}
			// Runs go round the tools, so that drift on the machine is
			// spread over all of them.
			for i := 1; i <= o.n; i++ {
				for _, t := range tools {
					r := rows[t.Name]
					if r.Missing != "" || r.Err != "" {
						continue
					}
					repo := fmt.Sprintf("dst/%s-%s-%s-%d", s.Name, t.Name, path, i)
					logPath := filepath.Join(logDir, fmt.Sprintf("%s-%s-%s-%d.log", s.Name, path, t.Name, i))
					smp, err := t.measure(ctx, h[0]+"/"+s.Repo+":v1", h[1]+"/"+repo+":v1", logPath, o.timeout)
					if err == nil {
						err = check(ctx, dst, repo, s)
					}
					if derr := dst.Drop(repo); derr != nil && err == nil {
						err = derr
					}
					if ctx.Err() != nil {
						return ctx.Err()
					}
					if err != nil {
						r.Err = err.Error()
						logf("%-5s %-7s %-6s %d/%d: failed: %v (log: %s)", s.Name, path, t.Name, i, o.n, err, logPath)
						continue
					}
					r.Samples = append(r.Samples, smp)
					logf("%-5s %-7s %-6s %d/%d: wall %s, cpu %s, max RSS %s", s.Name, path, t.Name, i, o.n,
						formatSeconds(smp.Wall), formatSeconds(smp.CPU), formatBytes(smp.MaxRSS))
				}
			}
		}
	}

	rep.command = os.Getenv("BENCH_COMMAND")
	if rep.command == "" {
		rep.command = strings.TrimSpace("go run ./scripts/bench " + strings.Join(os.Args[1:], " "))
	}
	fmt.Fprint(stdout, rep.text())
	if o.md != "" {
		if err := writeMarkdown(o.md, rep.markdown()); err != nil {
			return err
		}
		logf("wrote the results into %s", o.md)
	}
	return nil
}

// check makes sure a copy arrived whole: DST's v1 tag names the source's
// digest and the repository holds as many bytes of blobs as the source's.
func check(ctx context.Context, dst *benchRegistry, repo string, s source) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, "http://"+dst.Host()+"/v2/"+repo+"/manifests/v1", nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("checking the copy: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("copy reported success, but %s:v1 is not at the destination (HTTP %d)", repo, resp.StatusCode)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != s.Digest.String() {
		return fmt.Errorf("copy changed the digest: %s:v1 is %s, the source is %s", repo, got, s.Digest)
	}
	n, err := dst.store.Bytes(repo)
	if err != nil {
		return err
	}
	if n != s.Bytes {
		return fmt.Errorf("copy is incomplete: %s holds %d bytes of blobs, the source %d", repo, n, s.Bytes)
	}
	return nil
}

// rssFloor is the peak RSS that true(1) reads as through the spawn helper:
// no measurement can read lower (see spawnArg). 0 when unknown.
func rssFloor(ctx context.Context, work, logDir string) int64 {
	p, err := exec.LookPath("true")
	if err != nil {
		return 0
	}
	t := &tool{Name: "true", Path: p, env: toolEnv(work), args: func(string, string) []string { return nil }}
	s, err := t.measure(ctx, "", "", filepath.Join(logDir, "rss-floor.log"), time.Minute)
	if err != nil {
		return 0
	}
	return s.MaxRSS
}
