//go:build interop

package regtest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-oci/ferry/internal/regtest"
)

const (
	user = "alice"
	pass = "s3cret"
)

// registries starts one registry of each implementation, with or without
// auth, so a test can run against both.
func registries(t *testing.T, users map[string]string) map[string]string {
	return map[string]string{
		"distribution": regtest.Distribution(t, regtest.DistributionOptions{Users: users}),
		"ggcr":         regtest.GGCR(t, users),
	}
}

func TestPushRandomAnonymous(t *testing.T) {
	t.Parallel()
	for impl, host := range registries(t, nil) {
		t.Run(impl, func(t *testing.T) {
			ref := host + "/team/app:v1"
			want := regtest.PushRandom(t, ref, 3, 2048, "", "")

			if got := status(t, "http://"+host+"/v2/", "", ""); got != http.StatusOK {
				t.Errorf("GET /v2/ = %d, want 200", got)
			}
			img, err := remote.Image(mustRef(t, ref), remote.WithContext(t.Context()))
			if err != nil {
				t.Fatalf("pulling %s: %v", ref, err)
			}
			if got, _ := img.Digest(); got.String() != want {
				t.Errorf("pulled digest %s, PushRandom returned %s", got, want)
			}
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			if len(layers) != 3 {
				t.Errorf("image has %d layers, want 3", len(layers))
			}
			for i, l := range layers {
				// Each layer must arrive whole: read it and check its digest.
				rc, err := l.Compressed()
				if err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
				got, _, err := v1.SHA256(rc)
				rc.Close()
				if err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
				if want, _ := l.Digest(); got != want {
					t.Errorf("layer %d: content hashes to %s, descriptor says %s", i, got, want)
				}
			}
		})
	}
}

func TestPushRandomWithAuth(t *testing.T) {
	t.Parallel()
	for impl, host := range registries(t, map[string]string{user: pass, "bob": "other"}) {
		t.Run(impl, func(t *testing.T) {
			ref := host + "/team/app:v1"
			want := regtest.PushRandom(t, ref, 1, 512, user, pass)

			desc, err := remote.Head(mustRef(t, ref), remote.WithContext(t.Context()),
				remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
			if err != nil {
				t.Fatalf("HEAD %s: %v", ref, err)
			}
			if desc.Digest.String() != want {
				t.Errorf("HEAD digest %s, PushRandom returned %s", desc.Digest, want)
			}

			v2 := "http://" + host + "/v2/"
			if got := status(t, v2, user, pass); got != http.StatusOK {
				t.Errorf("GET /v2/ as %s = %d, want 200", user, got)
			}
			for _, c := range []struct{ name, user, pass string }{
				{"anonymous", "", ""},
				{"wrong password", user, "wrong"},
				{"another user's password", user, "other"},
				{"unknown user", "mallory", pass},
			} {
				if got := status(t, v2, c.user, c.pass); got != http.StatusUnauthorized {
					t.Errorf("GET /v2/ %s = %d, want 401", c.name, got)
				}
			}

			resp := get(t, v2, "", "")
			if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `realm="ferry-test"`) {
				t.Errorf("WWW-Authenticate = %q, want realm=\"ferry-test\"", got)
			}

			_, err = remote.Head(mustRef(t, ref), remote.WithContext(t.Context()),
				remote.WithAuth(&authn.Basic{Username: user, Password: "wrong"}))
			var terr *transport.Error
			if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
				t.Errorf("HEAD with a wrong password: err = %v, want a 401 transport.Error", err)
			}
		})
	}
}

func TestPushRandomIndex(t *testing.T) {
	t.Parallel()
	platforms := []string{"linux/amd64", "linux/arm64/v8", "linux/arm/v7"}
	for impl, host := range registries(t, map[string]string{user: pass}) {
		t.Run(impl, func(t *testing.T) {
			ref := host + "/multi:latest"
			want := regtest.PushRandomIndex(t, ref, platforms, user, pass)

			opts := []remote.Option{remote.WithContext(t.Context()),
				remote.WithAuth(&authn.Basic{Username: user, Password: pass})}
			idx, err := remote.Index(mustRef(t, ref), opts...)
			if err != nil {
				t.Fatalf("pulling index %s: %v", ref, err)
			}
			if got, _ := idx.Digest(); got.String() != want {
				t.Errorf("pulled digest %s, PushRandomIndex returned %s", got, want)
			}
			if mt, _ := idx.MediaType(); mt != types.OCIImageIndex {
				t.Errorf("index media type %s, want %s", mt, types.OCIImageIndex)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if len(im.Manifests) != len(platforms) {
				t.Fatalf("index has %d manifests, want %d", len(im.Manifests), len(platforms))
			}
			for i, desc := range im.Manifests {
				if desc.Platform == nil || desc.Platform.String() != platforms[i] {
					t.Errorf("manifest %d platform = %v, want %s", i, desc.Platform, platforms[i])
				}
				img, err := idx.Image(desc.Digest)
				if err != nil {
					t.Fatalf("manifest %d: %v", i, err)
				}
				cfg, err := img.ConfigFile()
				if err != nil {
					t.Fatalf("manifest %d config: %v", i, err)
				}
				if got := cfg.Platform().String(); got != platforms[i] {
					t.Errorf("manifest %d config platform = %s, want %s", i, got, platforms[i])
				}
			}
		})
	}
}

func TestDistributionDeletesEnabled(t *testing.T) {
	t.Parallel()
	host := regtest.Distribution(t, regtest.DistributionOptions{})
	digest := regtest.PushRandom(t, host+"/gone:v1", 1, 256, "", "")

	ref := mustRef(t, host+"/gone@"+digest)
	if err := remote.Delete(ref, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("deleting %s: %v", ref, err)
	}
	_, err := remote.Head(ref, remote.WithContext(t.Context()))
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD after delete: err = %v, want a 404 transport.Error", err)
	}
}

