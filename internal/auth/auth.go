// Package auth reads and writes registry credentials the way the docker CLI
// does: in the docker config file ($DOCKER_CONFIG/config.json or
// ~/.docker/config.json), in its credential store (credsStore) or in a
// per-registry credential helper (credHelpers). It also checks credentials
// against a registry for `ferry login`.
//
// The package never prints. A credential helper's own diagnostics on its
// standard error pass through to the process's standard error, as with docker.
package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/credentials"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
)

// ErrUnauthorized means a registry rejected the credentials it was given.
var ErrUnauthorized = errors.New("the registry rejected the credentials")

// ErrNotLoggedIn means there are no stored credentials for a registry.
var ErrNotLoggedIn = errors.New("not logged in")

// dockerHubKey is the key docker stores Docker Hub credentials under, for
// historical reasons (authn.DefaultAuthKey).
const dockerHubKey = authn.DefaultAuthKey

// Store reads and writes credentials in a docker config file.
//
// A Store holds no state besides Dir: every call reads the config file afresh,
// so a Store and its keychains may be used from many goroutines. Writes are
// not locked: two processes saving at once can lose one update, as with docker.
type Store struct {
	// Dir is the directory holding config.json. "" means $DOCKER_CONFIG if
	// set, else ~/.docker, looked up at each call.
	Dir string
}

// NewStore returns a Store for dir ("" = $DOCKER_CONFIG, else ~/.docker).
func NewStore(dir string) *Store { return &Store{Dir: dir} }

// configDir returns the directory of the config file, following docker's
// rule at call time. (docker/cli's config.Dir caches its answer for the
// life of the process, so it is not used.)
func (s *Store) configDir() (string, error) {
	if s != nil && s.Dir != "" {
		return s.Dir, nil
	}
	if d := os.Getenv(config.EnvOverrideConfigDir); d != "" {
		return d, nil
	}
	home, _ := os.UserHomeDir()
	if home == "" {
		if u, err := user.Current(); err == nil {
			home = u.HomeDir
		}
	}
	if home == "" {
		return "", errors.New("finding the docker config file: neither DOCKER_CONFIG nor HOME is set: set one of them")
	}
	return filepath.Join(home, ".docker"), nil
}

// load reads the config file. A missing file is an empty config; a file that
// cannot be read or parsed is an error naming it.
func (s *Store) load() (*configfile.ConfigFile, error) {
	dir, err := s.configDir()
	if err != nil {
		return nil, err
	}
	cf, err := config.Load(dir)
	if err != nil {
		// config.Load's errors name the file.
		return nil, fmt.Errorf("reading registry credentials: %w (fix the file, or point DOCKER_CONFIG at another directory)", err)
	}
	return cf, nil
}

// serverKey returns the key docker stores credentials for host under: the
// host[:port] with any scheme and path removed, except that Docker Hub
// ("docker.io", "index.docker.io", "registry-1.docker.io") is stored under
// "https://index.docker.io/v1/".
func serverKey(host string) string {
	h := credentials.ConvertToHostname(strings.TrimSpace(host))
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return dockerHubKey
	}
	return h
}

// helperFor returns the credential helper suffix configured for key
// (credHelpers[key], else credsStore), or "" for the plain file.
func helperFor(cf *configfile.ConfigFile, key string) string {
	if h, ok := cf.CredentialHelpers[key]; ok && h != "" {
		return h
	}
	return cf.CredentialsStore
}

// helperStore returns the credential store run by docker-credential-<helper>.
// It keeps an (empty) entry for the server in the file, as docker does.
func helperStore(cf *configfile.ConfigFile, helper string) credentials.Store {
	return credentials.NewNativeStore(cf, helper)
}

// fileKeys returns the keys of cf's auths that hold credentials for key: key
// itself first, then other spellings of it ("https://host/", "docker.io"),
// in a stable order.
func fileKeys(cf *configfile.ConfigFile, key string) []string {
	var keys, others []string
	for k := range cf.AuthConfigs {
		switch {
		case k == key:
			keys = append(keys, k)
		case serverKey(k) == key:
			others = append(others, k)
		}
	}
	slices.Sort(others)
	return append(keys, others...)
}

// isEmpty reports whether ac holds no credential.
func isEmpty(ac types.AuthConfig) bool {
	return ac.Username == "" && ac.Password == "" && ac.Auth == "" &&
		ac.IdentityToken == "" && ac.RegistryToken == ""
}

