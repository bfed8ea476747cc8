package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-oci/ferry/mirror"
)

// TestFerryMirrorConfig reads the suite's mirror configs with ferry's own
// loader, which refuses unknown keys: referrers off for the row that does
// the others' work, ferry's default (on) for the other.
func TestFerryMirrorConfig(t *testing.T) {
	from, to := "127.0.0.1:5000/bench/mirror", "127.0.0.1:5001/mirror/ferry-1/mirror"
	for _, referrers := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "mirror.toml")
		if err := os.WriteFile(path, []byte(ferryMirrorConfig(from, to, referrers)), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := mirror.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(cfg.Syncs) != 1 || cfg.Syncs[0].From != from || cfg.Syncs[0].To != to || cfg.Syncs[0].Referrers != referrers {
			t.Errorf("referrers %v: loaded %+v", referrers, cfg.Syncs)
		}
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
