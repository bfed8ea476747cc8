package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Verify checks cred against the registry reg, as `docker login` does: it
// pings the registry's /v2/ endpoint, performs the authentication handshake
// the registry asks for (basic, or bearer with a token from its token
// server; no scopes are requested) and GETs /v2/ with the credentials.
// https is tried first, and http too when reg is insecure or on loopback,
// as go-containerregistry does. rt carries the requests (TLS settings,
// proxies, retries are its business).
//
// A registry that rejects the credentials (401 or 403, from itself or its
// token server) gives an error wrapping ErrUnauthorized that names the host
// and the user. A registry that asks for no authentication accepts any
// credentials. No error message contains the password.
//
// See https://distribution.github.io/distribution/spec/auth/token/ and
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#determining-support.
func Verify(ctx context.Context, reg name.Registry, cred authn.AuthConfig, rt http.RoundTripper) error {
	host := reg.RegistryStr()
	secrets := []string{cred.Password, cred.Auth, cred.IdentityToken, cred.RegistryToken}
	if cred.Username != "" || cred.Password != "" {
		secrets = append(secrets, base64.StdEncoding.EncodeToString([]byte(cred.Username+":"+cred.Password)))
	}
	fail := func(err error) error {
		var terr *transport.Error
		if errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden) {
			return unauthorized(host, cred.Username)
		}
		return redact(fmt.Errorf("logging in to %s: %w", host, err), secrets...)
	}
	if rt == nil {
		rt = http.DefaultTransport
	}
	if _, ok := rt.(*transport.Wrapper); ok {
		// NewWithContext would take a Wrapper as already authenticated and
		// skip the handshake this function exists to perform.
		rt = opaque{rt}
	}
	t, err := transport.NewWithContext(ctx, reg, authn.FromConfig(cred), rt, nil)
	if err != nil {
		return fail(err)
	}
	// The transport rewrites the scheme to the one the ping found working.
	u := fmt.Sprintf("%s://%s/v2/", reg.Scheme(), host)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fail(err)
	}
	resp, err := (&http.Client{Transport: t}).Do(req)
	if err != nil {
		return fail(err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
	}()
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return unauthorized(host, cred.Username)
	default:
		return fail(transport.CheckError(resp, http.StatusOK))
	}
}

// unauthorized is the error for credentials a registry refused.
func unauthorized(host, user string) error {
	return fmt.Errorf("logging in to %s: %w for user %q: check the user name and password (or token)", host, ErrUnauthorized, user)
}

// opaque hides the type of a RoundTripper.
type opaque struct{ http.RoundTripper }

// redactedError is an error whose text has had secrets removed; the original
// error stays reachable for errors.Is and errors.As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redact returns err with every non-empty secret in its text replaced.
func redact(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, "[REDACTED]")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
