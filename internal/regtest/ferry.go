package regtest

import (
	"crypto/subtle"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ferry-oci/ferry/internal/store"
	"github.com/ferry-oci/ferry/registry"
)

// Ferry starts ferry's own registry (package registry, what ferry serve
// runs) in this process on 127.0.0.1, over a store in a temporary
// directory, and returns its "host:port". With users set, every request
// needs HTTP basic auth with one of them. The server is closed in
// t.Cleanup.
func Ferry(t testing.TB, users map[string]string) string {
	t.Helper()
	s, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatalf("regtest: opening a store: %v", err)
	}
	opts := registry.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if len(users) > 0 {
		opts.Auth = userMap(users)
	}
	h, err := registry.New(s, opts)
	if err != nil {
		t.Fatalf("regtest: starting ferry's registry: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		h.Close()
	})
	return strings.TrimPrefix(srv.URL, "http://")
}

// userMap authenticates against a fixed map of users and passwords.
type userMap map[string]string

func (m userMap) Authenticate(user, pass string) bool {
	want, ok := m[user]
	return ok && subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1
}
