package mirror

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-oci/ferry/internal/config"
	"github.com/ferry-oci/ferry/internal/transfer"
)

// TestExampleConfig loads the documented example and checks what it says.
func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "testdata", "mirror", "mirror.toml")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs(filepath.Dir(path))
	if cfg.Jobs != 16 || cfg.Images != 8 || len(cfg.Syncs) != 3 {
		t.Fatalf("jobs %d images %d syncs %d", cfg.Jobs, cfg.Images, len(cfg.Syncs))
	}
	if got := cfg.Registry["registry.internal:5000"].CAFile; got != filepath.Join(dir, "certs", "internal-ca.pem") {
		t.Errorf("ca_file %q: want it relative to the config's directory", got)
	}
	if !cfg.Registry["lab.example:5000"].Insecure {
		t.Errorf("lab.example:5000 not insecure")
	}
	nginx, alpine, app := cfg.Syncs[0], cfg.Syncs[1], cfg.Syncs[2]
	if transfer.PlatformList(nginx.Platforms) != "linux/amd64,linux/arm64" || !nginx.Referrers || !nginx.Prune {
		t.Errorf("nginx: %+v", nginx)
	}
	tags := []string{"1.24.0", "1.25.0", "1.25.1", "1.26.0", "1.27.0-rc1", "1.27.1", "1.27.1-alpine", "latest", "mainline"}
	if got := strings.Join(nginx.SelectTags(tags), " "); got != "1.25.1 1.26.0 1.27.1" {
		t.Errorf("nginx selects %s", got)
	}
	if !nginx.Immutable("1.27.1") || nginx.Immutable("latest") {
		t.Errorf("immutable patterns")
	}
	if alpine.To != "oci:"+filepath.Join(dir, "alpine-layout") || alpine.Referrers || transfer.PlatformList(alpine.Platforms) != "linux/amd64" {
		t.Errorf("alpine: to %s, referrers %v, platforms %v", alpine.To, alpine.Referrers, alpine.Platforms)
	}
	if got := strings.Join(alpine.SelectTags([]string{"3.19", "3.20", "3.20.1", "3.21", "3.21.2", "3.2", "edge"}), " "); got != "3.21 3.21.2" {
		t.Errorf("alpine selects %s", got)
	}
	if len(app.Platforms) != 0 || app.Line != 59 {
		t.Errorf("app: platforms %v (want all), line %d", app.Platforms, app.Line)
	}
	sig := "sha256-" + strings.Repeat("a", 64)
	if got := strings.Join(app.SelectTags([]string{"v1", "scratch-1", sig, sig + ".sig", sig + ".att"}), " "); got != "v1" {
		t.Errorf("app selects %s: signature and referrer tags are never images", got)
	}
}

func load(t *testing.T, content string) (*Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mirror.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p)
}

const two = `[[sync]]
from = "registry.example.com/a"
to = "mirror.example.com/a"

[[sync]]
from = "registry.example.com/b"
to = "mirror.example.com/b"
`

