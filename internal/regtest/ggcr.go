package regtest

import (
	"crypto/subtle"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// GGCR starts go-containerregistry's in-memory registry (pkg/registry, with
// the OCI 1.1 referrers API on) in this process on 127.0.0.1 and returns its
// "host:port". It is an implementation independent of distribution's, so
// tests can run against both. With users set, every request needs HTTP basic
// auth with one of them; others get 401 with
// `WWW-Authenticate: Basic realm="ferry-test"`. The server is closed in
// t.Cleanup.
func GGCR(t testing.TB, users map[string]string) string {
	t.Helper()
	var h http.Handler = registry.New(
		registry.Logger(log.New(io.Discard, "", 0)),
		registry.WithReferrersSupport(true),
	)
	if len(users) > 0 {
		h = basicAuth(h, users)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// basicAuth lets through only requests with a user and password from users.
func basicAuth(next http.Handler, users map[string]string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		want, known := users[user]
		if !ok || !known || subtle.ConstantTimeCompare([]byte(pass), []byte(want)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="`+Realm+`"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`+"\n")
			return
		}
		next.ServeHTTP(w, r)
	})
}
