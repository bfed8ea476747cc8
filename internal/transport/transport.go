// Package transport builds the http.RoundTripper ferry uses for one registry
// host: TLS settings from the configuration, a request policy that keeps
// credentials and uploads on the registry, retries that honour Retry-After,
// and a redacted debug log.
//
// go-containerregistry's remote/transport wraps the RoundTripper returned by
// New and adds authentication on top, so every request ferry makes for a
// registry, including redirects and token requests, passes through it. The
// layers, outermost first:
//
//	user agent → ping race → debug log → retry → policy → TLS/HTTP connection pool
//
// The ping race (ping.go) only concerns the /v2/ ping of a registry where
// plain http is allowed: it asks over plain http and https at once.
//
// Everything New returns is safe for concurrent use. What one request
// leaves for the next is only what it learned of the registry itself: a
// certificate that did not verify, and which scheme answered its ping.
package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RegistryConfig is one [registry."host:port"] table of ferry's TOML config
// (also reused by the mirror config).
type RegistryConfig struct {
	Insecure bool   `toml:"insecure"`  // plain http allowed and TLS not verified
	CAFile   string `toml:"ca_file"`   // extra CA bundle (PEM) trusted for this registry
	CertFile string `toml:"cert_file"` // client certificate for mTLS
	KeyFile  string `toml:"key_file"`  // private key of CertFile

	// Username, with the password in the file PasswordFile or the
	// environment variable PasswordEnv, is used for this registry before
	// the docker config file. The password itself is never in the table.
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	PasswordEnv  string `toml:"password_env"`
}

