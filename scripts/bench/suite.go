package main

import (
	"bytes"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
)

// suiteNames are the suites, in the order they run.
var suiteNames = []string{"copy", "serve", "mirror", "bundle", "cache"}

// suiteReport is what one of the scenario suites (serve, mirror, bundle,
// cache) measured: a table of rows, facts that are not timings (idle RSS,
// request counts), and its targets. The copy suite has its own report
// (report.go), with a column for the network path.
type suiteReport struct {
	Name  string // "serve": also the name of its markdown markers
	Title string
	About []string // what the cases are, one line each
	Tools []string // the tools and servers it runs, for their versions

	// Column headings: CPU and RSS say whose they are (the client's or
	// the server's); Ratio is the row's wall time over its case's base row.
	CPU, RSS, Ratio string
	Rows            []*row

	Facts   []string
	Targets []string
}

// row is one case × tool of a suite.
type row struct {
	Case, Path, Tool string // Path: the copy suite's network path
	Base             bool   // the row the others of its case are compared with
	Missing          string // the tool or server cannot run
	Err              string // a run failed; the others are not counted
	Samples          []sample
}

func (r *row) ok() bool { return r.Missing == "" && r.Err == "" && len(r.Samples) > 0 }

// median is the median of each measure separately.
func (r *row) median() sample { return medianSample(r.Samples) }

// peakRSS is the highest peak of any run.
func (r *row) peakRSS() int64 { return peakRSS(r.Samples) }

// measureCells are a row's wall, CPU, max RSS and ratio cells: its wall
// time over base's (none without a base), or why it has no numbers. A
// failure goes into notes, under label, and the cell points at it.
func measureCells(r, base *row, label string, notes *[]string) []string {
	switch {
	case r.Missing != "" && strings.HasPrefix(r.Tool, "ferry"):
		return []string{"pending (" + r.Missing + ")", "", "", ""}
	case r.Missing != "":
		return []string{r.Missing, "", "", ""}
	case r.Err != "":
		*notes = append(*notes, label+": "+r.Err)
		return []string{fmt.Sprintf("failed [%d]", len(*notes)), "", "", ""}
	case !r.ok():
		return []string{"not run", "", "", ""}
	}
	m := r.median()
	ratio := ""
	if base != nil && base != r && base.ok() && base.median().Wall > 0 {
		ratio = fmt.Sprintf("%.2f×", m.Wall.Seconds()/base.median().Wall.Seconds())
	}
	cpu, rss := "?", "?"
	if m.CPU >= 0 {
		cpu = formatSeconds(m.CPU)
	}
	if m.MaxRSS > 0 {
		rss = formatBytes(m.MaxRSS)
	}
	return []string{formatSeconds(m.Wall), cpu, rss, ratio}
}

// fail records a run's failure; later runs of the row are skipped.
func (r *row) fail(err error) {
	if r.Err == "" {
		r.Err = err.Error()
	}
}

// add makes a row of the report and returns it.
func (rep *suiteReport) add(c, tool string, base bool, missing string) *row {
	r := &row{Case: c, Tool: tool, Base: base, Missing: missing}
	rep.Rows = append(rep.Rows, r)
	return r
}

func (rep *suiteReport) base(c string) *row {
	for _, r := range rep.Rows {
		if r.Case == c && r.Base {
			return r
		}
	}
	return nil
}

// cells formats a row; notes collects the failures it refers to.
func (rep *suiteReport) cells(r *row, notes *[]string) []string {
	return append([]string{r.Case, r.Tool}, measureCells(r, rep.base(r.Case), r.Case+", "+r.Tool, notes)...)
}

func (rep *suiteReport) header() []string {
	return []string{"case", "tool", "wall", rep.CPU, rep.RSS, rep.Ratio}
}

// text is the suite's report for a terminal.
func (rep *suiteReport) text(runs string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "\n%s (%s)\n", rep.Title, runs)
	for _, a := range rep.About {
		fmt.Fprintf(&b, "  %s\n", a)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(rep.header(), "\t")+"\t")
	var notes []string
	prev := ""
	for i, r := range rep.Rows {
		if i > 0 && r.Case != prev {
			fmt.Fprintln(tw, "\t\t\t\t\t\t")
		}
		prev = r.Case
		fmt.Fprintln(tw, strings.Join(rep.cells(r, &notes), "\t")+"\t")
	}
	tw.Flush()
	writeFooter(&b, false, notes, rep.Facts, rep.Targets)
	return b.String()
}

