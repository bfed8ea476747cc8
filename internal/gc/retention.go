package gc

import (
	"fmt"
	"math"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-oci/ferry/internal/config"
	"github.com/ferry-oci/ferry/internal/image"
)

// Retention is one [[retention]] table of a TOML file: the rules for the
// repositories its pattern matches.
type Retention struct {
	// Pattern is a glob over host/repository (path.Match: "*" stays
	// within one path segment), or oci:DIR for a layout.
	Pattern string
	Line    int
	Rules   Rules
}

// retentionFile is the file's shape: [[retention]] tables. The tables
// of a mirror config may share the file; ferry mirror checks those.
type retentionFile struct {
	Retention []fileRetention `toml:"retention"`
}

// mirrorTables are the top-level tables of a mirror config.
var mirrorTables = []string{"defaults", "registry", "sync"}

type fileRetention struct {
	Repository string   `toml:"repository"`
	KeepLast   int      `toml:"keep_last"`
	Keep       []string `toml:"keep"`
	OlderThan  string   `toml:"older_than"`
	Untagged   bool     `toml:"untagged"`
	Orphans    bool     `toml:"orphans"`
}

// LoadRetention reads the [[retention]] tables of the TOML file at path.
// Errors are *config.Error naming the file, the line and the key.
func LoadRetention(file string) ([]Retention, error) {
	var f retentionFile
	if err := config.DecodeFile(file, &f, mirrorTables...); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	fail := func(n int, key, format string, args ...any) error {
		line := config.EntryKeyLine(string(data), "retention", n, key)
		if line == 0 {
			line = config.EntryKeyLine(string(data), "retention", n, "retention")
		}
		return &config.Error{File: file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	if len(f.Retention) == 0 {
		return nil, &config.Error{File: file, Key: "retention", Msg: "no [[retention]] tables: add one with repository and a rule (docs/gc.md)"}
	}
	var out []Retention
	for i, fr := range f.Retention {
		n := i + 1
		r := Retention{Pattern: fr.Repository, Line: config.EntryKeyLine(string(data), "retention", n, "retention")}
		if fr.Repository == "" {
			return nil, fail(n, "retention.repository", "missing: the repositories these rules are for, e.g. \"registry.example.com/team/*\"")
		}
		if _, err := path.Match(fr.Repository, ""); err != nil {
			return nil, fail(n, "retention.repository", "%q: %v", fr.Repository, err)
		}
		if fr.KeepLast < 0 {
			return nil, fail(n, "retention.keep_last", "%d: expected a number of tags, 1 or more", fr.KeepLast)
		}
		r.Rules = Rules{KeepLast: fr.KeepLast, Untagged: fr.Untagged, Orphans: fr.Orphans}
		if r.Rules.Keep, err = image.CompileRegexps("keep", fr.Keep); err != nil {
			return nil, fail(n, "retention.keep", "%v", err)
		}
		if fr.OlderThan != "" {
			if r.Rules.OlderThan, err = ParseAge(fr.OlderThan); err != nil {
				return nil, fail(n, "retention.older_than", "%v", err)
			}
		}
		if r.Rules.Empty() {
			return nil, fail(n, "retention", "no rule: give keep_last, older_than, untagged or orphans (keep only protects)")
		}
		out = append(out, r)
	}
	return out, nil
}

// RulesFor returns the rules of the first entry whose pattern matches
// repo (host/repository, or oci:DIR).
func RulesFor(list []Retention, repo string) (Rules, bool) {
	for _, r := range list {
		if ok, _ := path.Match(r.Pattern, repo); ok {
			return r.Rules, true
		}
	}
	return Rules{}, false
}

// ParseAge parses a duration as time.ParseDuration does, and also in days
// and weeks: 90d, 2w, 36h.
func ParseAge(s string) (time.Duration, error) {
	for unit, mult := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, unit); ok {
			v, err := strconv.ParseFloat(n, 64)
			d := v * float64(mult)
			// NaN, infinities and ages past 292 years fit no Duration;
			// below a nanosecond, one would round to 0 (no rule).
			if err != nil || !(d >= 1 && d < math.MaxInt64) {
				break
			}
			return time.Duration(d), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q: expected a positive duration such as 90d, 2w or 36h", s)
	}
	return d, nil
}
