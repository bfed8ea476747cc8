package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMarkdownSections: each suite rewrites its own section and keeps the
// others, and a suite without one is appended.
func TestMarkdownSections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.md")
	cb, ce := markers("copy")
	sb, se := markers("serve")
	doc := "# x\n\n" + cb + "\nold copy\n" + ce + "\n\ntext\n\n" + sb + "\nold serve\n" + se + "\nend\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	mb, me := markers("mirror")
	blocks := map[string]string{
		"serve":  sb + "\nnew serve\n" + se + "\n",
		"mirror": mb + "\nnew mirror\n" + me + "\n",
	}
	if err := writeMarkdown(path, blocks, suiteNames); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	want := "# x\n\n" + cb + "\nold copy\n" + ce + "\n\ntext\n\n" + sb + "\nnew serve\n" + se + "\nend\n\n" + mb + "\nnew mirror\n" + me + "\n"
	if string(b) != want {
		t.Errorf("got\n%s\nwant\n%s", b, want)
	}
}

func TestCellsAndTargets(t *testing.T) {
	rep := &suiteReport{CPU: "CPU", RSS: "max RSS", Ratio: "÷ ferry"}
	f := rep.add("c", "ferry", true, "")
	f.Samples = []sample{{Wall: 2 * time.Second, CPU: time.Second, MaxRSS: 10 * mib}}
	p := rep.add("c", "peer", false, "")
	p.Samples = []sample{{Wall: 3 * time.Second, CPU: -1, MaxRSS: -1}, {Wall: 5 * time.Second, CPU: -1, MaxRSS: -1}, {Wall: 4 * time.Second, CPU: -1, MaxRSS: -1}}
	m := rep.add("c", "gone", false, "not installed")
	var notes []string
	if got := strings.Join(rep.cells(p, &notes), "|"); got != "c|peer|4.00 s|?|?|2.00×" {
		t.Errorf("peer row: %s", got)
	}
	if got := strings.Join(rep.cells(m, &notes), "|"); got != "c|gone|not installed|||" {
		t.Errorf("missing row: %s", got)
	}
	if got := compareTarget("t", f, p, noSlower); got != "t: met (ferry 2.00 s, peer 4.00 s)" {
		t.Errorf("target: %s", got)
	}
	if got := compareTarget("t", f, m, noSlower); got != "t: gone not installed (ferry 2.00 s)" {
		t.Errorf("target without peer: %s", got)
	}
	f.Err = "boom"
	if got := compareTarget("t", f, p, noSlower); got != "t: pending (ferry failed; peer 4.00 s)" {
		t.Errorf("target without ferry: %s", got)
	}
}
