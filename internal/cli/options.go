package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ferry-oci/ferry/internal/auth"
	"github.com/ferry-oci/ferry/internal/config"
	"github.com/ferry-oci/ferry/internal/progress"
	"github.com/ferry-oci/ferry/internal/transfer"
	"github.com/ferry-oci/ferry/internal/transport"
)

// globalOptions are the flags every command has, and what is derived from
// them once per run.
type globalOptions struct {
	streams IOStreams

	configPath string
	insecure   bool
	output     string
	progress   string
	debug      bool

	started bool   // a command's run began: later errors are not usage errors
	cmd     string // the command path, for usage hints
	config  *config.File
	// registries are [registry."host"] tables that override the global
	// config's for this run (a mirror config's own); set them before the
	// first transport is made.
	registries map[string]transport.RegistryConfig

	mu         sync.Mutex
	transports map[string]http.RoundTripper
}

func (g *globalOptions) addFlags(root *cobra.Command) {
	f := root.PersistentFlags()
	f.StringVar(&g.configPath, "config", "", "config file (default $XDG_CONFIG_HOME/ferry/config.toml)")
	// inspect's own --config prints the config blob: --config-file works
	// everywhere.
	f.StringVar(&g.configPath, "config-file", "", "the same as --config; use it with inspect, whose --config prints the image's config")
	f.BoolVar(&g.insecure, "insecure", false, "allow plain http and unverified TLS for every registry")
	f.StringVarP(&g.output, "output", "o", "text", "output format: text or json")
	f.StringVar(&g.progress, "progress", "auto", "progress display: auto, bar, plain, json or none")
	f.BoolVar(&g.debug, "debug", false, "log every request and response to stderr, credentials redacted")
	_ = root.RegisterFlagCompletionFunc("output", fixedCompletion("text", "json"))
	_ = root.RegisterFlagCompletionFunc("progress", fixedCompletion("auto", "bar", "plain", "json", "none"))
}

// init validates the global flags and loads the configuration file.
func (g *globalOptions) init() error {
	switch g.output {
	case "text", "json":
	default:
		return usageErrorf("--output %q: expected text or json", g.output)
	}
	switch g.progress {
	case "auto", "bar", "plain", "json", "none":
	default:
		return usageErrorf("--progress %q: expected auto, bar, plain, json or none", g.progress)
	}
	path, required := g.configPath, true
	if path == "" {
		path, required = config.DefaultPath(), false
	}
	cfg, err := config.Load(path, required)
	if errors.Is(err, fs.ErrNotExist) {
		return usageErrorf("--config %s: no such file; create it or leave out --config", path)
	}
	if err != nil {
		return err
	}
	g.config = cfg
	return nil
}

func (g *globalOptions) json() bool { return g.output == "json" }

// registryConfig finds the [registry."host"] table for host; Docker Hub may
// be configured as docker.io.
func (g *globalOptions) registryConfig(host string) transport.RegistryConfig {
	for _, tables := range []map[string]transport.RegistryConfig{g.registries, g.config.Registry} {
		if c, ok := tables[host]; ok {
			return c
		}
		if c, ok := tables["docker.io"]; ok && host == "index.docker.io" {
			return c
		}
	}
	return transport.RegistryConfig{}
}

// transport returns the RoundTripper for host, one per host per run so that
// connections are reused.
func (g *globalOptions) transport(host string) (http.RoundTripper, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if rt, ok := g.transports[host]; ok {
		return rt, nil
	}
	opts := transport.Options{
		Host:      host,
		Config:    g.registryConfig(host),
		Insecure:  g.insecure,
		UserAgent: "ferry/" + version,
	}
	if g.debug {
		var mu sync.Mutex
		opts.Debug = func(line string) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(g.streams.Err, "debug: %s\n", line)
		}
	}
	rt, err := transport.New(opts)
	if err != nil {
		return nil, err
	}
	if g.transports == nil {
		g.transports = map[string]http.RoundTripper{}
	}
	g.transports[host] = rt
	return rt, nil
}

// authStore is the docker config file credentials live in.
func (g *globalOptions) authStore() *auth.Store { return auth.NewStore("") }

// keychain resolves credentials: a [registry."host"] table's username
// and password first, then the docker config file.
func (g *globalOptions) keychain() authn.Keychain {
	return auth.Configured{Lookup: g.configuredCredentials, Next: g.authStore().Keychain()}
}

// configuredCredentials reads the username and password a
// [registry."host"] table gives for host, if it gives them.
func (g *globalOptions) configuredCredentials(host string) (user, password string, ok bool, err error) {
	c := g.registryConfig(host)
	if c.Username == "" {
		return "", "", false, nil
	}
	table := fmt.Sprintf("[registry.%q]", host)
	switch {
	case c.PasswordFile != "":
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", "", false, fmt.Errorf("the password_file of %s: %w", table, err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	case c.PasswordEnv != "":
		password = os.Getenv(c.PasswordEnv)
	}
	if password == "" {
		return "", "", false, fmt.Errorf("%s: username %s has an empty password: set %s", table, c.Username, cmp.Or(c.PasswordEnv, "its password_file "+c.PasswordFile))
	}
	return c.Username, password, true, nil
}

// remote returns the registry client for this run.
func (g *globalOptions) remote(manifestLimit int64) *transfer.Remote {
	return &transfer.Remote{
		Keychain:      g.keychain(),
		Transport:     g.transport,
		ManifestLimit: manifestLimit,
	}
}

// parseReference parses a command-line reference; a bad one is a usage error.
func (g *globalOptions) parseReference(s string) (transfer.Reference, error) {
	return transfer.ParseReference(s, g.insecure)
}

// openSource parses s, a reference to any endpoint, and opens it for
// reading. The caller calls close when done.
func (g *globalOptions) openSource(ctx context.Context, s string, manifestLimit int64) (src transfer.Source, ref transfer.Reference, close func() error, err error) {
	ref, err = g.parseReference(s)
	if err != nil {
		return nil, ref, nil, err
	}
	src, close, err = g.remote(manifestLimit).OpenSource(ctx, ref)
	return src, ref, close, err
}

func fixedCompletion(values ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// sizeFlag parses sizes such as 4MiB, 512k, 1G or plain bytes.
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	var n int64
	if _, err := fmt.Sscanf(t, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != t {
		return 0, fmt.Errorf("size %q: expected a positive number with an optional K, M, G or T suffix (powers of 1024), e.g. 4MiB", s)
	}
	return n * mult, nil
}

// progressMode is --progress resolved for this run's stderr; init has
// already refused values ParseMode does not know.
func (g *globalOptions) progressMode() progress.Mode {
	m, err := progress.ParseMode(g.progress, g.streams.ErrTTY)
	if err != nil {
		return progress.ModeNone
	}
	return m
}

// parsePlatforms parses repeated --platform values.
func parsePlatforms(values []string) ([]ocispec.Platform, error) {
	var out []ocispec.Platform
	for _, v := range values {
		p, err := transfer.ParsePlatform(v)
		if err != nil {
			return nil, &UsageError{Err: fmt.Errorf("--platform: %w", err)}
		}
		out = append(out, p)
	}
	return out, nil
}
