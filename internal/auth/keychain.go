package auth

import (
	"context"

	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
)

// Keychain returns an authn.Keychain (also an authn.ContextKeychain) that
// resolves credentials for a registry from the docker config file, read
// afresh on each call:
//
//   - if a credential helper is configured for the registry
//     (credHelpers[host], else credsStore), only that helper is asked, as
//     docker does; an identity token it returns (user "<token>") becomes
//     authn.AuthConfig.IdentityToken;
//   - otherwise `auths`: the entry for the repository ("host/repo", as
//     go-containerregistry's default keychain allows), then the one for the
//     host, then other spellings of the host ("https://host/"); user and
//     password come from "auth" (base64) or "username"/"password", plus
//     "identitytoken" and "registrytoken".
//
// Docker Hub ("index.docker.io", "docker.io") is looked up under
// "https://index.docker.io/v1/". No config file, or no entry, resolves to
// authn.Anonymous; a config file that cannot be read or parsed, or a failing
// credential helper, is an error naming the file.
func (s *Store) Keychain() authn.Keychain {
	var dir string
	if s != nil {
		dir = s.Dir
	}
	return keychain{store: Store{Dir: dir}}
}

// keychain resolves credentials from a Store.
type keychain struct {
	store Store
}

// Resolve implements authn.Keychain.
func (k keychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), target)
}

// ResolveContext implements authn.ContextKeychain.
func (k keychain) ResolveContext(ctx context.Context, target authn.Resource) (authn.Authenticator, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	host := target.RegistryStr()
	key := serverKey(host)
	if key == "" {
		return authn.Anonymous, nil
	}
	cf, err := k.store.load()
	if err != nil {
		return nil, err
	}
	if helper := helperFor(cf, key); helper != "" {
		ac, err := helperStore(cf, helper).Get(key)
		if err != nil {
			return nil, helperError("reading", host, helper, cf.Filename, err)
		}
		return authenticator(ac), nil
	}
	var candidates []string
	if repo := target.String(); repo != host {
		candidates = append(candidates, repo)
	}
	candidates = append(candidates, fileKeys(cf, key)...)
	for _, c := range candidates {
		if ac, ok := cf.AuthConfigs[c]; ok {
			if a := authenticator(ac); a != authn.Anonymous {
				return a, nil
			}
		}
	}
	return authn.Anonymous, nil
}

// authenticator turns a stored credential into an Authenticator, Anonymous
// when it holds nothing.
func authenticator(ac types.AuthConfig) authn.Authenticator {
	ac.ServerAddress = ""
	if isEmpty(ac) {
		return authn.Anonymous
	}
	return authn.FromConfig(toAuthn(ac))
}

// Configured is a keychain that asks Lookup first, for credentials set in
// ferry's own configuration, and Next for every registry Lookup has none
// for.
type Configured struct {
	// Lookup returns the username and password configured for a registry
	// host, ok false when there are none, and an error when they are
	// configured but cannot be read.
	Lookup func(host string) (username, password string, ok bool, err error)
	Next   authn.Keychain
}

// Resolve implements authn.Keychain.
func (c Configured) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return c.ResolveContext(context.Background(), target)
}

// ResolveContext implements authn.ContextKeychain.
func (c Configured) ResolveContext(ctx context.Context, target authn.Resource) (authn.Authenticator, error) {
	user, password, ok, err := c.Lookup(target.RegistryStr())
	if err != nil {
		return nil, err
	}
	if ok {
		return authn.FromConfig(authn.AuthConfig{Username: user, Password: password}), nil
	}
	if next, ok := c.Next.(authn.ContextKeychain); ok {
		return next.ResolveContext(ctx, target)
	}
	return c.Next.Resolve(target)
}
