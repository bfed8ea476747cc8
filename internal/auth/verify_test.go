package auth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
)

const (
	testUser     = "alice"
	testPassword = "s3cret"
	testToken    = "tok-7f3a"
)

// newRegistry returns go-containerregistry's in-memory registry, silent.
func newRegistry() http.Handler {
	return registry.New(registry.Logger(log.New(io.Discard, "", 0)))
}

// basicAuthRegistry serves a registry that wants HTTP basic auth as
// alice/s3cret.
func basicAuthRegistry(t *testing.T) *httptest.Server {
	t.Helper()
	next := newRegistry()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != testUser || p != testPassword {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// bearerRegistry serves a registry that wants a bearer token, which its
// /token endpoint issues for basic auth as alice/s3cret. tokens counts the
// tokens issued.
func bearerRegistry(t *testing.T, tokens *atomic.Int32) *httptest.Server {
	t.Helper()
	next := newRegistry()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			if u, p, ok := r.BasicAuth(); !ok || u != testUser || p != testPassword {
				http.Error(w, `{"details":"incorrect username or password"}`, http.StatusUnauthorized)
				return
			}
			tokens.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{"token": testToken})
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func registryOf(t *testing.T, srv *httptest.Server) name.Registry {
	t.Helper()
	reg, err := name.NewRegistry(strings.TrimPrefix(srv.URL, "http://"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// checkRejected asserts err reports rejected credentials for user at reg,
// without the password.
func checkRejected(t *testing.T, err error, reg name.Registry, user, password string) {
	t.Helper()
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Verify with wrong credentials: %v, want ErrUnauthorized", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, reg.RegistryStr()) {
		t.Errorf("error %q does not name the host %s", msg, reg.RegistryStr())
	}
	if !strings.Contains(msg, user) {
		t.Errorf("error %q does not name the user %s", msg, user)
	}
	if strings.Contains(msg, password) {
		t.Errorf("error %q contains the password", msg)
	}
}

func TestVerifyBasic(t *testing.T) {
	srv := basicAuthRegistry(t)
	reg := registryOf(t, srv)
	ctx := context.Background()

	if err := Verify(ctx, reg, authn.AuthConfig{Username: testUser, Password: testPassword}, http.DefaultTransport); err != nil {
		t.Errorf("Verify with the right credentials: %v", err)
	}
	checkRejected(t, Verify(ctx, reg, authn.AuthConfig{Username: testUser, Password: "wr0ngpass"}, http.DefaultTransport), reg, testUser, "wr0ngpass")
	checkRejected(t, Verify(ctx, reg, authn.AuthConfig{Username: "mallory", Password: testPassword}, http.DefaultTransport), reg, "mallory", testPassword)
}

func TestVerifyBearer(t *testing.T) {
	var tokens atomic.Int32
	srv := bearerRegistry(t, &tokens)
	reg := registryOf(t, srv)
	ctx := context.Background()

	if err := Verify(ctx, reg, authn.AuthConfig{Username: testUser, Password: testPassword}, http.DefaultTransport); err != nil {
		t.Errorf("Verify with the right credentials: %v", err)
	}
	if n := tokens.Load(); n == 0 {
		t.Error("Verify succeeded without getting a token from the token server")
	}
	checkRejected(t, Verify(ctx, reg, authn.AuthConfig{Username: testUser, Password: "wr0ngpass"}, http.DefaultTransport), reg, testUser, "wr0ngpass")
}

// A registry that asks for no authentication accepts any credentials, as
// with docker login.
func TestVerifyOpenRegistry(t *testing.T) {
	srv := httptest.NewServer(newRegistry())
	t.Cleanup(srv.Close)
	if err := Verify(context.Background(), registryOf(t, srv), authn.AuthConfig{Username: "any", Password: "thing"}, http.DefaultTransport); err != nil {
		t.Errorf("Verify against an open registry: %v", err)
	}
}

// A registry that is down is not reported as refusing the credentials.
func TestVerifyUnreachable(t *testing.T) {
	srv := httptest.NewServer(newRegistry())
	reg := registryOf(t, srv)
	srv.Close()
	err := Verify(context.Background(), reg, authn.AuthConfig{Username: testUser, Password: testPassword}, http.DefaultTransport)
	if err == nil {
		t.Fatal("Verify against a closed server: no error")
	}
	if errors.Is(err, ErrUnauthorized) {
		t.Errorf("Verify against a closed server: %v, should not be ErrUnauthorized", err)
	}
	if !strings.Contains(err.Error(), reg.RegistryStr()) {
		t.Errorf("error %q does not name the host", err)
	}
	if strings.Contains(err.Error(), testPassword) {
		t.Errorf("error %q contains the password", err)
	}
}

// A registry failure other than 401/403 is an ordinary error whose text never
// includes the password, even when the server echoes it.
func TestVerifyServerErrorRedactsPassword(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, p, _ := r.BasicAuth()
		if p == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		http.Error(w, "internal error handling password "+p, http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	reg := registryOf(t, srv)
	err := Verify(context.Background(), reg, authn.AuthConfig{Username: testUser, Password: testPassword}, http.DefaultTransport)
	if err == nil || errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Verify against a failing registry: %v, want an error other than ErrUnauthorized", err)
	}
	if strings.Contains(err.Error(), testPassword) {
		t.Errorf("error %q contains the password", err)
	}
	if !strings.Contains(err.Error(), "500") {
		t.Errorf("error %q does not give the status", err)
	}
}

func TestVerifyCancelled(t *testing.T) {
	srv := basicAuthRegistry(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Verify(ctx, registryOf(t, srv), authn.AuthConfig{Username: testUser, Password: testPassword}, http.DefaultTransport)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with a cancelled context: %v, want context.Canceled", err)
	}
}
