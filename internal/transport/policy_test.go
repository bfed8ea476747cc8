package transport

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrtransport "github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

const blobPath = "/v2/app/blobs/sha256:1111111111111111111111111111111111111111111111111111111111111111"

// wantPolicyError fails the test unless err is a *PolicyError wrapping
// sentinel for host.
func wantPolicyError(t *testing.T, err error, sentinel error, host string) *PolicyError {
	t.Helper()
	var pe *PolicyError
	if !errors.As(err, &pe) || !errors.Is(err, sentinel) {
		t.Fatalf("got error %v, want a *PolicyError wrapping %v", err, sentinel)
	}
	if pe.Host != host || !strings.Contains(err.Error(), host) {
		t.Errorf("error %q names host %q, want %q", err, pe.Host, host)
	}
	return pe
}

// basicRegistry is a registry that demands HTTP basic auth for alice and
// redirects blob GETs to location.
func basicRegistry(t *testing.T, location string) (srvURL string, rec *recorder) {
	srv, rec := server(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/v2/app/blobs/") {
			http.Redirect(w, r, location, http.StatusTemporaryRedirect)
			return
		}
		io.WriteString(w, "{}")
	})
	return srv.URL, rec
}

// TestRedirectDropsCredentials is ROBUSTNESS row 9 with go-containerregistry's
// real auth transport on top: a blob GET redirected to storage on another
// host (here another port of 127.0.0.1, where net/http itself would forward
// the caller's headers) reaches it without Authorization or Cookie.
func TestRedirectDropsCredentials(t *testing.T) {
	t.Parallel()
	storage, storageRec := server(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {
		io.WriteString(w, "layer bytes")
	})
	regURL, regRec := basicRegistry(t, storage.URL+"/bucket/blob?X-Amz-Signature=abc")
	host := strings.TrimPrefix(regURL, "http://")

	rt := newRT(t, Options{Host: host, Retry: fastRetry()})
	reg, err := name.NewRegistry(host)
	if err != nil {
		t.Fatal(err)
	}
	auth := &authn.Basic{Username: "alice", Password: "s3cret"}
	art, err := ggcrtransport.NewWithContext(t.Context(), reg, auth, rt, []string{"repository:app:pull"})
	if err != nil {
		t.Fatalf("auth handshake: %v", err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, regURL+blobPath, nil)
	// Headers the caller sets are copied by net/http to a redirect on the
	// same host name, whatever the port; go-containerregistry's own
	// Authorization (Basic, replacing this one for the registry) is not.
	req.Header.Set("Authorization", "Bearer registry-token")
	req.Header.Set("Cookie", "session=registry-only")
	resp, err := (&http.Client{Transport: art}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "layer bytes" {
		t.Fatalf("got %d %q, want the blob from storage", resp.StatusCode, body)
	}
	if last := regRec.get(regRec.count() - 1); last.Path != blobPath || last.Header.Get("Authorization") == "" {
		t.Fatalf("registry saw %s without credentials; the test does not exercise them", last.Path)
	}
	if storageRec.count() != 1 {
		t.Fatalf("storage saw %d requests, want 1", storageRec.count())
	}
	got := storageRec.get(0).Header
	if a := got.Get("Authorization"); a != "" {
		t.Errorf("storage on another host received Authorization %q", a)
	}
	if c := got.Get("Cookie"); c != "" {
		t.Errorf("storage on another host received Cookie %q", c)
	}
}

// TestTokenRealmCredentials: go-containerregistry sends the registry's
// basic credentials to whatever realm the registry names. The policy lets
// them through to a token server on the registry's site (as
// registry-1.docker.io → auth.docker.io) and strips them for any other.
func TestTokenRealmCredentials(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		realmHost string
		wantAuth  bool
	}{
		{"auth.example.com", true},
		{"auth.attacker.net", false},
	} {
		t.Run(tc.realmHost, func(t *testing.T) {
			t.Parallel()
			fn := newFakeNet()
			regSrv, _ := server(t, true, func(w http.ResponseWriter, r *http.Request, _ int) {
				if r.Header.Get("Authorization") != "Bearer good-token" {
					w.Header().Set("WWW-Authenticate", `Bearer realm="https://`+tc.realmHost+`/token",service="registry.example.com"`)
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				io.WriteString(w, "{}")
			})
			tokenSrv, tokenRec := server(t, true, func(w http.ResponseWriter, r *http.Request, _ int) {
				json.NewEncoder(w).Encode(map[string]string{"token": "good-token"})
			})
			fn.add("registry.example.com", regSrv)
			fn.add(tc.realmHost, tokenSrv)

			rt := newRT(t, Options{Host: "registry.example.com", Base: fn, Retry: fastRetry()})
			reg, _ := name.NewRegistry("registry.example.com")
			auth := &authn.Basic{Username: "alice", Password: "s3cret"}
			art, err := ggcrtransport.NewWithContext(t.Context(), reg, auth, rt, []string{"repository:app:pull"})
			if err != nil {
				t.Fatalf("auth handshake: %v", err)
			}
			resp, _, err := get(t, t.Context(), art, "https://registry.example.com/v2/")
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /v2/ with the token: %v %v", resp, err)
			}
			if tokenRec.count() == 0 {
				t.Fatal("the token server was never asked")
			}
			user, pass, ok := (&http.Request{Header: tokenRec.get(0).Header}).BasicAuth()
			if tc.wantAuth && (!ok || user != "alice" || pass != "s3cret") {
				t.Errorf("same-site token server got no credentials (Authorization %q)", tokenRec.get(0).Header.Get("Authorization"))
			}
			if !tc.wantAuth && tokenRec.get(0).Header.Get("Authorization") != "" {
				t.Errorf("token server %s on another site received Authorization %q", tc.realmHost, tokenRec.get(0).Header.Get("Authorization"))
			}
		})
	}
}

// TestRefusedTargets: requests a registry can make ferry send (by a
// redirect, a token realm or an upload Location) that must never leave the
// machine (ROBUSTNESS rows 10, 11). The fake network records anything the
// policy let through, and dials nothing.
func TestRefusedTargets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, method, url string
		contentType       string
		want              error
	}{
		{"metadata IP", "GET", "http://169.254.169.254/latest/meta-data/iam/security-credentials/", "", ErrUnsafeTarget},
		{"metadata IP over https", "GET", "https://169.254.169.254/latest/api/token", "", ErrUnsafeTarget},
		{"metadata IP in hex", "GET", "http://0xa9fea9fe/latest/meta-data/", "", ErrUnsafeTarget},
		{"metadata IP as IPv4-mapped IPv6", "GET", "http://[::ffff:169.254.169.254]/latest/meta-data/", "", ErrUnsafeTarget},
		{"link-local IPv6", "GET", "https://[fe80::1%25eth0]:8080/x", "", ErrUnsafeTarget},
		{"AWS IPv6 metadata", "GET", "http://[fd00:ec2::254]/latest/meta-data/", "", ErrUnsafeTarget},
		{"GCE metadata name", "GET", "http://metadata.google.internal/computeMetadata/v1/", "", ErrUnsafeTarget},
		{"GCE metadata short name", "GET", "http://Metadata./computeMetadata/v1/", "", ErrUnsafeTarget},
		{"loopback from a remote registry", "GET", "http://127.0.0.1:2375/containers/json", "", ErrUnsafeTarget},
		{"localhost from a remote registry", "GET", "https://localhost:8443/admin", "", ErrUnsafeTarget},
		{"unspecified address", "GET", "https://0.0.0.0:8443/admin", "", ErrUnsafeTarget},
		{"a .localhost name from a remote registry", "GET", "https://admin.localhost/", "", ErrUnsafeTarget},
		{"file scheme", "GET", "file:///etc/passwd", "", ErrUnsafeTarget},
		{"https registry downgraded to a http realm", "GET", "http://auth.example.com/token?service=x", "", ErrInsecureScheme},
		{"http redirect target", "GET", "http://cdn.example.net/blob", "", ErrInsecureScheme},
		{"upload location elsewhere", "PUT", "https://uploads.attacker.net/upload/1?digest=sha256:abc", "application/octet-stream", ErrCrossHostWrite},
		{"upload location on the same site", "PATCH", "https://uploads.example.com/upload/1", "application/octet-stream", ErrCrossHostWrite},
		{"upload start elsewhere", "POST", "https://registry.attacker.net/v2/app/blobs/uploads/", "", ErrCrossHostWrite},
		{"OAuth2 token POST to another site", "POST", "https://auth.attacker.net/token", "application/x-www-form-urlencoded", ErrCrossHostWrite},
		{"DELETE elsewhere", "DELETE", "https://registry.attacker.net/v2/app/manifests/sha256:abc", "", ErrCrossHostWrite},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fn := newFakeNet()
			rt := newRT(t, Options{Host: "registry.example.com", Base: fn, Retry: fastRetry()})
			var body io.Reader
			if tc.method != "GET" {
				body = strings.NewReader("grant_type=refresh_token&refresh_token=secret")
			}
			req, err := http.NewRequestWithContext(t.Context(), tc.method, tc.url, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer registry-token")
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			_, err = rt.RoundTrip(req)
			host := req.URL.Host
			if host == "" {
				host = redactURL(req.URL)
			}
			wantPolicyError(t, err, tc.want, host)
			if got := fn.all(); len(got) != 0 {
				t.Errorf("requests got past the policy: %q", got)
			}
		})
	}
}

