package mirror

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-oci/ferry/internal/config"
)

// maxFuzzInput caps the inputs the fuzz targets try: the fuzzer minimizes
// every input that finds new coverage with a number of runs that grows
// with the square of its size, and larger inputs kept it minimizing
// instead of fuzzing.
const maxFuzzInput = 2048

// FuzzLoad: any file either loads or fails with a *config.Error naming
// the file and a line of it (or none); it never panics. A config that
// loads has its [[sync]] entries numbered in file order at their header
// lines, every endpoint set and layout paths absolute, one target per
// entry, and tag selection that returns a subset of the tags it is given
// and never a signature or referrer tag.
func FuzzLoad(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("..", "testdata", "mirror", "mirror.toml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		string(example), two,
		"[[sync]]\nfrom = \"a.example/x\"\nto = \"oci:out\"\n[sync.tags]\nglob = [\"v1.*\", \"[0-9]*\"]\nsemver = \">=1.2, <2\"\nnewest = 2\n",
		"[[sync]]\nfrom = \"oci-archive:in.tar\"\nto = \"b.example/y\"\nimmutable = [\"^v\"]\ntags = { include = [\"(a|b\"] }\n",
		"[defaults]\nplatforms = [\"linux/amd64\"]\njobs = -1\n",
		"[registry.\"a b\"]\ninsecure = true\n[[sync]]\nfrom = \"x/y\"\nto = \"x/y\"\n",
		"[[sync]]\nfrom = \"a/b:tag\"\nto = \"c/d\"\n", "[[sync]]\n", "sync = 1\n", "",
	} {
		f.Add(s)
	}
	p := filepath.Join(f.TempDir(), "mirror.toml")
	tags := []string{"v1", "v1.2.3", "1.2.4", "latest", "sha256-" + strings.Repeat("a", 64), "sha256-" + strings.Repeat("b", 64) + ".sig"}
	f.Fuzz(func(t *testing.T, content string) {
		if len(content) > maxFuzzInput {
			return
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(p)
		lines := strings.Split(content, "\n")
		if err != nil {
			var cerr *config.Error
			if !errors.As(err, &cerr) || cerr.File != p || !strings.HasPrefix(err.Error(), p) {
				t.Fatalf("err = %v, want a *config.Error naming %s", err, p)
			}
			if cerr.Line < 0 || cerr.Line > len(lines)+1 {
				t.Fatalf("error at line %d of a %d-line file: %v", cerr.Line, len(lines), err)
			}
			return
		}
		targets := map[string]bool{}
		for i, s := range cfg.Syncs {
			if s.Index != i+1 || s.Line < 1 || s.Line > len(lines) || !strings.HasPrefix(strings.TrimSpace(lines[s.Line-1]), "[[") {
				t.Fatalf("entry %d: index %d, line %d is not its [[sync]] header", i+1, s.Index, s.Line)
			}
			for _, e := range []string{s.From, s.To} {
				if rest, ok := strings.CutPrefix(e, "oci:"); ok && !filepath.IsAbs(rest) {
					t.Fatalf("entry %d: layout path %q is not absolute", s.Index, e)
				}
				if e == "" {
					t.Fatalf("entry %d: an empty endpoint", s.Index)
				}
			}
			if targets[endpointKey(s.To)] {
				t.Fatalf("two entries have the target %s", s.To)
			}
			targets[endpointKey(s.To)] = true
			for _, got := range s.SelectTags(tags) {
				if !slices.Contains(tags, got) || isReferrerTag(got) {
					t.Fatalf("entry %d selects %q", s.Index, got)
				}
			}
			s.Immutable("v1")
		}
	})
}

// FuzzGlob: a [sync.tags] glob selects exactly the tags path.Match
// matches, as docs/mirror-config.md promises, and a pattern path.Match
// refuses is refused.
func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{
		{"v1.*", "v1.2"}, {"*-alpine", "3-alpine"}, {"v?", "v1"}, {"[0-9]*", "1.0"}, {"[^a-c]x", "dx"},
		{`\*`, "*"}, {`[\]]`, "]"}, {"[[:alpha:]]", "x"}, {"[a-]", "a"}, {"a[", "a"}, {`[x-\]]`, "y"},
	} {
		f.Add(s[0], s[1])
	}
	tagChars := regexp.MustCompile(`^[A-Za-z0-9_.-]*$`)
	f.Fuzz(func(t *testing.T, glob, tag string) {
		// path.Match backtracks: its time grows with the tag's length to
		// the power of the stars, so the oracle needs both kept small.
		if len(tag) > 32 || strings.Count(glob, "*") > 4 || len(glob) > 256 {
			return
		}
		re, err := globRegexp(glob)
		want, merr := path.Match(glob, tag)
		switch {
		case merr != nil && err == nil:
			t.Fatalf("glob %q accepted, path.Match says %v", glob, merr)
		case err != nil || !tagChars.MatchString(tag):
			return // a refused pattern, or not a tag
		}
		if got := re.MatchString(tag); got != want {
			t.Fatalf("glob %q (regexp %s) on tag %q: %v, path.Match says %v", glob, re, tag, got, want)
		}
	})
}