// Registries started at the same time must not fight over a port.
func TestDistributionParallelStarts(t *testing.T) {
	t.Parallel()
	hosts := make([]string, 4)
	var wg sync.WaitGroup
	for i := range hosts {
		// Distribution fails the test from this goroutine if it cannot
		// start; that ends only this goroutine, and the test reports it.
		wg.Go(func() { hosts[i] = regtest.Distribution(t, regtest.DistributionOptions{}) })
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if seen[h] {
			t.Errorf("two registries on %s", h)
		}
		seen[h] = true
		if got := status(t, "http://"+h+"/v2/", "", ""); got != http.StatusOK {
			t.Errorf("GET %s/v2/ = %d, want 200", h, got)
		}
	}
}

func TestDistributionTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSignedCert(t)
	host := regtest.Distribution(t, regtest.DistributionOptions{TLSCertFile: certFile, TLSKeyFile: keyFile})

	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := trusting.Get("https://" + host + "/v2/")
	if err != nil {
		t.Fatalf("GET /v2/ over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/ over TLS = %d, want 200", resp.StatusCode)
	}

	_, err = http.Get("https://" + host + "/v2/")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("GET /v2/ without trusting the certificate: err = %v, want x509.UnknownAuthorityError", err)
	}
}

func TestDistributionMissingBinaryFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	rec := run(t, func(tb testing.TB) { regtest.Distribution(tb, regtest.DistributionOptions{}) })
	if rec.skipped {
		t.Fatal("Distribution skipped the test; a missing docker-registry must fail it")
	}
	if !rec.failed || !strings.Contains(rec.msg, "scripts/install-test-deps.sh") {
		t.Errorf("Distribution with no docker-registry: failed=%v, message %q; want a failure naming scripts/install-test-deps.sh", rec.failed, rec.msg)
	}
}

func TestPushRandomRefusesRemoteRegistries(t *testing.T) {
	t.Parallel()
	for _, ref := range []string{"alpine:3.20", "registry.example.com/app:v1", "192.168.1.10:5000/app:v1"} {
		rec := run(t, func(tb testing.TB) { regtest.PushRandom(tb, ref, 1, 16, "", "") })
		if !rec.failed || !strings.Contains(rec.msg, "not on the loopback interface") {
			t.Errorf("PushRandom(%q): failed=%v, message %q; want a refusal", ref, rec.failed, rec.msg)
		}
	}
}

// recorder is a testing.TB that records a failure or skip instead of
// reporting it, so tests can check how a helper fails.
type recorder struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (r *recorder) Error(args ...any) {
	r.failed = true
	r.msg += fmt.Sprint(args...)
}

func (r *recorder) Errorf(format string, args ...any) {
	r.failed = true
	r.msg += fmt.Sprintf(format, args...)
}

func (r *recorder) Fatal(args ...any) {
	r.Error(args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fail()                { r.failed = true }
func (r *recorder) Failed() bool         { return r.failed }
func (r *recorder) FailNow()             { r.failed = true; runtime.Goexit() }
func (r *recorder) Skip(...any)          { r.SkipNow() }
func (r *recorder) Skipf(string, ...any) { r.SkipNow() }
func (r *recorder) SkipNow()             { r.skipped = true; runtime.Goexit() }
func (r *recorder) Skipped() bool        { return r.skipped }

// run calls fn with a recorder in its own goroutine, as the testing package
// runs a test, and returns what it recorded.
func run(t *testing.T, fn func(testing.TB)) *recorder {
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(rec)
	}()
	<-done
	return rec
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func get(t *testing.T, url, user, pass string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp
}

func status(t *testing.T, url, user, pass string) int {
	t.Helper()
	return get(t, url, user, pass).StatusCode
}

// selfSignedCert writes a certificate and key for 127.0.0.1 and returns
// their paths and a pool that trusts the certificate.
func selfSignedCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ferry test registry"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
