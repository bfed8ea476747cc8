package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
)

// The formats of ferry serve node-config.
const (
	nodeFormatContainerd = "containerd"
	nodeFormatRegistries = "registries.conf"
	nodeFormatDocker     = "docker"
	nodeFormatAll        = "all"
)

type nodeConfigOptions struct {
	mirror string
	caFile string
	format string
	def    string
}

// newNodeConfigCmd is `ferry serve node-config`. It lives under serve
// because what it configures is a client of `ferry serve`; `ferry mirror`
// is the TOML-driven copy, whose "config" is the mirror config file.
func newNodeConfigCmd(g *globalOptions) *cobra.Command {
	o := &nodeConfigOptions{}
	cmd := &cobra.Command{
		Use:   "node-config --mirror URL [--default REGISTRY] [REGISTRY...]",
		Short: "Print the settings that point containerd, podman, CRI-O and docker at a ferry cache",
		Long: `Print, for the nodes of a cluster or a CI fleet, the settings that make
them pull through a 'ferry serve --upstream' cache at --mirror.

Each REGISTRY (docker.io, ghcr.io, quay.io, ...) is taken as cached under
the namespace of its own name, as 'ferry serve --upstream
docker.io=https://registry-1.docker.io' serves it. --default names the
registry that the cache serves without a namespace ('ferry serve
--upstream URL'); docker's registry-mirrors works only that way, and
only for Docker Hub.

Formats:
  containerd        /etc/containerd/certs.d/REGISTRY/hosts.toml, one per registry
  registries.conf   a drop-in for podman, CRI-O and buildah (containers-registries.conf v2)
  docker            /etc/docker/daemon.json: registry-mirrors
  all               all of them, each under a comment naming its file

Nodes fall back to the registry itself when the cache cannot answer.
With a private CA (ferry serve --tls-self-signed --ca-file), give --ca-file
as the path where the nodes keep that certificate: containerd reads it
from hosts.toml; for the others the output says where to copy it.`,
		Example: `  ferry serve node-config --mirror https://ferry.lan:5000 --ca-file /etc/ferry/ca.pem docker.io ghcr.io
  ferry serve node-config --mirror https://ferry.lan:5000 --format containerd quay.io
  ferry serve node-config --mirror https://ferry.lan:5000 --default docker.io --format docker > /etc/docker/daemon.json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(g, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.mirror, "mirror", "", "the ferry cache, https://HOST[:PORT] or http://HOST[:PORT]; required")
	f.StringVar(&o.caFile, "ca-file", "", "where the nodes keep the CA certificate of the cache, when it is private")
	f.StringVar(&o.format, "format", nodeFormatAll, "containerd, registries.conf, docker or all")
	f.StringVar(&o.def, "default", "", "the registry the cache serves without a namespace (its upstream given as --upstream URL)")
	_ = cmd.RegisterFlagCompletionFunc("format", fixedCompletion(nodeFormatContainerd, nodeFormatRegistries, nodeFormatDocker, nodeFormatAll))
	return cmd
}

// nodeConfig is what the snippets are made from.
type nodeConfig struct {
	mirror     *url.URL // scheme and host of the cache
	caFile     string
	registries []mirrored
}

// mirrored is a registry the cache serves, under namespace ("" for the
// cache's default upstream).
type mirrored struct {
	registry  string
	namespace string
}

func (o *nodeConfigOptions) run(g *globalOptions, args []string) error {
	nc, err := o.config(args)
	if err != nil {
		return err
	}
	w := g.streams.Out
	switch o.format {
	case nodeFormatContainerd:
		nc.containerd(w)
	case nodeFormatRegistries:
		nc.registriesConf(w, false)
	case nodeFormatDocker:
		if err := nc.dockerDaemon(w, false); err != nil {
			return usageErrorf("--format docker: %v", err)
		}
		if note := nc.dockerCANote(); note != "" {
			fmt.Fprintln(g.streams.Err, note)
		}
	case nodeFormatAll:
		nc.containerd(w)
		fmt.Fprintln(w)
		nc.registriesConf(w, true)
		fmt.Fprintln(w)
		if err := nc.dockerDaemon(w, true); err != nil {
			fmt.Fprintf(w, "# /etc/docker/daemon.json: not generated: %v\n", err)
		}
	default:
		return usageErrorf("--format %q: expected containerd, registries.conf, docker or all", o.format)
	}
	return nil
}

// config checks the flags and arguments.
func (o *nodeConfigOptions) config(args []string) (*nodeConfig, error) {
	if o.mirror == "" {
		return nil, usageErrorf("--mirror is required: the URL of the ferry cache, e.g. https://ferry.lan:5000")
	}
	u, err := url.Parse(o.mirror)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		return nil, usageErrorf("--mirror %q: expected https://HOST[:PORT] or http://HOST[:PORT], without a path", o.mirror)
	}
	if len(args) == 0 && o.def == "" {
		return nil, usageErrorf("name the registries the nodes pull from (e.g. docker.io ghcr.io), or --default")
	}
	nc := &nodeConfig{mirror: &url.URL{Scheme: u.Scheme, Host: u.Host}, caFile: o.caFile}
	seen := map[string]bool{}
	add := func(arg string, isDefault bool) error {
		reg := canonicalRegistry(arg)
		if reg == "" || strings.ContainsAny(reg, "/ \t\"'=") {
			return usageErrorf("registry %q: expected a host[:port], e.g. docker.io", arg)
		}
		if seen[reg] {
			return usageErrorf("registry %s is given twice", reg)
		}
		seen[reg] = true
		m := mirrored{registry: reg, namespace: reg}
		if isDefault {
			m.namespace = ""
		}
		nc.registries = append(nc.registries, m)
		return nil
	}
	if o.def != "" {
		if err := add(o.def, true); err != nil {
			return nil, err
		}
	}
	for _, a := range args {
		if err := add(a, false); err != nil {
			return nil, err
		}
	}
	return nc, nil
}

// canonicalRegistry is the name nodes use for a registry: Docker Hub is
// docker.io whatever it is called.
func canonicalRegistry(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return s
}

// upstreamServer is the URL containerd falls back to for registry.
func upstreamServer(registry string) string {
	if registry == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + registry
}

// mirrorURL is the cache's URL for m, as containerd wants it: the API
// path with the namespace, which needs override_path.
func (nc *nodeConfig) mirrorURL(m mirrored) string {
	if m.namespace == "" {
		return nc.mirror.String()
	}
	return nc.mirror.String() + "/v2/" + m.namespace
}

// containerd writes a hosts.toml per registry
// (https://github.com/containerd/containerd/blob/main/docs/hosts.md).
func (nc *nodeConfig) containerd(w io.Writer) {
	fmt.Fprintln(w, `# containerd: set config_path = "/etc/containerd/certs.d" in the registry section of the CRI plugin in config.toml.`)
	for i, m := range nc.registries {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "# /etc/containerd/certs.d/%s/hosts.toml\n", m.registry)
		fmt.Fprintf(w, "server = %q\n\n", upstreamServer(m.registry))
		fmt.Fprintf(w, "[host.%q]\n", nc.mirrorURL(m))
		fmt.Fprintln(w, `  capabilities = ["pull", "resolve"]`)
		if m.namespace != "" {
			fmt.Fprintln(w, "  override_path = true")
		}
		if nc.caFile != "" {
			fmt.Fprintf(w, "  ca = %q\n", nc.caFile)
		}
	}
}

