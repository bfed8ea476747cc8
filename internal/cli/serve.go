package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferry-oci/ferry/internal/store"
	"github.com/ferry-oci/ferry/internal/transfer"
	"github.com/ferry-oci/ferry/registry"
)

type serveOptions struct {
	root            string
	addr            string
	tlsCert, tlsKey string
	selfSigned      bool
	caFile          string
	htpasswd        string
	readOnly        bool
	bundle          string // bundle.go: serve a bundle in place
	logLevel        string
	manifestSize    string
	shutdownTimeout time.Duration
	upstreams       []string // [NAMESPACE=]URL
	upstreamTTL     time.Duration
	cacheMaxSize    string
}

func newServeCmd(g *globalOptions) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run an OCI registry on local storage",
		Long: `Run a registry that speaks the OCI distribution spec v1.1, storing
content in an OCI image layout. Without --root the registry is ephemeral:
its content lives in a temporary directory removed on exit.

Once it accepts requests ferry prints one line on stdout:
  serving http://127.0.0.1:5000 (root DIR)
Requests are logged to stderr, one line each, without credentials.
SIGINT or SIGTERM stops it gracefully: new connections are refused,
requests in flight get --shutdown-timeout to finish, and ferry exits 0;
if some are still running then, they are cut off and ferry exits 1.

With --upstream the registry is also a pull-through cache
(docs/pull-through-cache.md): what clients pull and the root lacks is
fetched from the upstream, verified, stored and served. --upstream URL
caches every repository name; --upstream NAMESPACE=URL caches the names
under NAMESPACE/ (HOST/docker.io/library/nginx is library/nginx at the
upstream). Tags are checked again with a HEAD request after
--upstream-ttl; content by digest never. When the upstream cannot
answer, cached content is served, with a Warning header on stale tags.
Credentials for upstreams come from the config file's [registry."HOST"]
tables (username, password_file or password_env) or the docker config
file (ferry login); TLS settings from the same tables.
'ferry serve node-config' prints the settings that point containerd,
podman, CRI-O and docker at the cache.`,
		Example: `  ferry serve                                   # ephemeral, on 127.0.0.1:5000
  ferry serve --root /srv/registry --addr :5000
  ferry serve --tls-self-signed --ca-file ca.pem --addr 0.0.0.0:5443
  ferry serve --root /srv/registry --htpasswd /etc/ferry/htpasswd --tls-cert cert.pem --tls-key key.pem
  ferry serve --root /mnt/usb/mirror --read-only
  ferry serve --root /srv/cache --upstream docker.io=https://registry-1.docker.io --upstream ghcr.io=https://ghcr.io
  ferry serve --upstream https://registry-1.docker.io --cache-max-size 50GiB   # docker's registry-mirrors`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), g)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.root, "root", "", "keep content in this directory (an OCI image layout); default: a temporary one")
	f.StringVar(&o.addr, "addr", "127.0.0.1:5000", "listen on this host:port (port 0 picks a free one)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "serve TLS with this certificate (PEM)")
	f.StringVar(&o.tlsKey, "tls-key", "", "the key of --tls-cert (PEM)")
	f.BoolVar(&o.selfSigned, "tls-self-signed", false, "serve TLS with a certificate made now for the listen address")
	f.StringVar(&o.caFile, "ca-file", "", "with --tls-self-signed: write the CA certificate here (default ROOT/.ferry/ca.pem)")
	f.StringVar(&o.htpasswd, "htpasswd", "", "require basic auth from the users in this htpasswd file (bcrypt)")
	f.BoolVar(&o.readOnly, "read-only", false, "refuse every write")
	f.StringVar(&o.bundle, "bundle", "", "serve this air-gap bundle (FILE, or a split bundle's FILE.000) read-only, in place, instead of a root")
	f.StringVar(&o.logLevel, "log-level", "info", "access log: debug, info, warn, error or none")
	f.StringVar(&o.manifestSize, "max-manifest-size", "4MiB", "refuse manifests larger than this")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGINT/SIGTERM, wait this long for requests in flight")
	f.StringArrayVar(&o.upstreams, "upstream", nil, "cache this registry, pull-through: URL for every name, NAMESPACE=URL for the names under NAMESPACE/ (repeatable)")
	f.DurationVar(&o.upstreamTTL, "upstream-ttl", registry.DefaultUpstreamTTL, "with --upstream: serve a cached tag this long before checking it upstream again (0: every time)")
	f.StringVar(&o.cacheMaxSize, "cache-max-size", "", "with --upstream: keep the root under this size, dropping the cached images used least recently")
	_ = cmd.RegisterFlagCompletionFunc("log-level", fixedCompletion("debug", "info", "warn", "error", "none"))
	cmd.AddCommand(newNodeConfigCmd(g))
	return cmd
}

