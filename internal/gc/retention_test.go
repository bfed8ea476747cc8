package gc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-oci/ferry/internal/config"
)

func TestLoadRetentionExample(t *testing.T) {
	list, err := LoadRetention(filepath.Join("..", "..", "testdata", "gc", "retention.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("got %d tables, want 3", len(list))
	}
	r, ok := RulesFor(list, "registry.example.com/team/app")
	if !ok || r.KeepLast != 10 || len(r.Keep) != 2 || !r.kept("lts-2024") || r.kept("v1") || !r.Untagged || !r.Orphans {
		t.Errorf("team/app: %+v, %v", r, ok)
	}
	if r, ok := RulesFor(list, "registry.example.com/ci/build"); !ok || r.OlderThan != 14*24*time.Hour || r.KeepLast != 0 {
		t.Errorf("ci/build: %+v, %v", r, ok)
	}
	if r, ok := RulesFor(list, "oci:/srv/mirror"); !ok || r.KeepLast != 3 {
		t.Errorf("oci:/srv/mirror: %+v, %v", r, ok)
	}
	// "*" stays within one path segment.
	if _, ok := RulesFor(list, "registry.example.com/team/app/sub"); ok {
		t.Error("team/* matched team/app/sub")
	}
}

// The mirror config's example holds a [[retention]] table too.
func TestLoadRetentionFromMirrorConfig(t *testing.T) {
	list, err := LoadRetention(filepath.Join("..", "..", "testdata", "mirror", "mirror.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := RulesFor(list, "registry.internal:5000/mirror/nginx"); !ok || r.KeepLast != 10 || !r.Orphans {
		t.Errorf("mirror/nginx: %+v, %v", r, ok)
	}
}

func TestLoadRetentionErrors(t *testing.T) {
	for _, c := range []struct {
		name, toml, want string
	}{
		{"unknown key", "[[retention]]\nrepository = \"r/*\"\nkeep_lats = 3\n", ":3: retention.keep_lats: unknown key"},
		{"no repository", "[[retention]]\nkeep_last = 3\n", ":1: retention.repository: missing"},
		{"bad pattern", "[[retention]]\nrepository = \"r/[\"\nkeep_last = 3\n", ":2: retention.repository"},
		{"bad regexp", "[[retention]]\nrepository = \"r/*\"\nkeep_last = 1\nkeep = ['(']\n", ":4: retention.keep"},
		{"bad age", "[[retention]]\nrepository = \"r/*\"\nolder_than = \"soon\"\n", ":3: retention.older_than: \"soon\": expected a positive duration"},
		{"negative", "[[retention]]\nrepository = \"r/*\"\nkeep_last = -1\n", ":3: retention.keep_last"},
		{"keep only", "[[retention]]\nrepository = \"r/*\"\nkeep = ['x']\n", ":1: retention: no rule"},
		{"second table", "[[retention]]\nrepository = \"a/*\"\norphans = true\n\n[[retention]]\nrepository = \"b/*\"\nolder_than = \"-1d\"\n", ":7: retention.older_than"},
		{"none", "[[sync]]\nfrom = \"a/b\"\nto = \"c/d\"\n", "no [[retention]] tables"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "gc.toml")
			if err := os.WriteFile(p, []byte(c.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadRetention(p)
			var cerr *config.Error
			if !errors.As(err, &cerr) || !strings.Contains(err.Error(), p+c.want) && !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want a config error containing %q", err, c.want)
			}
		})
	}
}

func TestParseAge(t *testing.T) {
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "36h": 36 * time.Hour, "1.5d": 36 * time.Hour, "90m": 90 * time.Minute} {
		if got, err := ParseAge(in); err != nil || got != want {
			t.Errorf("ParseAge(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "-3d", "0", "0d", "soon", "3y"} {
		if _, err := ParseAge(in); err == nil {
			t.Errorf("ParseAge(%q) succeeded; want an error", in)
		}
	}
}