// TestAllowedCrossHost: what may go to another host, and with which
// credentials.
func TestAllowedCrossHost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, method, url, contentType string
		insecure                       bool
		wantAuth                       bool
	}{
		{"blob storage GET", "GET", "https://s3.amazonaws.com/bucket/blob?X-Amz-Signature=x", "", false, false},
		{"HEAD elsewhere", "HEAD", "https://cdn.example.net/blob", "", false, false},
		{"token GET on the same site", "GET", "https://auth.example.com/token?scope=x", "", false, true},
		{"OAuth2 token POST on the same site", "POST", "https://auth.example.com/token", "application/x-www-form-urlencoded", false, true},
		{"http elsewhere when insecure", "GET", "http://cdn.example.net/blob", "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			target, rec := server(t, strings.HasPrefix(tc.url, "https"), func(w http.ResponseWriter, r *http.Request, _ int) {})
			fn := newFakeNet()
			u, _ := url.Parse(tc.url)
			fn.add(u.Host, target)
			rt := newRT(t, Options{Host: "registry.example.com", Base: fn, Insecure: tc.insecure})
			var body io.Reader
			if tc.method == "POST" {
				body = strings.NewReader("grant_type=password&username=alice&password=s3cret")
			}
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, tc.url, body)
			req.Header.Set("Authorization", "Basic YWxpY2U6czNjcmV0")
			req.Header.Set("Cookie", "session=x")
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			resp.Body.Close()
			if rec.count() != 1 {
				t.Fatalf("target saw %d requests, want 1", rec.count())
			}
			got := rec.get(0).Header
			if has := got.Get("Authorization") != ""; has != tc.wantAuth {
				t.Errorf("Authorization sent: %v, want %v", has, tc.wantAuth)
			}
			if got.Get("Cookie") != "" {
				t.Errorf("Cookie sent to another host")
			}
			if req.Header.Get("Authorization") == "" || req.Header.Get("Cookie") == "" {
				t.Errorf("the caller's request was modified")
			}
		})
	}
}