// RelativeTo returns c with its file paths (ca_file, cert_file, key_file,
// password_file) made absolute against dir, the directory of the file
// the table was read from; absolute paths stay.
func (c RegistryConfig) RelativeTo(dir string) RegistryConfig {
	for _, p := range []*string{&c.CAFile, &c.CertFile, &c.KeyFile, &c.PasswordFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return c
}

// CheckCredentials reports a table whose credential keys do not make one
// credential: a username needs exactly one of password_file and
// password_env, and they need a username. It returns the key at fault.
func (c RegistryConfig) CheckCredentials() (key, msg string) {
	switch {
	case c.Username == "" && c.PasswordFile != "":
		return "password_file", "a password needs a username: add username"
	case c.Username == "" && c.PasswordEnv != "":
		return "password_env", "a password needs a username: add username"
	case c.Username != "" && c.PasswordFile != "" && c.PasswordEnv != "":
		return "password_env", "give the password one way: password_file or password_env, not both"
	case c.Username != "" && c.PasswordFile == "" && c.PasswordEnv == "":
		return "username", "a username needs its password: add password_file (a file holding it) or password_env (a variable holding it)"
	}
	return "", ""
}

// Options configure the RoundTripper for one registry.
type Options struct {
	// Host is the registry host[:port] as in a reference
	// ("index.docker.io" for Docker Hub).
	Host string
	// Config is the registry's table from the configuration file.
	Config RegistryConfig
	// Insecure is the global --insecure flag, ORed with Config.Insecure:
	// plain http is allowed and TLS certificates are not verified.
	Insecure bool
	// Debug, when non-nil, is called once per request line, response line
	// and header line, with credentials redacted. Bodies are never logged.
	// It may be called from many goroutines at once.
	Debug func(line string)
	// UserAgent, when set, leads the User-Agent header of every request.
	UserAgent string
	// Retry is the policy for transient failures; the zero value means
	// DefaultRetry(), and zero fields take their default.
	Retry Retry
	// BodyIdle ends a response body that sends nothing for this long once
	// its reader is reading: the read fails with an error wrapping
	// ErrStalled, and the copy engine resumes the blob where it stopped.
	// 0 means DefaultBodyIdle; negative, never.
	BodyIdle time.Duration
	// Base carries the requests once the policy allowed them, for tests.
	// It is used as is: Config's TLS settings do not apply to it. nil means
	// ferry's own HTTP/2-capable transport with the TLS settings of Config.
	Base http.RoundTripper
}

// ErrTLSConfig is wrapped by every *ConfigError.
var ErrTLSConfig = errors.New("unusable TLS configuration")

// ConfigError is a TLS setting of a [registry."host"] table that cannot be
// used, such as a ca_file that does not exist or holds no certificate.
// errors.Is matches ErrTLSConfig and the underlying cause (fs.ErrNotExist,
// for example).
type ConfigError struct {
	Host string // the registry whose table holds the setting
	Key  string // "ca_file", "cert_file" or "key_file"
	File string // the file named by the setting, if any
	Err  error
}

func (e *ConfigError) Error() string {
	what := e.Key
	if e.File != "" {
		what = fmt.Sprintf("%s %q", e.Key, e.File)
	}
	return fmt.Sprintf("registry %s: %s: %v; fix %s under [registry.%q] in the config", e.Host, what, e.Err, e.Key, e.Host)
}

// Unwrap returns ErrTLSConfig and the cause.
func (e *ConfigError) Unwrap() []error { return []error{ErrTLSConfig, e.Err} }

// New returns the RoundTripper for opts.Host. It fails when opts.Host is not
// a host[:port] or when a file named by opts.Config cannot be used; nothing
// is dialled until a request is made.
func New(opts Options) (http.RoundTripper, error) {
	p, err := newPolicy(opts.Host, opts.Insecure || opts.Config.Insecure)
	if err != nil {
		return nil, err
	}
	t := &roundTripper{
		userAgent: strings.TrimSpace(opts.UserAgent),
		debug:     opts.Debug,
		retry:     opts.Retry.withDefaults(),
		policy:    p,
		bodyIdle:  opts.BodyIdle,
	}
	if t.bodyIdle == 0 {
		t.bodyIdle = DefaultBodyIdle
	}
	regTLS, otherTLS, err := tlsConfigs(opts)
	if err != nil {
		return nil, err
	}
	if opts.Base != nil {
		t.registry, t.other = opts.Base, opts.Base
	} else {
		t.registry, t.other = newBase(regTLS), newBase(otherTLS)
	}
	return t, nil
}

// roundTripper is the chain of layers described in the package comment.
type roundTripper struct {
	userAgent string
	debug     func(string)
	retry     Retry
	policy    *policy
	bodyIdle  time.Duration
	// registry carries requests to the registry and hosts on its site: it
	// has the client certificate and, when insecure, skips verification.
	// other carries the rest (blob storage behind redirects).
	registry, other http.RoundTripper

	// tlsFailed remembers, per host, a certificate that did not verify, so
	// that the plain-http retry go-containerregistry makes for a loopback
	// registry reports that failure instead of the 400 a TLS server gives
	// to plain http (ROBUSTNESS row 14).
	mu        sync.Mutex
	tlsFailed map[string]error
	// pings are plain-http answers to pings that won a race against https,
	// for the plain-http pings that follow (racePing).
	pings []*pingAnswer
	// speaksTLS is set once the registry answered a ping over https:
	// later pings ask https alone, as go-containerregistry does.
	speaksTLS atomic.Bool
}

// certError reports whether err is a TLS certificate verification failure.
func certError(err error) bool {
	var (
		certErr   *tls.CertificateVerificationError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	return errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalid)
}

// RoundTrip implements http.RoundTripper.
func (t *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.userAgent != "" {
		if ua := req.Header.Get("User-Agent"); !strings.HasPrefix(ua, t.userAgent) {
			if ua != "" {
				ua = t.userAgent + " " + ua
			} else {
				ua = t.userAgent
			}
			req = withHeaders(req)
			req.Header.Set("User-Agent", ua)
		}
	}
	if req.URL.Scheme == "http" {
		t.mu.Lock()
		terr := t.tlsFailed[req.URL.Host]
		t.mu.Unlock()
		if terr != nil {
			return nil, fmt.Errorf("%s speaks TLS with a certificate ferry does not trust (%w); trust its CA with ca_file in [registry.%q] of the config, or use --insecure", req.URL.Host, terr, req.URL.Host)
		}
	}
	if t.isPing(req) {
		switch {
		case req.URL.Scheme == "https" && !t.speaksTLS.Load():
			return t.racePing(req)
		case req.URL.Scheme == "http":
			if resp := t.takePing(req); resp != nil {
				return resp, nil
			}
		}
	}
	return t.send(req)
}

// send sends req through the debug log, retries and the policy, and
// remembers a certificate that did not verify.
func (t *roundTripper) send(req *http.Request) (*http.Response, error) {
	var resp *http.Response
	var err error
	if t.debug != nil {
		resp, err = t.logged(req)
	} else {
		resp, err = t.retried(req)
	}
	if err == nil && t.bodyIdle > 0 && resp.Body != nil && resp.Body != http.NoBody {
		resp.Body = watchBody(resp.Body, t.bodyIdle)
	}
	if err != nil && req.URL.Scheme == "https" && certError(err) {
		t.mu.Lock()
		if t.tlsFailed == nil {
			t.tlsFailed = map[string]error{}
		}
		t.tlsFailed[req.URL.Host] = err
		t.mu.Unlock()
	}
	return resp, err
}

// CloseIdleConnections closes the idle connections of the transports
// underneath, as http.Client.CloseIdleConnections expects.
func (t *roundTripper) CloseIdleConnections() {
	type closer interface{ CloseIdleConnections() }
	if c, ok := t.registry.(closer); ok {
		c.CloseIdleConnections()
	}
	if t.other != t.registry {
		if c, ok := t.other.(closer); ok {
			c.CloseIdleConnections()
		}
	}
}

// withHeaders returns a shallow copy of req with its own header map, so a
// layer can change headers without touching the caller's request.
func withHeaders(req *http.Request) *http.Request {
	r := new(http.Request)
	*r = *req
	r.Header = req.Header.Clone()
	if r.Header == nil {
		r.Header = http.Header{}
	}
	return r
}

// closeBody closes a request body that will not be sent; a RoundTripper
// must close it even when it fails.
func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// newBase is ferry's connection pool: http.DefaultTransport's settings with
// more idle connections per host (layers are fetched in parallel) and no
// overall timeout, since a blob may take an hour to stream.
func newBase(cfg *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
		TLSClientConfig:       cfg,
		// The default 4 KiB read and write buffers: reads of a streamed
		// layer are larger and bypass them, while 128 KiB buffers cost a
		// copy of every small blob (measured in make bench: small blobs
		// 10% faster, 512 MiB of layers within noise, less memory).
	}
}