// toAuthn converts docker's stored form to ggcr's.
func toAuthn(ac types.AuthConfig) authn.AuthConfig {
	return authn.AuthConfig{
		Username:      ac.Username,
		Password:      ac.Password,
		Auth:          ac.Auth,
		IdentityToken: ac.IdentityToken,
		RegistryToken: ac.RegistryToken,
	}
}

// helperError describes a failing credential helper and what to do about it.
func helperError(verb, host, helper, file string, err error, secrets ...string) error {
	return redact(fmt.Errorf("%s credentials for %s with docker-credential-%s (configured in %s): %w (install the helper on PATH, or change credsStore/credHelpers)",
		verb, host, helper, file, err), secrets...)
}

// Save stores credentials for host the way `docker login` does: with the
// credential helper configured for host (credHelpers[host], else credsStore)
// if there is one, otherwise base64-encoded in the `auths` section of
// config.json. The file is replaced atomically (temporary file and rename);
// a new file gets mode 0600, an existing file keeps its mode, as with docker.
// A config file that cannot be parsed is left untouched and reported.
func (s *Store) Save(host string, cred authn.AuthConfig) error {
	key := serverKey(host)
	if key == "" {
		return fmt.Errorf("saving credentials: %q is not a registry host", host)
	}
	ac := types.AuthConfig{
		Username:      cred.Username,
		Password:      cred.Password,
		IdentityToken: cred.IdentityToken,
		RegistryToken: cred.RegistryToken,
		ServerAddress: key,
	}
	if ac.Username == "" && ac.Password == "" && cred.Auth != "" {
		u, p, err := decodeAuth(cred.Auth)
		if err != nil {
			return fmt.Errorf("saving credentials for %s: %w", host, err)
		}
		ac.Username, ac.Password = u, p
	}
	if ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return fmt.Errorf("saving credentials for %s: nothing to save: give a user name and password or a token", host)
	}
	cf, err := s.load()
	if err != nil {
		return err
	}
	if helper := helperFor(cf, key); helper != "" {
		if err := helperStore(cf, helper).Store(ac); err != nil {
			return helperError("storing", host, helper, cf.Filename, err, ac.Password, ac.IdentityToken, ac.RegistryToken)
		}
		return nil
	}
	cf.GetAuthConfigs()[key] = ac
	if err := cf.Save(); err != nil {
		return fmt.Errorf("saving credentials for %s in %s: %w", host, cf.Filename, err)
	}
	return nil
}

// Remove deletes the stored credentials for host: from its credential helper
// or store if one is configured, and from `auths` in config.json (under any
// spelling of the host, such as "https://host"). If there were none it
// returns an error wrapping ErrNotLoggedIn.
func (s *Store) Remove(host string) error {
	key := serverKey(host)
	if key == "" {
		return fmt.Errorf("removing credentials: %q is not a registry host", host)
	}
	cf, err := s.load()
	if err != nil {
		return err
	}
	found := false
	if helper := helperFor(cf, key); helper != "" {
		st := helperStore(cf, helper)
		ac, err := st.Get(key)
		if err != nil {
			return helperError("reading", host, helper, cf.Filename, err)
		}
		ac.ServerAddress = ""
		if !isEmpty(ac) {
			// Erase also drops the helper's entry from auths.
			if err := st.Erase(key); err != nil {
				return helperError("removing", host, helper, cf.Filename, err)
			}
			found = true
		}
	}
	if keys := fileKeys(cf, key); len(keys) > 0 {
		for _, k := range keys {
			delete(cf.AuthConfigs, k)
		}
		if err := cf.Save(); err != nil {
			return fmt.Errorf("removing credentials for %s from %s: %w", host, cf.Filename, err)
		}
		found = true
	}
	if !found {
		return fmt.Errorf("%w to %s", ErrNotLoggedIn, host)
	}
	return nil
}

// decodeAuth splits a base64 "user:password" string, as docker does.
func decodeAuth(s string) (user, password string, err error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", "", errors.New(`the "auth" value is not base64`)
	}
	user, password, ok := strings.Cut(string(b), ":")
	if !ok || user == "" {
		return "", "", errors.New(`the "auth" value is not base64 of user:password`)
	}
	return user, strings.Trim(password, "\x00"), nil
}