// TestRedirectToSameSiteDropsAuthorization: a redirect is not a token
// request; storage on the registry's own site gets no credentials either
// (S3 rejects a presigned URL that also carries Authorization).
func TestRedirectToSameSiteDropsAuthorization(t *testing.T) {
	t.Parallel()
	target, rec := server(t, true, func(w http.ResponseWriter, r *http.Request, _ int) {})
	fn := newFakeNet()
	fn.add("blobs.example.com", target)
	rt := newRT(t, Options{Host: "registry.example.com", Base: fn})
	prev, _ := http.NewRequest(http.MethodGet, "https://registry.example.com"+blobPath, nil)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://blobs.example.com/b?X-Amz-Signature=x", nil)
	req.Header.Set("Authorization", "Bearer registry-token")
	req.Response = &http.Response{StatusCode: http.StatusTemporaryRedirect, Request: prev}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if a := rec.get(0).Header.Get("Authorization"); a != "" {
		t.Errorf("redirect target received Authorization %q", a)
	}
}

// TestRedirectRefusals: redirects the registry answers with are refused
// through a real http.Client, before anything is sent.
func TestRedirectRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		location, host string
		want           error
	}{
		{"http://169.254.169.254/latest/meta-data/", "169.254.169.254", ErrUnsafeTarget},
		{"http://cdn.example.net/blob", "cdn.example.net", ErrInsecureScheme},
	} {
		t.Run(tc.host, func(t *testing.T) {
			t.Parallel()
			reg, _ := server(t, true, func(w http.ResponseWriter, r *http.Request, _ int) {
				http.Redirect(w, r, tc.location, http.StatusTemporaryRedirect)
			})
			fn := newFakeNet()
			fn.add("registry.example.com", reg)
			rt := newRT(t, Options{Host: "registry.example.com", Base: fn, Retry: fastRetry()})
			_, _, err := get(t, t.Context(), rt, "https://registry.example.com"+blobPath)
			wantPolicyError(t, err, tc.want, tc.host)
			if got := fn.reached(tc.host); len(got) != 0 {
				t.Errorf("requests reached %s: %q", tc.host, got)
			}
		})
	}
}

