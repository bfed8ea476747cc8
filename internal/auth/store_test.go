package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
)

func TestSaveRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", ".docker") // created by Save
	s := NewStore(dir)
	cred := authn.AuthConfig{Username: "alice", Password: "s3cret"}
	if err := s.Save("registry.example.com:5000", cred); err != nil {
		t.Fatal(err)
	}

	fi, err := os.Stat(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("config.json mode %o, want 600", mode)
	}
	m := readConfig(t, dir)
	e := authsEntry(m, "registry.example.com:5000")
	if e["auth"] != b64("alice:s3cret") {
		t.Errorf(`auths["registry.example.com:5000"] = %v, want {"auth": %q}`, e, b64("alice:s3cret"))
	}
	if _, ok := e["password"]; ok {
		t.Errorf("the password is stored in clear: %v", e)
	}
	reg := mustRegistry(t, "registry.example.com:5000")
	if got := resolve(t, s, reg); got != cred {
		t.Errorf("after Save, Resolve = %+v, want %+v", got, cred)
	}

	// Saving again replaces the credentials.
	cred2 := authn.AuthConfig{Username: "alice", Password: "n3w"}
	if err := s.Save("registry.example.com:5000", cred2); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, s, reg); got != cred2 {
		t.Errorf("after a second Save, Resolve = %+v, want %+v", got, cred2)
	}
}

func TestSaveKeepsTheRestOfTheFile(t *testing.T) {
	dir := writeConfig(t, `{
	"auths": {"other.example.com": {"auth": "`+b64("bob:pw")+`"}},
	"psFormat": "table {{.ID}}",
	"credHelpers": {"ecr.example.com": "ferrytest-unused"}
}`)
	s := NewStore(dir)
	if err := s.Save("registry.example.com", authn.AuthConfig{Username: "alice", Password: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	m := readConfig(t, dir)
	if e := authsEntry(m, "other.example.com"); e["auth"] != b64("bob:pw") {
		t.Errorf("other.example.com entry became %v", e)
	}
	if m["psFormat"] != "table {{.ID}}" {
		t.Errorf("psFormat became %v", m["psFormat"])
	}
	if h, _ := m["credHelpers"].(map[string]any); h["ecr.example.com"] != "ferrytest-unused" {
		t.Errorf("credHelpers became %v", m["credHelpers"])
	}
	if got := resolve(t, s, mustRegistry(t, "other.example.com")); got.Username != "bob" {
		t.Errorf("other.example.com resolves to %+v after Save", got)
	}
}

func TestSaveExistingFileKeepsItsMode(t *testing.T) {
	dir := writeConfig(t, `{}`)
	file := filepath.Join(dir, "config.json")
	if err := os.Chmod(file, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := NewStore(dir).Save("registry.example.com", authn.AuthConfig{Username: "a", Password: "b"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o640 {
		t.Errorf("mode %o, want the file's own 640 (as docker keeps it)", mode)
	}
}

func TestSaveDockerHubKey(t *testing.T) {
	for _, host := range []string{"docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"} {
		dir := t.TempDir()
		s := NewStore(dir)
		if err := s.Save(host, authn.AuthConfig{Username: "hub", Password: "pw"}); err != nil {
			t.Fatal(err)
		}
		m := readConfig(t, dir)
		auths, _ := m["auths"].(map[string]any)
		if len(auths) != 1 || authsEntry(m, "https://index.docker.io/v1/") == nil {
			t.Errorf("Save(%q) wrote auths %v, want one entry under https://index.docker.io/v1/", host, auths)
		}
		if got := resolve(t, s, mustRepo(t, "library/alpine")); got.Username != "hub" {
			t.Errorf("Save(%q): Docker Hub resolves to %+v", host, got)
		}
	}
}

func TestSaveTokensAndAuth(t *testing.T) {
	s := NewStore(t.TempDir())
	if err := s.Save("token.example.com", authn.AuthConfig{IdentityToken: "refresh-1"}); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, s, mustRegistry(t, "token.example.com")); got != (authn.AuthConfig{IdentityToken: "refresh-1"}) {
		t.Errorf("identity token round trip: %+v", got)
	}
	if err := s.Save("auth.example.com", authn.AuthConfig{Auth: b64("erin:pw")}); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, s, mustRegistry(t, "auth.example.com")); got != (authn.AuthConfig{Username: "erin", Password: "pw"}) {
		t.Errorf("auth round trip: %+v", got)
	}
	if err := s.Save("empty.example.com", authn.AuthConfig{}); err == nil || !strings.Contains(err.Error(), "empty.example.com") {
		t.Errorf("Save of empty credentials: %v, want an error naming the host", err)
	}
}

func TestSaveRefusesToOverwriteABrokenFile(t *testing.T) {
	const broken = `{"auths": {"x": `
	dir := writeConfig(t, broken)
	file := filepath.Join(dir, "config.json")
	err := NewStore(dir).Save("registry.example.com", authn.AuthConfig{Username: "a", Password: "b"})
	if err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("Save over a broken file: %v, want an error naming %s", err, file)
	}
	if b, _ := os.ReadFile(file); string(b) != broken {
		t.Errorf("the broken file was rewritten: %q", b)
	}
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(dir)
	reg := mustRegistry(t, "registry.example.com")
	if err := s.Save("registry.example.com", authn.AuthConfig{Username: "alice", Password: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save("other.example.com", authn.AuthConfig{Username: "bob", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("registry.example.com"); err != nil {
		t.Fatal(err)
	}
	if a, err := s.Keychain().Resolve(reg); err != nil || a != authn.Anonymous {
		t.Errorf("after Remove, Resolve = %v, %v; want anonymous", a, err)
	}
	if got := resolve(t, s, mustRegistry(t, "other.example.com")); got.Username != "bob" {
		t.Errorf("Remove dropped another registry's credentials: %+v", got)
	}
	err := s.Remove("registry.example.com")
	if !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("second Remove: %v, want ErrNotLoggedIn", err)
	}
	if !strings.Contains(err.Error(), "registry.example.com") {
		t.Errorf("error %q does not name the host", err)
	}
	if err := NewStore(filepath.Join(t.TempDir(), "none")).Remove("registry.example.com"); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("Remove without a config file: %v, want ErrNotLoggedIn", err)
	}
}

func TestRemoveOtherSpellings(t *testing.T) {
	dir := writeConfig(t, `{"auths": {
		"https://registry.example.com/v1/": {"auth": "`+b64("old:pw")+`"},
		"http://registry.example.com": {"auth": "`+b64("older:pw")+`"},
		"docker.io": {"auth": "`+b64("hub:pw")+`"}
	}}`)
	s := NewStore(dir)
	for _, host := range []string{"registry.example.com", "index.docker.io"} {
		if err := s.Remove(host); err != nil {
			t.Fatalf("Remove(%s): %v", host, err)
		}
	}
	if auths, _ := readConfig(t, dir)["auths"].(map[string]any); len(auths) != 0 {
		t.Errorf("auths left after Remove: %v", auths)
	}
}
