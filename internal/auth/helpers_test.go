package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// writeConfig writes config.json with content into a new directory and
// returns the directory.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// readConfig returns config.json in dir, decoded generically.
func readConfig(t *testing.T, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("config.json is not JSON: %v\n%s", err, b)
	}
	return m
}

// authsEntry returns auths[key] of a decoded config.json, or nil.
func authsEntry(m map[string]any, key string) map[string]any {
	auths, _ := m["auths"].(map[string]any)
	e, _ := auths[key].(map[string]any)
	return e
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// resolve returns what the keychain of s resolves target to.
func resolve(t *testing.T, s *Store, target authn.Resource) authn.AuthConfig {
	t.Helper()
	a, err := s.Keychain().Resolve(target)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", target, err)
	}
	if a == authn.Anonymous {
		return authn.AuthConfig{}
	}
	ac, err := authn.Authorization(context.Background(), a)
	if err != nil {
		t.Fatalf("Authorization(%s): %v", target, err)
	}
	return *ac
}

func mustRegistry(t *testing.T, host string) name.Registry {
	t.Helper()
	r, err := name.NewRegistry(host)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustRepo(t *testing.T, repo string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