// TestUploadLocationOnAnotherHost is ROBUSTNESS row 11 through an
// http.Client: the registry starts an upload and hands out a Location on
// another host; the PUT is refused and that host sees nothing.
func TestUploadLocationOnAnotherHost(t *testing.T) {
	t.Parallel()
	other, otherRec := server(t, true, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.WriteHeader(http.StatusCreated)
	})
	reg, _ := server(t, true, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Location", "https://uploads.attacker.net/upload/1?_state=abc")
		w.WriteHeader(http.StatusAccepted)
	})
	fn := newFakeNet()
	fn.add("registry.example.com", reg)
	fn.add("uploads.attacker.net", other)
	rt := newRT(t, Options{Host: "registry.example.com", Base: fn, Retry: fastRetry()})
	client := &http.Client{Transport: rt}

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://registry.example.com/v2/app/blobs/uploads/", nil)
	req.Header.Set("Authorization", "Bearer push-token")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", "sha256:2222222222222222222222222222222222222222222222222222222222222222")
	loc.RawQuery = q.Encode()
	put, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, loc.String(), strings.NewReader("layer"))
	put.Header.Set("Authorization", "Bearer push-token")
	_, err = client.Do(put)
	pe := wantPolicyError(t, err, ErrCrossHostWrite, "uploads.attacker.net")
	if !strings.Contains(pe.Error(), "registry.example.com") {
		t.Errorf("error %q does not name the registry", pe)
	}
	if otherRec.count() != 0 {
		t.Errorf("the other host received %d requests", otherRec.count())
	}
}

// TestPlainHTTP is ROBUSTNESS row 14: plain http to a registry only when it
// is loopback or insecure, refused before dialling otherwise.
func TestPlainHTTP(t *testing.T) {
	t.Parallel()
	const host = "10.0.0.1:5000"

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		fn := newFakeNet()
		rt := newRT(t, Options{Host: host, Base: fn})
		_, _, err := get(t, t.Context(), rt, "http://"+host+"/v2/")
		wantPolicyError(t, err, ErrInsecureScheme, host)
		for _, want := range []string{"--insecure", `insecure = true under [registry."10.0.0.1:5000"]`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not give the fix %q", err, want)
			}
		}
		if got := fn.all(); len(got) != 0 {
			t.Errorf("requests got past the policy: %q", got)
		}
	})

	t.Run("no RFC 1918 fallback in the auth handshake", func(t *testing.T) {
		// go-containerregistry pings private addresses over https and
		// then http; the http ping must not happen.
		t.Parallel()
		plain, rec := server(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {})
		fn := newFakeNet()
		fn.add(host, plain)
		rt := newRT(t, Options{Host: host, Base: fn, Retry: Retry{Attempts: 1}})
		reg, _ := name.NewRegistry(host)
		_, err := ggcrtransport.NewWithContext(t.Context(), reg, authn.Anonymous, rt, nil)
		if !errors.Is(err, ErrInsecureScheme) {
			t.Errorf("handshake: got %v, want ErrInsecureScheme", err)
		}
		if rec.count() != 0 {
			t.Errorf("the registry got %d plain http requests", rec.count())
		}
	})

	for name, opts := range map[string]Options{
		"--insecure":      {Host: host, Insecure: true},
		"config insecure": {Host: host, Config: RegistryConfig{Insecure: true}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			plain, rec := server(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {})
			fn := newFakeNet()
			fn.add(host, plain)
			opts.Base = fn
			rt := newRT(t, opts)
			if resp, _, err := get(t, t.Context(), rt, "http://"+host+"/v2/"); err != nil || resp.StatusCode != 200 || rec.count() != 1 {
				t.Errorf("got %v, %v after %d requests, want 200", resp, err, rec.count())
			}
		})
	}

	t.Run("loopback", func(t *testing.T) {
		t.Parallel()
		srv, rec := server(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {})
		rt := newRT(t, Options{Host: hostOf(srv)}) // the real connection pool
		if resp, _, err := get(t, t.Context(), rt, srv.URL+"/v2/"); err != nil || resp.StatusCode != 200 || rec.count() != 1 {
			t.Errorf("got %v, %v after %d requests, want 200", resp, err, rec.count())
		}
	})
}

