package gc

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-oci/ferry/internal/config"
)

// maxFuzzInput caps the inputs the fuzz targets try: the fuzzer minimizes
// every input that finds new coverage with a number of runs that grows
// with the square of its size, and larger inputs kept it minimizing
// instead of fuzzing.
const maxFuzzInput = 2048

// FuzzLoadRetention: any file either loads or fails with a *config.Error
// naming it; it never panics. Every [[retention]] table that loads has a
// valid pattern, at least one rule, no negative keep_last, an older_than
// that is a positive duration when set, and its line at its header.
func FuzzLoadRetention(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("..", "..", "testdata", "mirror", "mirror.toml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		string(example),
		"[[retention]]\nrepository = \"r.example/team/*\"\nkeep_last = 3\nkeep = ['^v1\\.']\nolder_than = \"90d\"\n",
		"[[retention]]\nrepository = \"oci:/srv/layout\"\nuntagged = true\n[[retention]]\nrepository = \"*\"\norphans = true\n",
		"[[retention]]\nrepository = \"[\"\nkeep_last = 1\n", "[[retention]]\nrepository = \"a\"\nolder_than = \"Infd\"\n",
		"[[retention]]\nrepository = \"a\"\nkeep_last = -1\n", "[[retention]]\nrepository = \"a\"\nkeep = ['(']\n",
		"[[retention]]\nrepository = \"a\"\n", "[[Retention]]\nrepository = \"a\"\nuntagged = true\n", "retention = 1\n", "",
	} {
		f.Add(s)
	}
	p := filepath.Join(f.TempDir(), "gc.toml")
	f.Fuzz(func(t *testing.T, content string) {
		if len(content) > maxFuzzInput {
			return
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		list, err := LoadRetention(p)
		if err != nil {
			var cerr *config.Error
			if !errors.As(err, &cerr) || cerr.File != p {
				t.Fatalf("err = %v, want a *config.Error naming %s", err, p)
			}
			return
		}
		lines := strings.Split(content, "\n")
		for i, r := range list {
			if _, err := path.Match(r.Pattern, ""); r.Pattern == "" || err != nil {
				t.Fatalf("table %d: accepted the pattern %q", i+1, r.Pattern)
			}
			if r.Rules.Empty() || r.Rules.KeepLast < 0 || r.Rules.OlderThan < 0 {
				t.Fatalf("table %d: accepted the rules %+v", i+1, r.Rules)
			}
			if r.Line < 1 || r.Line > len(lines) || !strings.HasPrefix(strings.TrimSpace(lines[r.Line-1]), "[[") {
				t.Fatalf("table %d: line %d is not its [[retention]] header", i+1, r.Line)
			}
		}
	})
}

// FuzzParseAge: an age that parses is positive; n days and n weeks are
// exactly that; and what time.ParseDuration reads as positive parses the
// same.
func FuzzParseAge(f *testing.F) {
	for _, s := range []string{"90d", "2w", "36h", "1.5d", "0d", "-1d", "NaNd", "Infd", "1e300d", "d", "1h30m", "0", "1e-300w"} {
		f.Add(s, uint16(7))
	}
	f.Fuzz(func(t *testing.T, s string, n uint16) {
		if len(s) > maxFuzzInput {
			return
		}
		if d, err := ParseAge(s); err == nil && d <= 0 {
			t.Fatalf("%q parses as %v", s, d)
		}
		if want, err := time.ParseDuration(s); err == nil && want > 0 {
			if got, err := ParseAge(s); err != nil || got != want {
				t.Fatalf("%q: %v, %v; time.ParseDuration says %v", s, got, err, want)
			}
		}
		for unit, mult := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
			d, err := ParseAge(fmt.Sprintf("%d%s", n, unit))
			if (n == 0) != (err != nil) || (n > 0 && d != time.Duration(n)*mult) {
				t.Fatalf("%d%s: %v, %v", n, unit, d, err)
			}
		}
	})
}