func (o *serveOptions) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	switch o.logLevel {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	case "none":
		return slog.New(slog.DiscardHandler), nil
	default:
		return nil, usageErrorf("--log-level %q: expected debug, info, warn, error or none", o.logLevel)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}

func (o *serveOptions) run(ctx context.Context, g *globalOptions) error {
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usageErrorf("--tls-cert and --tls-key go together")
	}
	if o.selfSigned && o.tlsCert != "" {
		return usageErrorf("--tls-self-signed and --tls-cert: choose one")
	}
	if o.caFile != "" && !o.selfSigned {
		return usageErrorf("--ca-file is written with --tls-self-signed only")
	}
	limit, err := parseSize(o.manifestSize)
	if err != nil {
		return usageErrorf("--max-manifest-size: %v", err)
	}
	logger, err := o.logger(g.streams.Err)
	if err != nil {
		return err
	}

	root, ephemeral := o.root, o.root == ""
	if o.bundle != "" && !ephemeral {
		return usageErrorf("--bundle and --root: serve one or the other")
	}
	opts := registry.Options{ReadOnly: o.readOnly, MaxManifestSize: limit, Logger: logger}
	if err := o.cacheOptions(g, &opts); err != nil {
		return err
	}
	if ephemeral {
		if root, err = os.MkdirTemp("", "ferry-serve-*"); err != nil {
			return fmt.Errorf("making a temporary root: %w", err)
		}
		defer os.RemoveAll(root)
	}
	s, err := store.Open(root)
	if err != nil {
		return fmt.Errorf("--root %s: %w", root, err)
	}

	if o.htpasswd != "" {
		if opts.Auth, err = registry.LoadHtpasswd(o.htpasswd); err != nil {
			return &UsageError{Err: fmt.Errorf("--htpasswd: %w", err)}
		}
	}
	var handler *registry.Server
	if o.bundle != "" {
		var closeBundle func() error
		if handler, closeBundle, err = serveBundle(o.bundle, opts); err != nil {
			return err
		}
		defer closeBundle()
	} else if handler, err = registry.New(s, opts); err != nil {
		return err
	}
	if err != nil {
		return err
	}
	defer handler.Close()

	// The certificate (and its CA file) comes first: a client that sees the
	// port open can trust the CA file is there.
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	scheme := "http"
	if o.tlsCert != "" || o.selfSigned {
		cert, err := o.certificate(root)
		if err != nil {
			return err
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		scheme = "https"
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (is another registry running there? choose another --addr)", o.addr, err)
	}
	if srv.TLSConfig != nil {
		ln = tls.NewListener(ln, srv.TLSConfig)
	}

	desc := "root " + root
	if ephemeral {
		desc += ", removed on exit"
	}
	if o.readOnly {
		desc += ", read-only"
	}
	if o.bundle != "" {
		desc = "bundle " + o.bundle + ", read-only"
	}
	if o.selfSigned {
		desc += ", CA certificate " + o.caFile
	}
	for _, u := range o.upstreams {
		desc += ", upstream " + u
	}
	fmt.Fprintf(g.streams.Out, "serving %s://%s (%s)\n", scheme, ln.Addr(), desc)
	if f, ok := g.streams.Out.(interface{ Sync() error }); ok {
		_ = f.Sync()
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		srv.Close()
		return fmt.Errorf("stopping: requests still running after %s: %w", o.shutdownTimeout, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	fmt.Fprintln(g.streams.Err, "ferry serve: stopped")
	return nil
}

// certificate loads --tls-cert/--tls-key, or makes a self-signed one for
// the listen address and writes its CA where clients can be pointed at it.
func (o *serveOptions) certificate(root string) (tls.Certificate, error) {
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return cert, &UsageError{Err: fmt.Errorf("--tls-cert/--tls-key: %w", err)}
		}
		return cert, nil
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if host, _, err := net.SplitHostPort(o.addr); err == nil && host != "" && !strings.Contains(strings.Join(hosts, " "), host) {
		hosts = append(hosts, host)
	}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	cert, caPEM, err := registry.SelfSigned(hosts, 365*24*time.Hour)
	if err != nil {
		return cert, err
	}
	path := o.caFile
	if path == "" {
		path = filepath.Join(root, ".ferry", "ca.pem")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return cert, err
	}
	if err := os.WriteFile(path, caPEM, 0o644); err != nil {
		return cert, fmt.Errorf("writing the CA certificate: %w", err)
	}
	o.caFile = path
	return cert, nil
}

// cacheOptions turns --upstream, --upstream-ttl and --cache-max-size into
// the registry's pull-through cache options.
func (o *serveOptions) cacheOptions(g *globalOptions, opts *registry.Options) error {
	if len(o.upstreams) == 0 {
		if o.cacheMaxSize != "" {
			return usageErrorf("--cache-max-size applies to a cache: add --upstream")
		}
		return nil
	}
	if o.bundle != "" {
		return usageErrorf("--bundle and --upstream: a bundle is served read-only, it cannot cache")
	}
	if o.upstreamTTL < 0 {
		return usageErrorf("--upstream-ttl %v: expected a duration of zero or more", o.upstreamTTL)
	}
	opts.UpstreamTTL = o.upstreamTTL
	if o.upstreamTTL == 0 {
		opts.UpstreamTTL = -1 // check every time
	}
	if o.cacheMaxSize != "" {
		n, err := parseSize(o.cacheMaxSize)
		if err != nil {
			return usageErrorf("--cache-max-size: %v", err)
		}
		opts.CacheMaxSize = n
	}
	remote := g.remote(opts.MaxManifestSize)
	opts.Upstreams = map[string]registry.Upstream{}
	for _, arg := range o.upstreams {
		ns, rawURL := splitUpstream(arg)
		if ns != "" && !store.ValidRepositoryName(ns) {
			return usageErrorf("--upstream %s: namespace %q is not a repository name prefix: lowercase components joined by '/', e.g. docker.io", arg, ns)
		}
		if _, dup := opts.Upstreams[ns]; dup {
			if ns == "" {
				return usageErrorf("--upstream %s: only one upstream may serve the names outside every namespace", arg)
			}
			return usageErrorf("--upstream %s: namespace %q has another upstream already", arg, ns)
		}
		up, err := transfer.NewUpstream(remote, rawURL, g.insecure)
		if err != nil {
			return &UsageError{Err: fmt.Errorf("--upstream %s: %w", arg, err)}
		}
		opts.Upstreams[ns] = up
	}
	return nil
}

// splitUpstream splits --upstream NAMESPACE=URL; a value without a
// namespace is the default upstream's URL.
func splitUpstream(arg string) (namespace, rawURL string) {
	if i := strings.IndexByte(arg, '='); i >= 0 && !strings.Contains(arg[:i], "://") {
		return arg[:i], arg[i+1:]
	}
	return "", arg
}
