package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
)

func TestKeychainAuths(t *testing.T) {
	dir := writeConfig(t, `{
	"auths": {
		"registry.example.com": {"auth": "`+b64("bob:pa:ss")+`"},
		"fields.example.com": {"username": "carol", "password": "pw2"},
		"token.example.com": {"identitytoken": "refresh-123"},
		"bearer.example.com": {"registrytoken": "bearer-456"},
		"https://legacy.example.com/v1/": {"auth": "`+b64("dave:pw3")+`"},
		"https://index.docker.io/v1/": {"auth": "`+b64("hubuser:hubpw")+`"},
		"team.example.com/app": {"auth": "`+b64("app:apppw")+`"},
		"team.example.com": {"auth": "`+b64("team:teampw")+`"}
	}
}`)
	s := NewStore(dir)
	tests := []struct {
		target authn.Resource
		want   authn.AuthConfig
	}{
		{mustRegistry(t, "registry.example.com"), authn.AuthConfig{Username: "bob", Password: "pa:ss"}},
		{mustRepo(t, "registry.example.com/some/repo"), authn.AuthConfig{Username: "bob", Password: "pa:ss"}},
		{mustRegistry(t, "fields.example.com"), authn.AuthConfig{Username: "carol", Password: "pw2"}},
		{mustRegistry(t, "token.example.com"), authn.AuthConfig{IdentityToken: "refresh-123"}},
		{mustRegistry(t, "bearer.example.com"), authn.AuthConfig{RegistryToken: "bearer-456"}},
		{mustRegistry(t, "legacy.example.com"), authn.AuthConfig{Username: "dave", Password: "pw3"}},
		{mustRegistry(t, "index.docker.io"), authn.AuthConfig{Username: "hubuser", Password: "hubpw"}},
		{mustRegistry(t, "docker.io"), authn.AuthConfig{Username: "hubuser", Password: "hubpw"}},
		{mustRepo(t, "library/alpine"), authn.AuthConfig{Username: "hubuser", Password: "hubpw"}},
		{mustRepo(t, "team.example.com/app"), authn.AuthConfig{Username: "app", Password: "apppw"}},
		{mustRepo(t, "team.example.com/other"), authn.AuthConfig{Username: "team", Password: "teampw"}},
		{mustRegistry(t, "unknown.example.com"), authn.AuthConfig{}},
	}
	for _, tt := range tests {
		if got := resolve(t, s, tt.target); got != tt.want {
			t.Errorf("Resolve(%s) = %+v, want %+v", tt.target, got, tt.want)
		}
	}
}

func TestKeychainUnknownHostIsAnonymous(t *testing.T) {
	dir := writeConfig(t, `{"auths": {"registry.example.com": {"auth": "`+b64("bob:pw")+`"}}}`)
	a, err := NewStore(dir).Keychain().Resolve(mustRegistry(t, "other.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if a != authn.Anonymous {
		t.Errorf("Resolve(other.example.com) = %v, want authn.Anonymous", a)
	}
}

func TestKeychainMissingFileIsAnonymous(t *testing.T) {
	for name, dir := range map[string]string{
		"empty dir":   t.TempDir(),
		"missing dir": filepath.Join(t.TempDir(), "nowhere"),
	} {
		a, err := NewStore(dir).Keychain().Resolve(mustRegistry(t, "registry.example.com"))
		if err != nil {
			t.Errorf("%s: Resolve: %v", name, err)
		}
		if a != authn.Anonymous {
			t.Errorf("%s: Resolve = %v, want authn.Anonymous", name, a)
		}
	}
}

func TestKeychainMalformedFile(t *testing.T) {
	for name, content := range map[string]string{
		"bad json":   `{"auths": {`,
		"bad base64": `{"auths": {"registry.example.com": {"auth": "%%%"}}}`,
	} {
		dir := writeConfig(t, content)
		_, err := NewStore(dir).Keychain().Resolve(mustRegistry(t, "registry.example.com"))
		if err == nil {
			t.Errorf("%s: Resolve: no error", name)
			continue
		}
		if file := filepath.Join(dir, "config.json"); !strings.Contains(err.Error(), file) {
			t.Errorf("%s: error %q does not name %s", name, err, file)
		}
	}
}

func TestKeychainCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	kc := NewStore(t.TempDir()).Keychain().(authn.ContextKeychain)
	if _, err := kc.ResolveContext(ctx, mustRegistry(t, "registry.example.com")); err == nil {
		t.Error("ResolveContext with a cancelled context: no error")
	}
}

// The default directory follows DOCKER_CONFIG, then HOME, at each call (not
// once per process, as docker/cli's config.Dir does).
func TestStoreDefaultDirFollowsEnvironment(t *testing.T) {
	one := writeConfig(t, `{"auths": {"registry.example.com": {"auth": "`+b64("one:pw1")+`"}}}`)
	two := writeConfig(t, `{"auths": {"registry.example.com": {"auth": "`+b64("two:pw2")+`"}}}`)
	home := t.TempDir()
	if err := os.Mkdir(filepath.Join(home, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".docker", "config.json"),
		[]byte(`{"auths": {"registry.example.com": {"auth": "`+b64("home:pw3")+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	s := NewStore("")
	reg := mustRegistry(t, "registry.example.com")
	for _, step := range []struct{ env, user string }{{one, "one"}, {two, "two"}, {"", "home"}} {
		t.Setenv("DOCKER_CONFIG", step.env)
		if got := resolve(t, s, reg).Username; got != step.user {
			t.Errorf("DOCKER_CONFIG=%q: user %q, want %q", step.env, got, step.user)
		}
	}
}

// TestConfigured: credentials from ferry's config come before the docker
// config file's for the hosts they name, the file answers for the others,
// and a configured password that cannot be read is an error, not a silent
// anonymous pull.
func TestConfigured(t *testing.T) {
	dir := writeConfig(t, `{"auths": {
		"registry.example.com": {"auth": "`+b64("bob:filepw")+`"},
		"other.example.com": {"auth": "`+b64("carol:otherpw")+`"}
	}}`)
	k := Configured{
		Lookup: func(host string) (string, string, bool, error) {
			switch host {
			case "registry.example.com":
				return "ci", "configpw", true, nil
			case "broken.example.com":
				return "", "", false, errors.New("the password_file of [registry.\"broken.example.com\"]: no such file")
			}
			return "", "", false, nil
		},
		Next: NewStore(dir).Keychain(),
	}
	for target, want := range map[authn.Resource]authn.AuthConfig{
		mustRepo(t, "registry.example.com/app"): {Username: "ci", Password: "configpw"},
		mustRegistry(t, "other.example.com"):    {Username: "carol", Password: "otherpw"},
		mustRegistry(t, "unknown.example.com"):  {},
	} {
		a, err := k.ResolveContext(context.Background(), target)
		if err != nil {
			t.Fatalf("Resolve(%s): %v", target, err)
		}
		var got authn.AuthConfig
		if a != authn.Anonymous {
			ac, err := authn.Authorization(context.Background(), a)
			if err != nil {
				t.Fatal(err)
			}
			got = *ac
		}
		if got != want {
			t.Errorf("Resolve(%s) = %+v, want %+v", target, got, want)
		}
	}
	if _, err := k.Resolve(mustRegistry(t, "broken.example.com")); err == nil || !strings.Contains(err.Error(), "broken.example.com") {
		t.Errorf("a broken configured password: err = %v, want one naming the registry", err)
	}
}
