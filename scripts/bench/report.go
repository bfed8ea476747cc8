package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// medianSample is the median of each measure separately.
func medianSample(samples []sample) sample {
	med := func(v []int64) int64 {
		slices.Sort(v)
		n := len(v)
		if n == 0 {
			return 0
		}
		if n%2 == 1 {
			return v[n/2]
		}
		return (v[n/2-1] + v[n/2]) / 2
	}
	var wall, cpu, rss []int64
	for _, s := range samples {
		wall = append(wall, int64(s.Wall))
		cpu = append(cpu, int64(s.CPU))
		rss = append(rss, s.MaxRSS)
	}
	return sample{Wall: time.Duration(med(wall)), CPU: time.Duration(med(cpu)), MaxRSS: med(rss)}
}

// peakRSS is the highest peak of any run.
func peakRSS(samples []sample) int64 {
	var m int64
	for _, s := range samples {
		m = max(m, s.MaxRSS)
	}
	return m
}

// report is everything measured, and what it ran on.
type report struct {
	opts     options
	tools    []*tool
	sources  []source
	results  []*row
	machine  machine
	command  string
	rssFloor int64 // the lowest peak RSS a run can read as; 0 when unknown
}

func (rep *report) pathLabel(path string) string {
	if path == "delayed" {
		return fmt.Sprintf("%v RTT", 2*rep.opts.delay)
	}
	return path
}

func (rep *report) find(c, path, tool string) *row {
	for _, r := range rep.results {
		if r.Case == c && r.Path == path && r.Tool == tool {
			return r
		}
	}
	return nil
}

// row is one table line, formatted; notes collects the failures it refers to.
func (rep *report) row(r *row, notes *[]string) []string {
	var base *row
	if r.Tool != "ferry" {
		base = rep.find(r.Case, r.Path, "ferry")
	}
	label := r.Case + ", " + rep.pathLabel(r.Path) + ", " + r.Tool
	return append([]string{r.Case, rep.pathLabel(r.Path), r.Tool}, measureCells(r, base, label, notes)...)
}

var header = []string{"case", "path", "tool", "wall", "CPU", "max RSS", "peer/ferry"}

func (rep *report) summary() string {
	runs := "1 run"
	if rep.opts.n > 1 {
		runs = fmt.Sprintf("median of %d runs", rep.opts.n)
	}
	s := runs
	if slices.Contains(rep.opts.paths, "delayed") {
		s += fmt.Sprintf("; %s = through TCP proxies adding %v each way, %s window",
			rep.pathLabel("delayed"), rep.opts.delay, formatBytes(rep.opts.window))
	}
	if rep.opts.quick {
		s += "; -quick (small images)"
	}
	if rep.rssFloor > 0 {
		s += fmt.Sprintf("; max RSS reads at least %s (the spawn helper's own)", formatBytes(rep.rssFloor))
	}
	return s
}

// text is the report for a terminal.
func (rep *report) text() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "\nferry copy benchmark (%s; load average before: %s)\n", rep.summary(), rep.machine.Load)
	for _, s := range rep.sources {
		fmt.Fprintf(&b, "  %-5s %s, %s of blobs\n", s.Name, s.Describe(), formatBytes(s.Bytes))
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	var notes []string
	prev := ""
	for _, r := range rep.results {
		if k := r.Case + "/" + r.Path; k != prev {
			if prev != "" {
				fmt.Fprintln(tw, "\t\t\t\t\t\t\t")
			}
			prev = k
		}
		fmt.Fprintln(tw, strings.Join(rep.row(r, &notes), "\t")+"\t")
	}
	tw.Flush()
	b.WriteString("peer/ferry: the peer's wall time over ferry's; above 1, ferry is faster.\n")
	writeFooter(&b, false, notes, nil, rep.targets())
	return b.String()
}