// markdown is the suite's results section, between its own markers.
func (rep *suiteReport) markdown(command, runs string, m machine, tools string) string {
	var b bytes.Buffer
	begin, end := markers(rep.Name)
	b.WriteString(begin + "\n")
	fmt.Fprintf(&b, "Produced on %s by `%s` (%s; %s, `nproc` %d; load average before: %s; %s).\n\n",
		time.Now().UTC().Format("2006-01-02"), command, runs, m.CPU, m.NumCPU, m.Load, tools)
	for _, a := range rep.About {
		fmt.Fprintf(&b, "- %s\n", a)
	}
	if len(rep.About) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("| " + strings.Join(rep.header(), " | ") + " |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|\n")
	var notes []string
	for _, r := range rep.Rows {
		cells := rep.cells(r, &notes)
		if strings.HasPrefix(r.Tool, "ferry") {
			bold(cells[1:])
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	writeFooter(&b, true, notes, rep.Facts, rep.Targets)
	b.WriteString(end + "\n")
	return b.String()
}

// verdict is "met" or "MISSED".
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// whyNot says why a row has no numbers.
func whyNot(r *row) string {
	switch {
	case r == nil:
		return "not measured"
	case r.Missing != "":
		return r.Missing
	case r.Err != "":
		return "failed"
	}
	return "not run"
}

// compareTarget is the verdict of what, which holds when ok(ferry's
// median wall time, the peer's) does: pending when ferry has no numbers,
// "not measured" when the peer has none.
func compareTarget(what string, ferry, peer *row, ok func(f, p time.Duration) bool) string {
	switch {
	case peer == nil || !peer.ok():
		s := what + ": " + peerName(peer) + " " + whyNot(peer)
		if ferry != nil && ferry.ok() {
			s += fmt.Sprintf(" (ferry %s)", formatSeconds(ferry.median().Wall))
		}
		return s
	case ferry == nil || !ferry.ok():
		return fmt.Sprintf("%s: pending (ferry %s; %s %s)", what, whyNot(ferry), peer.Tool, formatSeconds(peer.median().Wall))
	}
	f, p := ferry.median().Wall, peer.median().Wall
	return fmt.Sprintf("%s: %s (%s %s, %s %s)", what, verdict(ok(f, p)),
		ferry.Tool, formatSeconds(f), peer.Tool, formatSeconds(p))
}

func peerName(r *row) string {
	if r == nil {
		return "peer"
	}
	return r.Tool
}

// noSlower is compareTarget's usual test.
func noSlower(f, p time.Duration) bool { return f <= p }

// sumSamples adds up runs that together are one measurement (a peer that
// takes one image per run): wall and CPU add, the peak is the highest.
func sumSamples(ss []sample) sample {
	var t sample
	for _, s := range ss {
		t.Wall += s.Wall
		t.CPU += s.CPU
		t.MaxRSS = max(t.MaxRSS, s.MaxRSS)
	}
	return t
}

// bold marks a markdown row's cells as ferry's; empty cells stay empty.
func bold(cells []string) {
	for i, c := range cells {
		if c != "" {
			cells[i] = "**" + c + "**"
		}
	}
}

// writeFooter writes what follows a results table: the numbered notes
// its cells refer to, the facts, and the targets, for a terminal or, with
// md, as markdown.
func writeFooter(b *bytes.Buffer, md bool, notes, facts, targets []string) {
	note, item, head, target := "[%d] %s\n", "%s\n", "\ntargets:\n", "  %s\n"
	if md {
		note, item, head, target = "%d. %s\n", "- %s\n", "\nTargets:\n\n", "- %s\n"
	}
	if len(notes) > 0 {
		b.WriteString("\n")
		for i, n := range notes {
			if md {
				n = strings.ReplaceAll(n, "|", `\|`)
			}
			fmt.Fprintf(b, note, i+1, n)
		}
	}
	if len(facts) > 0 {
		b.WriteString("\n")
		for _, f := range facts {
			fmt.Fprintf(b, item, f)
		}
	}
	b.WriteString(head)
	for _, t := range targets {
		fmt.Fprintf(b, target, t)
	}
}
