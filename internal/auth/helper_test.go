package auth

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
)

// helperScript is docker-credential-ferrytest: a credential helper that
// keeps each server's credentials as a JSON file named by the hex of the
// server URL in $FERRYTEST_CREDS. It speaks the protocol of
// https://github.com/docker/docker-credential-helpers: the server URL on
// stdin for get and erase, a {"ServerURL","Username","Secret"} object for
// store, and "credentials not found in native keychain" on stdout with exit
// status 1 when there is nothing to get or erase.
const helperScript = `#!/bin/sh
dir="$FERRYTEST_CREDS"
key() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
notfound() { echo "credentials not found in native keychain"; exit 1; }
case "$1" in
get)
	f="$dir/$(key "$(cat)")"
	[ -f "$f" ] || notfound
	cat "$f"
	;;
store)
	json=$(cat)
	url=$(printf '%s' "$json" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p')
	[ -n "$url" ] || { echo "no ServerURL"; exit 1; }
	printf '%s' "$json" > "$dir/$(key "$url")"
	;;
erase)
	f="$dir/$(key "$(cat)")"
	[ -f "$f" ] || notfound
	rm "$f"
	;;
list)
	echo '{}'
	;;
*)
	echo "unknown action $1"; exit 1
	;;
esac
`

// installHelper puts docker-credential-ferrytest on PATH and returns the
// directory it keeps credentials in.
func installHelper(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-ferrytest"), []byte(helperScript), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	creds := t.TempDir()
	t.Setenv("FERRYTEST_CREDS", creds)
	return creds
}

// helperCred is an entry of the test helper.
type helperCred struct {
	ServerURL, Username, Secret string
}

func helperFile(creds, serverURL string) string {
	return filepath.Join(creds, hex.EncodeToString([]byte(serverURL)))
}

// helperGet returns what the test helper holds for serverURL.
func helperGet(t *testing.T, creds, serverURL string) (helperCred, bool) {
	t.Helper()
	b, err := os.ReadFile(helperFile(creds, serverURL))
	if errors.Is(err, os.ErrNotExist) {
		return helperCred{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var c helperCred
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("helper entry %s: %v", b, err)
	}
	return c, true
}

func helperPut(t *testing.T, creds string, c helperCred) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(helperFile(creds, c.ServerURL), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCredHelpers(t *testing.T) {
	creds := installHelper(t)
	dir := writeConfig(t, `{"credHelpers": {"registry.example.com": "ferrytest"}}`)
	s := NewStore(dir)
	reg := mustRegistry(t, "registry.example.com")

	// A credential the helper already holds.
	helperPut(t, creds, helperCred{ServerURL: "registry.example.com", Username: "pre", Secret: "seeded"})
	if got := resolve(t, s, mustRepo(t, "registry.example.com/app")); got != (authn.AuthConfig{Username: "pre", Password: "seeded"}) {
		t.Errorf("Resolve from the helper = %+v", got)
	}

	// Save goes to the helper, not into config.json.
	if err := s.Save("registry.example.com", authn.AuthConfig{Username: "alice", Password: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	if c, ok := helperGet(t, creds, "registry.example.com"); !ok || c.Username != "alice" || c.Secret != "s3cret" {
		t.Errorf("helper holds %+v (%v) after Save", c, ok)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "s3cret") || strings.Contains(string(raw), b64("alice:s3cret")) {
		t.Errorf("config.json holds the password although a helper is configured:\n%s", raw)
	}
	if got := resolve(t, s, reg); got != (authn.AuthConfig{Username: "alice", Password: "s3cret"}) {
		t.Errorf("Resolve after Save = %+v", got)
	}

	// A host without a helper still uses the file.
	if err := s.Save("plain.example.com", authn.AuthConfig{Username: "bob", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	if e := authsEntry(readConfig(t, dir), "plain.example.com"); e["auth"] != b64("bob:pw") {
		t.Errorf("plain.example.com entry %v", e)
	}
	if _, ok := helperGet(t, creds, "plain.example.com"); ok {
		t.Error("plain.example.com went to the helper")
	}

	// Remove erases from the helper; a second Remove finds nothing.
	if err := s.Remove("registry.example.com"); err != nil {
		t.Fatal(err)
	}
	if c, ok := helperGet(t, creds, "registry.example.com"); ok {
		t.Errorf("helper still holds %+v after Remove", c)
	}
	if a, err := s.Keychain().Resolve(reg); err != nil || a != authn.Anonymous {
		t.Errorf("after Remove, Resolve = %v, %v; want anonymous", a, err)
	}
	if err := s.Remove("registry.example.com"); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("second Remove: %v, want ErrNotLoggedIn", err)
	}
}

func TestCredsStore(t *testing.T) {
	creds := installHelper(t)
	dir := writeConfig(t, `{"credsStore": "ferrytest", "auths": {"stale.example.com": {"auth": "`+b64("old:pw")+`"}}}`)
	s := NewStore(dir)

	// Docker Hub is kept under https://index.docker.io/v1/ in the store too.
	if err := s.Save("docker.io", authn.AuthConfig{Username: "hub", Password: "hubpw"}); err != nil {
		t.Fatal(err)
	}
	if c, ok := helperGet(t, creds, "https://index.docker.io/v1/"); !ok || c.Username != "hub" || c.Secret != "hubpw" {
		t.Errorf("store holds %+v (%v) for Docker Hub", c, ok)
	}
	if got := resolve(t, s, mustRepo(t, "library/alpine")); got != (authn.AuthConfig{Username: "hub", Password: "hubpw"}) {
		t.Errorf("Resolve(library/alpine) = %+v", got)
	}

	// Identity tokens travel as user "<token>", as docker does.
	if err := s.Save("token.example.com", authn.AuthConfig{IdentityToken: "refresh-9"}); err != nil {
		t.Fatal(err)
	}
	if c, _ := helperGet(t, creds, "token.example.com"); c.Username != "<token>" || c.Secret != "refresh-9" {
		t.Errorf("store holds %+v for an identity token", c)
	}
	if got := resolve(t, s, mustRegistry(t, "token.example.com")); got != (authn.AuthConfig{IdentityToken: "refresh-9"}) {
		t.Errorf("Resolve of an identity token = %+v", got)
	}

	// The store is consulted alone: plain auths for a host it serves are not
	// used, as with docker.
	if a, err := s.Keychain().Resolve(mustRegistry(t, "stale.example.com")); err != nil || a != authn.Anonymous {
		t.Errorf("Resolve of a host the store lacks = %v, %v; want anonymous", a, err)
	}

	if err := s.Remove("index.docker.io"); err != nil {
		t.Fatal(err)
	}
	if _, ok := helperGet(t, creds, "https://index.docker.io/v1/"); ok {
		t.Error("store still holds Docker Hub after Remove")
	}
	if err := s.Remove("docker.io"); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("second Remove: %v, want ErrNotLoggedIn", err)
	}
}

func TestMissingHelper(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	dir := writeConfig(t, `{"credsStore": "ferry-missing"}`)
	s := NewStore(dir)
	file := filepath.Join(dir, "config.json")
	check := func(op string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s with a missing helper: no error", op)
			return
		}
		for _, want := range []string{"registry.example.com", "docker-credential-ferry-missing", file} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not mention %q", op, err, want)
			}
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: error %q contains the password", op, err)
		}
	}
	_, err := s.Keychain().Resolve(mustRegistry(t, "registry.example.com"))
	check("Resolve", err)
	check("Save", s.Save("registry.example.com", authn.AuthConfig{Username: "alice", Password: "s3cret"}))
	check("Remove", s.Remove("registry.example.com"))
}