// tlsConfigs returns the TLS settings for the registry (and hosts on its
// site) and for other hosts. The extra CA is trusted for both, since blob
// storage behind a private registry often shares its CA; the client
// certificate and a per-registry insecure setting apply to the registry's
// site only. The global --insecure applies everywhere.
func tlsConfigs(opts Options) (registry, other *tls.Config, err error) {
	c := opts.Config
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, nil, &ConfigError{Host: opts.Host, Key: "ca_file", File: c.CAFile, Err: err}
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, &ConfigError{Host: opts.Host, Key: "ca_file", File: c.CAFile, Err: errors.New("no PEM certificate found in the file")}
		}
		base.RootCAs = pool
	}
	registry = base.Clone()
	registry.InsecureSkipVerify = opts.Insecure || c.Insecure
	switch {
	case c.CertFile != "" && c.KeyFile != "":
		certPEM, err := os.ReadFile(c.CertFile)
		if err != nil {
			return nil, nil, &ConfigError{Host: opts.Host, Key: "cert_file", File: c.CertFile, Err: err}
		}
		keyPEM, err := os.ReadFile(c.KeyFile)
		if err != nil {
			return nil, nil, &ConfigError{Host: opts.Host, Key: "key_file", File: c.KeyFile, Err: err}
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, &ConfigError{Host: opts.Host, Key: "cert_file", File: c.CertFile,
				Err: fmt.Errorf("with key_file %q: %w", c.KeyFile, err)}
		}
		registry.Certificates = []tls.Certificate{pair}
	case c.CertFile != "":
		return nil, nil, &ConfigError{Host: opts.Host, Key: "key_file", Err: fmt.Errorf("cert_file %q is set but key_file is not; set both", c.CertFile)}
	case c.KeyFile != "":
		return nil, nil, &ConfigError{Host: opts.Host, Key: "cert_file", Err: fmt.Errorf("key_file %q is set but cert_file is not; set both", c.KeyFile)}
	}
	other = base.Clone()
	other.InsecureSkipVerify = opts.Insecure
	return registry, other, nil
}

// hostError is the error for an Options.Host that is not a host[:port].
func hostError(host, why string) error {
	return fmt.Errorf("registry host %q: %s; expected host[:port], e.g. registry.example.com:5000", host, why)
}

// parseHost splits a host[:port] as found in a reference.
func parseHost(host string) (name, port string, err error) {
	if host == "" {
		return "", "", hostError(host, "empty")
	}
	u, err := url.Parse("//" + host)
	if err != nil || u.Host != host || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Hostname() == "" {
		return "", "", hostError(host, "not a valid host")
	}
	return canonicalName(u.Hostname()), u.Port(), nil
}