// TestConfigErrors: unknown keys and bad values are rejected with the
// file, the line and the key, in the entry they are in.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		line          int
		key, msg      string
	}{
		{"unknown key", two + "prun = true\n", 8, "sync.prun", "unknown key"},
		{"unknown tag key", two + "tags.semvr = '>1'\n", 8, "sync.tags.semvr", "unknown key"},
		{"unknown table", "[default]\njobs = 1\n" + two, 1, "default", "unknown key"},
		{"wrong type", two + "prune = 'yes'\n", 8, "sync.prune", ""},
		{"bad regex in the second entry", "[[sync]]\nfrom = 'r.io/a'\nto = 'm.io/a'\ntags.include = ['^ok$']\n\n[[sync]]\nfrom = 'r.io/b'\nto = 'm.io/b'\ntags.include = ['(']\n", 9, "sync.tags.include", `"(" is not a valid regular expression`},
		{"bad regex in a sub-table", "[[sync]]\nfrom = 'r.io/a'\nto = 'm.io/a'\n[sync.tags]\nexclude = [\n  '[',\n]\n", 5, "sync.tags.exclude", "not a valid regular expression"},
		{"bad immutable", two + "immutable = ['*']\n", 8, "sync.immutable", "not a valid regular expression"},
		{"bad semver", two + "tags.semver = 'newest please'\n", 8, "sync.tags.semver", "newest please"},
		{"bad glob", two + "tags.glob = ['1.[2']\n", 8, "sync.tags.glob", "not a valid glob"},
		{"negative newest", two + "tags.newest = -1\n", 8, "sync.tags.newest", "-1"},
		{"bad default platform", "[defaults]\nplatforms = ['linux']\n" + two, 2, "defaults.platforms", `"linux": expected os/arch`},
		{"bad platform", two + "platforms = ['linux/amd64', 'arm64']\n", 8, "sync.platforms", `"arm64"`},
		{"negative jobs", "[defaults]\njobs = -2\n" + two, 2, "defaults.jobs", "-2"},
		{"missing from", "[[sync]]\nto = 'm.io/a'\n", 1, "sync.from", "missing"},
		{"missing to", "[[sync]]\nfrom = 'r.io/a'\n", 1, "sync.to", "missing"},
		{"tagged from", "[[sync]]\nfrom = 'r.io/a:1.0'\nto = 'm.io/a'\n", 2, "sync.from", "without a tag"},
		{"bad repository", "[[sync]]\nfrom = 'r.io/A'\nto = 'm.io/a'\n", 2, "sync.from", "r.io/A"},
		{"archive target", "[[sync]]\nfrom = 'r.io/a'\nto = 'oci-archive:a.tar'\n", 3, "sync.to", "oci-archive"},
		{"tagged layout", "[[sync]]\nfrom = 'r.io/a'\nto = 'oci:dir:v1'\n", 3, "sync.to", "without a tag"},
		{"same target twice", two + "\n[[sync]]\nfrom = 'r.io/c'\nto = 'mirror.example.com/b'\n", 11, "sync.to", "also the target of the [[sync]] at line 5"},
		{"source is target", "[[sync]]\nfrom = 'docker.io/library/nginx'\nto = 'nginx'\n", 3, "sync.to", "the source as well"},
		{"no entries", "[defaults]\njobs = 2\n", 0, "sync", "no [[sync]] entries"},
		{"bad host", "[registry.\"a/b\"]\ninsecure = true\n" + two, 1, `registry."a/b"`, "host[:port]"},
		{"username without password", "[registry.\"r.io\"]\nusername = 'u'\n" + two, 2, `registry."r.io".username`, "needs its password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.content)
			var cerr *config.Error
			if !errors.As(err, &cerr) {
				t.Fatalf("err = %v, want a *config.Error", err)
			}
			if cerr.Line != tc.line || cerr.Key != tc.key || !strings.HasSuffix(cerr.File, "mirror.toml") || !strings.Contains(cerr.Error(), tc.msg) {
				t.Errorf("got %q (line %d, key %q), want line %d, key %q, containing %q", cerr.Error(), cerr.Line, cerr.Key, tc.line, tc.key, tc.msg)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.toml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestGlob(t *testing.T) {
	for pattern, cases := range map[string]map[string]bool{
		"1.2*":          {"1.2": true, "1.25.3": true, "1.3": false, "x1.2": false},
		"v?.0":          {"v1.0": true, "v10.0": false},
		"[0-9]*-alpine": {"3-alpine": true, "3.20-alpine": true, "edge-alpine": false},
		"[^a-z]*":       {"1": true, "a1": false},
		`a\*`:           {"a*": true, "ab": false},
	} {
		re, err := globRegexp(pattern)
		if err != nil {
			t.Fatalf("%s: %v", pattern, err)
		}
		for tag, want := range cases {
			if re.MatchString(tag) != want {
				t.Errorf("glob %q on %q: %v, want %v", pattern, tag, !want, want)
			}
		}
	}
}

// TestDefaultsApply: [defaults] apply where an entry is silent, and an
// entry's own values win.
func TestDefaultsApply(t *testing.T) {
	cfg, err := load(t, `
[defaults]
platforms = ["linux/amd64"]
referrers = false

[[sync]]
from = "r.io/a"
to = "m.io/a"

[[sync]]
from = "r.io/b"
to = "m.io/b"
platforms = []
referrers = true
`)
	if err != nil {
		t.Fatal(err)
	}
	a, b := cfg.Syncs[0], cfg.Syncs[1]
	if len(a.Platforms) != 1 || a.Referrers || len(b.Platforms) != 0 || !b.Referrers {
		t.Errorf("a: %v %v; b: %v %v", a.Platforms, a.Referrers, b.Platforms, b.Referrers)
	}
	if a.Index != 1 || b.Index != 2 || a.Line != 6 || b.Line != 10 {
		t.Errorf("indexes %d %d, lines %d %d", a.Index, b.Index, a.Line, b.Line)
	}
}