// markdown is the results section of docs/benchmarks.md, markers included.
func (rep *report) markdown() string {
	var b bytes.Buffer
	b.WriteString(mdBegin + "\n")
	fmt.Fprintf(&b, "Produced on %s by:\n\n```sh\n%s\n```\n\n", time.Now().UTC().Format("2006-01-02"), rep.command)
	m := rep.machine
	b.WriteString("| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %s; `nproc`: %d |\n", m.CPU, m.NumCPU)
	fmt.Fprintf(&b, "| memory | %s |\n", m.Memory)
	fmt.Fprintf(&b, "| system | %s |\n", m.OS)
	fmt.Fprintf(&b, "| `go version` | %s |\n", m.Go)
	fmt.Fprintf(&b, "| load average before the copies | %s (1, 5, 15 min; this machine's other work competes with the tools) |\n", m.Load)
	var tv []string
	for _, t := range rep.tools {
		if t.Missing != "" {
			tv = append(tv, fmt.Sprintf("%s (%s)", t.Name, t.Missing))
		} else {
			tv = append(tv, fmt.Sprintf("%s %s", t.Name, t.Version))
		}
	}
	fmt.Fprintf(&b, "| tools | %s |\n", strings.Join(tv, ", "))
	fmt.Fprintf(&b, "| runs | %s |\n", rep.summary())
	var cs []string
	for _, s := range rep.sources {
		cs = append(cs, fmt.Sprintf("%s: %s, %s of blobs", s.Name, s.Describe(), formatBytes(s.Bytes)))
	}
	fmt.Fprintf(&b, "| cases | %s |\n\n", strings.Join(cs, "; "))

	b.WriteString("| " + strings.Join(header, " | ") + " |\n")
	b.WriteString("|---|---|---|--:|--:|--:|--:|\n")
	var notes []string
	for _, r := range rep.results {
		cells := rep.row(r, &notes)
		if r.Tool == "ferry" {
			bold(cells[2:])
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	b.WriteString("\npeer/ferry: the peer's wall time over ferry's; above 1, ferry is faster.\n")
	writeFooter(&b, true, notes, nil, rep.targets())
	b.WriteString(mdEnd + "\n")
	return b.String()
}

// targets checks ferry against the goals in docs/benchmarks.md.
func (rep *report) targets() []string {
	var out []string
	pending := func(f *row) string {
		switch {
		case f == nil:
			return "pending (ferry not measured)"
		case f.Missing != "":
			return "pending (ferry " + f.Missing + ")"
		default:
			return "pending (ferry failed)"
		}
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	for _, s := range rep.sources {
		for _, path := range rep.opts.paths {
			what := fmt.Sprintf("%s, %s: no slower than the fastest peer: ", s.Name, rep.pathLabel(path))
			f := rep.find(s.Name, path, "ferry")
			var best *row
			for _, r := range rep.results {
				if r.Case == s.Name && r.Path == path && r.Tool != "ferry" && r.ok() &&
					(best == nil || r.median().Wall < best.median().Wall) {
					best = r
				}
			}
			switch {
			case best == nil:
				out = append(out, what+"no peer measured")
			case f == nil || !f.ok():
				out = append(out, what+pending(f)+fmt.Sprintf("; fastest peer %s %s", best.Tool, formatSeconds(best.median().Wall)))
			default:
				fw, bw := f.median().Wall, best.median().Wall
				out = append(out, what+verdict(fw <= bw)+fmt.Sprintf(" (ferry %s, %s %s)", formatSeconds(fw), best.Tool, formatSeconds(bw)))
			}
		}
	}
	if slices.Contains(rep.opts.cases, "small") && slices.Contains(rep.opts.paths, "delayed") {
		what := fmt.Sprintf("small, %s: at most half of crane's time: ", rep.pathLabel("delayed"))
		f, c := rep.find("small", "delayed", "ferry"), rep.find("small", "delayed", "crane")
		switch {
		case c == nil || !c.ok():
			out = append(out, what+"crane not measured")
		case f == nil || !f.ok():
			out = append(out, what+pending(f)+fmt.Sprintf("; crane %s", formatSeconds(c.median().Wall)))
		default:
			fw, cw := f.median().Wall, c.median().Wall
			out = append(out, what+verdict(2*fw <= cw)+fmt.Sprintf(" (ferry %s, crane %s)", formatSeconds(fw), formatSeconds(cw)))
		}
	}
	if slices.Contains(rep.opts.cases, "big") {
		what := "big: peak RSS under 64 MiB: "
		if rep.opts.quick {
			what = "big: peak RSS under 64 MiB (the target is for the 512 MiB image; -quick copies 16 MiB): "
		}
		var peak int64
		var f *row
		measured := false
		for _, path := range rep.opts.paths {
			f = rep.find("big", path, "ferry")
			if f == nil || !f.ok() {
				measured = false
				break
			}
			measured = true
			peak = max(peak, f.peakRSS())
		}
		switch {
		case !measured:
			out = append(out, what+pending(f))
		case peak == 0:
			out = append(out, what+"unknown (no RSS on this system)")
		default:
			out = append(out, what+verdict(peak < 64*mib)+fmt.Sprintf(" (ferry's highest: %s)", formatBytes(peak)))
		}
	}
	return out
}

const (
	mdBegin = "<!-- bench:begin (scripts/bench -md rewrites from here to bench:end) -->"
	mdEnd   = "<!-- bench:end -->"
)

// markers are the lines that enclose a suite's results in the markdown
// file: the copy suite keeps the original bench:begin and bench:end, the
// others have bench:SUITE:begin and bench:SUITE:end, so that each suite
// rewrites its own section and leaves the others as they are.
func markers(suite string) (begin, end string) {
	if suite == "copy" {
		return mdBegin, mdEnd
	}
	return fmt.Sprintf("<!-- bench:%s:begin (scripts/bench -md rewrites from here to bench:%s:end) -->", suite, suite),
		fmt.Sprintf("<!-- bench:%s:end -->", suite)
}

// writeMarkdown puts each block (a suite's results, markers included) in
// place of the section between the same markers in path, or at its end
// when it has none; a missing file is created.
func writeMarkdown(path string, blocks map[string]string, order []string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	s := string(old)
	for _, suite := range order {
		block, ok := blocks[suite]
		if ok {
			s = replaceSection(s, suite, block)
		}
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// replaceSection puts block in place of suite's section of s.
func replaceSection(s, suite, block string) string {
	begin, end := markers(suite)
	// The begin marker's text after its name may change; match its start.
	prefix, _, _ := strings.Cut(begin, " (")
	i := strings.Index(s, prefix+" ")
	j := -1
	if i >= 0 {
		if k := strings.Index(s[i:], end); k >= 0 {
			j = i + k
		}
	}
	if i < 0 || j < 0 {
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		if s != "" {
			s += "\n"
		}
		return s + block
	}
	rest := strings.TrimPrefix(s[j+len(end):], "\n")
	return s[:i] + block + rest
}

// machine is what the numbers were measured on.
type machine struct {
	CPU    string
	NumCPU int
	Memory string
	OS     string
	Go     string
	Load   string // load averages (1, 5, 15 min) before the first copy
}

func describeMachine() machine {
	m := machine{CPU: "unknown", NumCPU: runtime.NumCPU(), Memory: "unknown", OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPU = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		if kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64); err == nil {
			m.Memory = formatBytes(kb * kib)
		}
	}
	if v := procField("/etc/os-release", "PRETTY_NAME"); v != "" {
		m.OS = strings.Trim(v, `"`)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.OS += ", Linux " + strings.TrimSpace(string(b))
	}
	m.Load = "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.Load = strings.Join(f[:3], ", ")
		}
	}
	return m
}

// procField is the first value of key in a "key: value" or "key=value" file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			k, v, ok = strings.Cut(line, "=")
		}
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// formatSeconds keeps three significant digits where it can.
func formatSeconds(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= mib:
		return trimZero(fmt.Sprintf("%.1f", float64(n)/mib)) + " MiB"
	case n >= kib:
		return trimZero(fmt.Sprintf("%.1f", float64(n)/kib)) + " KiB"
	}
	return fmt.Sprintf("%d B", n)
}

func trimZero(s string) string { return strings.TrimSuffix(s, ".0") }
