package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tlsServer starts a TLS test server and counts the connections made to it
// and the requests its handler saw.
func tlsServer(t *testing.T, cfg *tls.Config, h http.HandlerFunc) (srv *httptest.Server, conns, reqs *atomic.Int32) {
	t.Helper()
	conns, reqs = new(atomic.Int32), new(atomic.Int32)
	srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		if h != nil {
			h(w, r)
		}
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, conns, reqs
}

// writeFile writes data to name in a temporary directory.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestTLSVerifiedByDefault(t *testing.T) {
	t.Parallel()
	srv, conns, reqs := tlsServer(t, nil, nil)
	rt := newRT(t, Options{Host: hostOf(srv)}) // default retries: 5 attempts
	start := time.Now()
	_, _, err := get(t, t.Context(), rt, srv.URL+"/v2/app/tags/list")
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if !errors.As(err, &unknown) && !errors.As(err, &verify) {
		t.Fatalf("got %v, want a certificate verification error", err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections were made, want 1: a certificate error is not retried", n)
	}
	if reqs.Load() != 0 {
		t.Errorf("the server handled %d requests", reqs.Load())
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("failing took %v", elapsed)
	}
}

func TestTLSTrust(t *testing.T) {
	t.Parallel()
	srv, _, _ := tlsServer(t, nil, nil)
	caFile := writeFile(t, "ca.pem", certPEM(srv.Certificate().Raw))
	for name, opts := range map[string]Options{
		"ca_file":         {Config: RegistryConfig{CAFile: caFile}},
		"--insecure":      {Insecure: true},
		"config insecure": {Config: RegistryConfig{Insecure: true}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			opts.Host = hostOf(srv)
			rt := newRT(t, opts)
			resp, _, err := get(t, t.Context(), rt, srv.URL+"/v2/")
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("got %v, %v; want 200", resp, err)
			}
		})
	}
}

func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	garbage := writeFile(t, "garbage.pem", []byte("not a certificate\n"))
	const host = "registry.example.com"
	for _, tc := range []struct {
		name     string
		config   RegistryConfig
		wantKey  string
		wantFile string
		wantIs   error
	}{
		{"missing CA", RegistryConfig{CAFile: missing}, "ca_file", missing, fs.ErrNotExist},
		{"CA without PEM", RegistryConfig{CAFile: garbage}, "ca_file", garbage, nil},
		{"missing cert", RegistryConfig{CertFile: missing, KeyFile: garbage}, "cert_file", missing, fs.ErrNotExist},
		{"bad pair", RegistryConfig{CertFile: garbage, KeyFile: garbage}, "cert_file", garbage, nil},
		{"cert without key", RegistryConfig{CertFile: garbage}, "key_file", "", nil},
		{"key without cert", RegistryConfig{KeyFile: garbage}, "cert_file", "", nil},
	} {
		_, err := New(Options{Host: host, Config: tc.config})
		var ce *ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, ErrTLSConfig) {
			t.Errorf("%s: got %v, want a *ConfigError", tc.name, err)
			continue
		}
		msg := err.Error()
		for _, want := range []string{host, tc.wantKey, tc.wantFile, `[registry."registry.example.com"]`} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: error %q does not name %q", tc.name, msg, want)
			}
		}
		if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
			t.Errorf("%s: error %v does not wrap %v", tc.name, err, tc.wantIs)
		}
	}
}

// testCA issues certificates for the mTLS test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ferry test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// issue returns a PEM certificate and key for a server on loopback or for
// a client called cn.
func (ca *testCA) issue(t *testing.T, cn string, server bool) (certPEMBytes, keyPEMBytes []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM(der), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	serverCert, serverKey := ca.issue(t, "registry", true)
	pair, err := tls.X509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey := ca.issue(t, "ferry-client", false)
	caFile := writeFile(t, "ca.pem", certPEM(ca.cert.Raw))
	certFile := writeFile(t, "client.pem", clientCert)
	keyFile := writeFile(t, "client-key.pem", clientKey)

	// Blob storage on another host (another address, so another site)
	// asks for a client certificate but must not get the registry's.
	var storageCerts atomic.Int32
	storage := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storageCerts.Store(int32(len(r.TLS.PeerCertificates)))
		io.WriteString(w, "blob")
	}))
	storage.Listener.Close()
	storage.Listener, err = net.Listen("tcp", "[::1]:0")
	haveIPv6 := err == nil
	if haveIPv6 {
		storage.Config.ErrorLog = log.New(io.Discard, "", 0)
		storage.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert}
		storage.StartTLS()
		t.Cleanup(storage.Close)
	}

	var clientCN atomic.Value
	srv, conns, reqs := tlsServer(t, &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, func(w http.ResponseWriter, r *http.Request) {
		clientCN.Store(r.TLS.PeerCertificates[0].Subject.CommonName)
		if r.URL.Path == "/v2/blob" && haveIPv6 {
			http.Redirect(w, r, storage.URL+"/blob", http.StatusTemporaryRedirect)
		}
	})

	rt := newRT(t, Options{Host: hostOf(srv), Config: RegistryConfig{CAFile: caFile, CertFile: certFile, KeyFile: keyFile}})
	resp, _, err := get(t, t.Context(), rt, srv.URL+"/v2/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("with the client certificate: %v, %v; want 200", resp, err)
	}
	if cn, _ := clientCN.Load().(string); cn != "ferry-client" {
		t.Errorf("server saw client certificate %q, want ferry-client", cn)
	}
	if haveIPv6 {
		resp, body, err := get(t, t.Context(), rt, srv.URL+"/v2/blob")
		if err != nil || body != "blob" {
			t.Fatalf("redirect to storage: %v, %v", resp, err)
		}
		if n := storageCerts.Load(); n != 0 {
			t.Errorf("storage on another host received %d client certificates", n)
		}
	}

	before, handled := conns.Load(), reqs.Load()
	rt = newRT(t, Options{Host: hostOf(srv), Config: RegistryConfig{CAFile: caFile}})
	if _, _, err := get(t, t.Context(), rt, srv.URL+"/v2/app/tags/list"); err == nil {
		t.Error("without the client certificate the request succeeded")
	}
	if n := conns.Load() - before; n != 1 || reqs.Load() != handled {
		t.Errorf("without the client certificate: %d connections, %d requests handled; want 1 and none (a TLS failure is not retried)", n, reqs.Load()-handled)
	}
}