func TestSameSite(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"registry-1.docker.io", "auth.docker.io", true},
		{"index.docker.io", "auth.docker.io", true},
		{"registry.gitlab.com", "gitlab.com", true},
		{"Registry.Example.com.", "auth.example.com:8443", true},
		{"registry.example.com", "auth.example.net", false},
		{"registry.example.com", "example.com.attacker.net", false},
		{"registry.example.co.uk", "auth.example.co.uk", true},
		{"registry.example.co.uk", "auth.attacker.co.uk", false},
		{"tenant-a.azurecr.io", "tenant-b.azurecr.io", false},
		{"123.dkr.ecr.us-east-1.amazonaws.com", "bucket.s3.amazonaws.com", false},
		{"10.0.0.1:5000", "10.0.0.1:5001", true},
		{"10.0.0.1", "10.0.0.2", false},
		{"127.0.0.1", "localhost", false},
		{"[::1]:5000", "::1", true},
		{"localhost", "localhost:5001", true},
		{"registry", "auth", false},
	} {
		if got := SameSite(tc.a, tc.b); got != tc.want {
			t.Errorf("SameSite(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestAllowsHTTP(t *testing.T) {
	for _, tc := range []struct {
		host     string
		insecure bool
		want     bool
	}{
		{"localhost:5000", false, true},
		{"LOCALHOST", false, true},
		{"127.0.0.1", false, true},
		{"127.1.2.3:80", false, true},
		{"[::1]:5000", false, true},
		{"::1", false, true},
		{"10.0.0.1:5000", false, false},
		{"192.168.1.10", false, false},
		{"registry.local:5000", false, false},
		{"localhost.attacker.net", false, false},
		{"registry.example.com", false, false},
		{"registry.example.com", true, true},
	} {
		if got := AllowsHTTP(tc.host, tc.insecure); got != tc.want {
			t.Errorf("AllowsHTTP(%q, %v) = %v, want %v", tc.host, tc.insecure, got, tc.want)
		}
	}
}

func TestNewRejectsBadHost(t *testing.T) {
	for _, host := range []string{"", "registry.example.com/app", "user@registry.example.com", "registry.example.com:port"} {
		if _, err := New(Options{Host: host}); err == nil || !strings.Contains(err.Error(), "host[:port]") {
			t.Errorf("New(Host %q) = %v, want an error saying what a host is", host, err)
		}
	}
}

func TestUserAgent(t *testing.T) {
	t.Parallel()
	srv, rec := server(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {})
	rt := newRT(t, Options{Host: hostOf(srv), UserAgent: "ferry/1.2.3"})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v2/", nil)
	req.Header.Set("User-Agent", "go-containerregistry/v0.22.1")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := rec.get(0).Header.Get("User-Agent"), "ferry/1.2.3 go-containerregistry/v0.22.1"; got != want {
		t.Errorf("User-Agent %q, want %q", got, want)
	}
}
