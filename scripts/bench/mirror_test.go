package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-oci/ferry/mirror"
)

// TestFerryMirrorConfig reads the suite's mirror config with ferry's own
// loader, which refuses unknown keys.
func TestFerryMirrorConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mirror.toml")
	from, to := "127.0.0.1:5000/bench/mirror", "127.0.0.1:5001/mirror/ferry-1/mirror"
	if err := os.WriteFile(path, []byte(ferryMirrorConfig(from, to)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := mirror.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Syncs) != 1 || cfg.Syncs[0].From != from || cfg.Syncs[0].To != to {
		t.Errorf("loaded %+v", cfg.Syncs)
	}
}

func TestRegsyncConfig(t *testing.T) {
	got := regsyncConfig([]string{"127.0.0.1:1", "127.0.0.1:2"}, "127.0.0.1:1/a/b", "127.0.0.1:2/c/b")
	want := `version: 1
creds:
  - registry: "127.0.0.1:1"
    tls: disabled
  - registry: "127.0.0.1:2"
    tls: disabled
sync:
  - source: "127.0.0.1:1/a/b"
    target: "127.0.0.1:2/c/b"
    type: repository
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
