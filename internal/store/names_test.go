package store

import (
	"strings"
	"testing"
)

func TestValidRepositoryName(t *testing.T) {
	longest := strings.Repeat("a", 127) + "/" + strings.Repeat("b", 127)
	for _, name := range []string{"app", "library/nginx", "a.b_c__d-e--f/g", longest} {
		if !ValidRepositoryName(name) {
			t.Errorf("%q refused", name)
		}
	}
	for _, name := range []string{"", "App", "/app", "app/", "a//b", "a/../b", "a/%2e%2e/b", "-a", "a-", "a___b", "a b", longest + "c"} {
		if ValidRepositoryName(name) {
			t.Errorf("%q accepted", name)
		}
	}
}
