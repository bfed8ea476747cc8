package transport

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrtransport "github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ping is go-containerregistry's ping of host through rt.
func ping(t *testing.T, rt http.RoundTripper, host string) (*ggcrtransport.Challenge, error) {
	t.Helper()
	reg, err := name.NewRegistry(host)
	if err != nil {
		t.Fatal(err)
	}
	return ggcrtransport.Ping(t.Context(), reg, rt)
}

// TestPingRacePlainRegistry: the ping of a plain-http registry on loopback
// is answered by the plain request sent along with the https one, and the
// registry is reached over http, once per ping.
func TestPingRacePlainRegistry(t *testing.T) {
	t.Parallel()
	srv, rec := server(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+"http://"+r.Host+`/token",service="test"`)
		w.WriteHeader(http.StatusUnauthorized)
	})
	var log debugLines
	rt := newRT(t, Options{Host: hostOf(srv), Debug: log.add})
	for i := 1; i <= 2; i++ {
		c, err := ping(t, rt, hostOf(srv))
		if err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
		if !c.Insecure || !strings.EqualFold(c.Scheme, "bearer") || c.Parameters["realm"] != "http://"+hostOf(srv)+"/token" {
			t.Errorf("ping %d: challenge %+v, want the registry's Bearer challenge over http", i, c)
		}
		if n := rec.count(); n != i {
			t.Errorf("after ping %d the registry handled %d requests, want %d", i, n, i)
		}
	}
	if text := log.text(); !strings.Contains(text, "answered by the plain http ping raced with https") {
		t.Errorf("the http ping was sent again rather than taken from the race; debug log:\n%s", text)
	}
}

// TestPingRaceTLSRegistry: a TLS registry on loopback is pinged over
// https even though plain http was tried alongside, and later pings of it
// ask https alone.
func TestPingRaceTLSRegistry(t *testing.T) {
	t.Parallel()
	srv, conns, reqs := tlsServer(t, nil, nil)
	caFile := writeFile(t, "ca.pem", certPEM(srv.Certificate().Raw))
	rt := newRT(t, Options{Host: hostOf(srv), Config: RegistryConfig{CAFile: caFile}})
	c, err := ping(t, rt, hostOf(srv))
	if err != nil || c.Insecure {
		t.Fatalf("ping: %+v, %v; want the registry over https", c, err)
	}
	first := conns.Load()
	if c, err := ping(t, rt, hostOf(srv)); err != nil || c.Insecure {
		t.Fatalf("second ping: %+v, %v; want the registry over https", c, err)
	}
	if n := conns.Load() - first; n != 0 {
		t.Errorf("the second ping opened %d connections, want none: https alone, on the kept connection", n)
	}
	if n := reqs.Load(); n != 2 {
		t.Errorf("the registry handled %d requests, want the 2 https pings", n)
	}
}

// TestPingUntrustedTLS is ROBUSTNESS row 14 on loopback: a registry whose
// certificate does not verify is not used over plain http either, and
// the error says how to trust it.
func TestPingUntrustedTLS(t *testing.T) {
	t.Parallel()
	srv, _, reqs := tlsServer(t, nil, nil)
	rt := newRT(t, Options{Host: hostOf(srv)})
	_, err := ping(t, rt, hostOf(srv))
	if err == nil {
		t.Fatal("ping of a registry with an untrusted certificate succeeded")
	}
	for _, want := range []string{hostOf(srv) + " speaks TLS with a certificate ferry does not trust", "ca_file", "--insecure"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if n := reqs.Load(); n != 0 {
		t.Errorf("the registry handled %d requests", n)
	}
}