// registriesConf writes a containers-registries.conf(5) v2 drop-in for
// podman, CRI-O, buildah and skopeo; with header, under a comment naming
// the file.
func (nc *nodeConfig) registriesConf(w io.Writer, header bool) {
	if header {
		fmt.Fprintln(w, "# /etc/containers/registries.conf.d/ferry.conf (podman, CRI-O, buildah, skopeo)")
	}
	if nc.caFile != "" && nc.mirror.Scheme == "https" {
		fmt.Fprintf(w, "# Copy %s to /etc/containers/certs.d/%s/ca.crt.\n", nc.caFile, nc.mirror.Host)
	}
	for i, m := range nc.registries {
		if i > 0 {
			fmt.Fprintln(w)
		}
		location := nc.mirror.Host
		if m.namespace != "" {
			location += "/" + m.namespace
		}
		fmt.Fprintln(w, "[[registry]]")
		fmt.Fprintf(w, "prefix = %q\n", m.registry)
		fmt.Fprintf(w, "location = %q\n\n", m.registry)
		fmt.Fprintln(w, "[[registry.mirror]]")
		fmt.Fprintf(w, "location = %q\n", location)
		if nc.mirror.Scheme == "http" {
			fmt.Fprintln(w, "insecure = true")
		}
	}
}

// dockerDaemon writes daemon.json's registry-mirrors. Docker mirrors
// Docker Hub only, from a URL without a path: the cache must serve
// docker.io as its default upstream.
func (nc *nodeConfig) dockerDaemon(w io.Writer, header bool) error {
	hub := false
	for _, m := range nc.registries {
		hub = hub || (m.registry == "docker.io" && m.namespace == "")
	}
	if !hub {
		return fmt.Errorf("docker mirrors Docker Hub only, from a cache that serves it without a namespace: run ferry serve with --upstream https://registry-1.docker.io and give --default docker.io")
	}
	daemon := struct {
		Mirrors  []string `json:"registry-mirrors"`
		Insecure []string `json:"insecure-registries,omitempty"`
	}{Mirrors: []string{nc.mirror.String()}}
	if nc.mirror.Scheme == "http" {
		daemon.Insecure = []string{nc.mirror.Host}
	}
	data, err := json.MarshalIndent(daemon, "", "  ")
	if err != nil {
		return err
	}
	if header {
		fmt.Fprintln(w, "# /etc/docker/daemon.json (merge into the existing file)")
		if note := nc.dockerCANote(); note != "" {
			fmt.Fprintln(w, note)
		}
	}
	fmt.Fprintf(w, "%s\n", data)
	return nil
}

// dockerCANote says where docker looks for the cache's CA.
func (nc *nodeConfig) dockerCANote() string {
	if nc.caFile == "" || nc.mirror.Scheme != "https" {
		return ""
	}
	return fmt.Sprintf("# Copy %s to /etc/docker/certs.d/%s/ca.crt.", nc.caFile, nc.mirror.Host)
}
