// Command bench measures ferry against the tools people would use instead,
// in suites:
//
//   - copy: `ferry copy` against crane, regctl and skopeo, between two
//     registries, directly and through TCP proxies that add a round trip;
//   - serve: `ferry serve` against distribution's docker-registry, with
//     crane pushing and pulling;
//   - mirror: `ferry mirror` against skopeo sync and regsync, a first sync
//     and a rerun with nothing to do;
//   - bundle: `ferry bundle create` and `import` against skopeo's
//     oci-archive and crane's OCI layouts, and `ferry serve --bundle`;
//   - cache: `ferry serve --upstream` against pulling from the upstream.
//
// It generates synthetic images with random (incompressible) layers and
// pushes them to a registry on 127.0.0.1. For each case and tool it reports
// the median wall time, CPU time (user+system) and peak resident set of the
// tool's process, or of the server's (from /proc), and checks the suite's
// targets. Nothing goes beyond 127.0.0.1.
//
// scripts/bench.sh builds ferry, installs the peers it can, and runs this
// with `go run ./scripts/bench`; docs/benchmarks.md explains the suites and
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
	suites     []string
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

Benchmarks ferry on 127.0.0.1, suite by suite (docs/benchmarks.md):
  copy    ferry copy against crane, regctl and skopeo, directly and
          through a delaying proxy
  serve   ferry serve against docker-registry: push, pull, 20 pulls at once
  mirror  ferry mirror against skopeo sync and regsync: first sync, rerun
  bundle  ferry bundle create/import against skopeo and crane; serve --bundle
  cache   ferry serve --upstream: first and cached pulls, 20 clients at once
and reports wall time, CPU time and peak RSS (medians of -n runs).

Flags:
`)
		fs.PrintDefaults()
	}
	var o options
	suites := fs.String("suites", strings.Join(suiteNames, ","), "suites to run, comma-separated: "+strings.Join(suiteNames, ", "))
	cases := fs.String("cases", "big,small,index", "copy suite: cases to run, comma-separated: big, small, index")
	tools := fs.String("tools", strings.Join(toolNames, ","), "copy suite: tools to measure, comma-separated")
	paths := fs.String("paths", "direct,delayed", "copy suite: network paths, comma-separated: direct, delayed (through the proxy)")
	fs.IntVar(&o.n, "n", 3, "runs of each case and tool; the median is reported")
	fs.DurationVar(&o.delay, "delay", 25*time.Millisecond, "one-way delay the proxy adds in each direction (round trip: twice this)")
	window := fs.String("window", "4MiB", "TCP window of each proxied connection: at most this many bytes per round trip")
	fs.BoolVar(&o.quick, "quick", false, "small images and -n 1: checks the harness in a minute or two")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (registry storage, each run's output) and print where")
	fs.StringVar(&o.md, "md", "", "also write the results as markdown into this file, between its bench markers (e.g. docs/benchmarks.md)")
	fs.StringVar(&o.ferry, "ferry", "bin/ferry", "the ferry binary; empty when it could not be built")
	ferryFlags := fs.String("ferry-flags", "", "extra flags for `ferry copy`, space-separated")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "longest one measured command may take")
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
	if o.suites, err = list("-suites", *suites, suiteNames); err != nil {
		return o, err
	}
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

// env is what the suites share: the work directory, the two in-process
// registries, the images generated so far, and the tools.
type env struct {
	o       options
	work    string
	logDir  string
	src     *benchRegistry // where the images are generated
	dst     *benchRegistry // where copies, mirrors and imports go
	tools   map[string]*tool
	sources map[string]source
	logf    func(format string, a ...any)
	stdout  io.Writer
}

// bench is the whole run: registries, images, tools, then each suite and
// its report.
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
	logf("source registry %s, destination %s; work directory %s", src.Host(), dst.Host(), work)
	e := &env{o: o, work: work, logDir: filepath.Join(work, "logs"), src: src, dst: dst,
		tools: map[string]*tool{}, sources: map[string]source{}, logf: logf, stdout: stdout}
	if err := os.MkdirAll(e.logDir, 0o755); err != nil {
		return err
	}

	command := os.Getenv("BENCH_COMMAND")
	if command == "" {
		command = strings.TrimSpace("go run ./scripts/bench " + strings.Join(os.Args[1:], " "))
	}
	blocks := map[string]string{}
	var failed []string
	for _, name := range o.suites {
		var block string
		var err error
		switch name {
		case "copy":
			block, err = e.copySuite(ctx, command)
		default:
			m := describeMachine()
			var rep *suiteReport
			rep, err = e.scenario(ctx, name)
			if rep != nil {
				fmt.Fprint(stdout, rep.text(e.runs()))
				block = rep.markdown(command, e.runs(), m, e.toolVersions(rep.Tools))
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			logf("%s suite: %v", name, err)
			failed = append(failed, name)
			continue
		}
		blocks[name] = block
	}
	if o.md != "" && len(blocks) > 0 {
		if err := writeMarkdown(o.md, blocks, suiteNames); err != nil {
			return err
		}
		logf("wrote the results into %s", o.md)
	}
	if len(failed) > 0 {
		return fmt.Errorf("suites that could not run: %s", strings.Join(failed, ", "))
	}
	return nil
}

// scenario runs one of the suites with a suiteReport.
func (e *env) scenario(ctx context.Context, name string) (*suiteReport, error) {
	switch name {
	case "serve":
		return e.serveSuite(ctx)
	case "mirror":
		return e.mirrorSuite(ctx)
	case "bundle":
		return e.bundleSuite(ctx)
	case "cache":
		return e.cacheSuite(ctx)
	}
	return nil, fmt.Errorf("unknown suite %q", name)
}

// suiteDir makes a suite's directory in the work directory; the suite
// removes it when it is done.
func (e *env) suiteDir(name string) (string, error) {
	dir := filepath.Join(e.work, name)
	return dir, os.MkdirAll(dir, 0o755)
}

// runs says how many runs each number is the median of.
func (e *env) runs() string {
	s := "1 run"
	if e.o.n > 1 {
		s = fmt.Sprintf("median of %d runs", e.o.n)
	}
	if e.o.quick {
		s += "; -quick (small images)"
	}
	return s
}

// source is the image of case name, generated in the source registry the
// first time a suite asks for it.
func (e *env) source(ctx context.Context, name string) (source, error) {
	if s, ok := e.sources[name]; ok {
		return s, nil
	}
	c, ok := findCase(name, e.o.quick)
	if !ok {
		return source{}, fmt.Errorf("no image case %q", name)
	}
	start := time.Now()
	s, err := generate(ctx, c, e.work, e.src.Host())
	if err != nil {
		return s, err
	}
	if s.Bytes, err = e.src.store.Bytes(s.Repo); err != nil {
		return s, err
	}
	e.logf("generated %s: %s, %s of blobs, %s (%.1fs)", c.Name, c.Describe(), formatBytes(s.Bytes),
		s.Digest, time.Since(start).Seconds())
	e.sources[name] = s
	return s, nil
}

// tool finds a tool the first time it is asked for; see findTools.
func (e *env) tool(ctx context.Context, name string) *tool {
	if t, ok := e.tools[name]; ok {
		return t
	}
	t := findTools(ctx, []string{name}, toolSetup{
		ferry: e.o.ferry, ferryFlags: e.o.ferryFlags, home: filepath.Join(e.work, "home"),
		hosts: []string{e.src.Host(), e.dst.Host()},
	})[0]
	if t.Missing != "" {
		e.logf("%s: %s", t.Name, t.Missing)
	} else {
		e.logf("%s %s (%s)", t.Name, t.Version, t.Path)
	}
	e.tools[name] = t
	return t
}

// toolVersions lists the named tools' versions, for a report.
func (e *env) toolVersions(names []string) string {
	var tv []string
	for _, n := range names {
		t, ok := e.tools[n]
		if !ok {
			continue
		}
		if t.Missing != "" {
			tv = append(tv, fmt.Sprintf("%s (%s)", n, t.Missing))
		} else {
			tv = append(tv, n+" "+t.Version)
		}
	}
	return strings.Join(tv, ", ")
}

// logPath is where a run's output goes: logs/PARTS-joined-by-dashes.log.
func (e *env) logPath(parts ...any) string {
	var s []string
	for _, p := range parts {
		s = append(s, strings.ReplaceAll(fmt.Sprint(p), " ", "-"))
	}
	return filepath.Join(e.logDir, strings.Join(s, "-")+".log")
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
