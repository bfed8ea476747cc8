package transport

import (
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Errors a request is refused with, before anything is sent. Each is
// wrapped by a *PolicyError that names the host and the fix.
var (
	// ErrInsecureScheme refuses plain http where TLS is required: to a
	// registry that is neither loopback nor marked insecure, and to any
	// other host that a registry points at (ROBUSTNESS rows 10, 11, 14).
	ErrInsecureScheme = errors.New("plain http not allowed")
	// ErrUnsafeTarget refuses a request that a registry must never send
	// ferry to: link-local and cloud metadata addresses, this machine when
	// the registry is elsewhere, and schemes other than http and https
	// (ROBUSTNESS row 10).
	ErrUnsafeTarget = errors.New("unsafe request target")
	// ErrCrossHostWrite refuses a request other than GET or HEAD to a host
	// other than the registry, such as an upload Location elsewhere or a
	// token request carrying credentials off the registry's site
	// (ROBUSTNESS rows 10, 11).
	ErrCrossHostWrite = errors.New("request to another host may not carry data")
)

// PolicyError is a request the transport refused to send.
type PolicyError struct {
	Host   string // host[:port] the request was for
	Op     string // what was refused: "plain http", "PUT request", …
	Reason string // why, and what to do about it
	Err    error  // ErrInsecureScheme, ErrUnsafeTarget or ErrCrossHostWrite
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("refusing %s to %s: %s", e.Op, e.Host, e.Reason)
}

// Unwrap returns the sentinel error the refusal is an instance of.
func (e *PolicyError) Unwrap() error { return e.Err }

// AllowsHTTP reports whether plain http may be used for host (a host or
// host:port) under the given insecure setting: when insecure is set or host
// is loopback. ferry never falls back to http for other hosts, including
// the RFC 1918 addresses go-containerregistry would try http with.
func AllowsHTTP(host string, insecure bool) bool {
	return insecure || IsLoopback(host)
}

// IsLoopback reports whether host (a host or host:port, IPv6 in brackets or
// bare) is this machine: "localhost", 127.0.0.0/8 or ::1. IPv4 literals in
// the legacy forms a resolver may accept ("127.1", "0x7f000001") count too.
func IsLoopback(host string) bool {
	name, _ := splitHostPort(host)
	name = canonicalName(name)
	if name == "localhost" {
		return true
	}
	addr, ok := parseIP(name)
	return ok && addr.IsLoopback()
}

// policy decides, per request, whether it may be sent and with which
// headers (see check). It is immutable after newPolicy.
type policy struct {
	host      string     // Options.Host as given, for messages
	name      string     // canonical host name of the registry
	port      string     // its port, "" for the scheme's default
	addr      netip.Addr // valid when name is an IP literal
	site      string     // see site()
	loopback  bool       // the registry is this machine
	insecure  bool       // Options.Insecure || Config.Insecure
	allowHTTP bool       // AllowsHTTP(host, insecure)
}

func newPolicy(host string, insecure bool) (*policy, error) {
	name, port, err := parseHost(host)
	if err != nil {
		return nil, err
	}
	p := &policy{host: host, name: name, port: port, insecure: insecure}
	p.addr, _ = parseIP(name)
	p.site = site(name)
	p.loopback = IsLoopback(host)
	p.allowHTTP = AllowsHTTP(host, insecure)
	return p, nil
}

// decision is what check allows for one request.
type decision struct {
	registry bool // the request is for the registry itself
	sameSite bool // another host on the registry's site (see site)
	keepAuth bool // Authorization may be sent along
}

// check applies the request policy (ROBUSTNESS rows 9, 10, 11, 14):
//
//   - to the registry, plain http only when AllowsHTTP;
//   - to any other host: never link-local or cloud metadata addresses,
//     never this machine unless the registry is on it too, never plain
//     http unless AllowsHTTP for that host, only GET and HEAD (and an
//     OAuth2 token POST to a host on the registry's site), and never with
//     Cookie, nor with Authorization except a token request (not a
//     redirect) to a host on the registry's site.
//
// No name is resolved: the checks look at literal addresses and the known
// metadata names only.
func (p *policy) check(req *http.Request) (decision, error) {
	u := req.URL
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if u == nil {
		return decision{}, &PolicyError{Host: "(none)", Op: method + " request", Reason: "the request has no URL", Err: ErrUnsafeTarget}
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" || u.Host == "" {
		host := u.Host
		if host == "" {
			host = redactURL(u)
		}
		return decision{}, &PolicyError{Host: host, Op: fmt.Sprintf("%s request over %q", method, u.Scheme),
			Reason: "only https, and http where allowed, to a named host are supported", Err: ErrUnsafeTarget}
	}
	name, port := splitHostPort(u.Host)
	name = canonicalName(name)
	if port == "" {
		port = defaultPort(scheme)
	}
	regPort := p.port
	if regPort == "" {
		regPort = defaultPort(scheme)
	}
	if name == p.name && port == regPort {
		if scheme == "http" && !p.allowHTTP {
			return decision{}, &PolicyError{Host: p.host, Op: "plain http",
				Reason: fmt.Sprintf("TLS is required; pass --insecure or set insecure = true under [registry.%q] in the config", p.host),
				Err:    ErrInsecureScheme}
		}
		return decision{registry: true, sameSite: true, keepAuth: true}, nil
	}

	// Another host: a redirect, a token realm or an upload location the
	// registry named.
	addr, isIP := parseIP(name)
	if isMetadataName(name) || isIP && (addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() || isMetadataAddr(addr)) {
		return decision{}, &PolicyError{Host: u.Host, Op: method + " request",
			Reason: fmt.Sprintf("it is a link-local or cloud metadata address, which registry %s may not send ferry to (by a redirect, token realm or upload location); check that %s is the registry you meant", p.host, p.host),
			Err:    ErrUnsafeTarget}
	}
	if !p.loopback && (name == "localhost" || strings.HasSuffix(name, ".localhost") || isIP && (addr.IsLoopback() || addr.IsUnspecified())) {
		return decision{}, &PolicyError{Host: u.Host, Op: method + " request",
			Reason: fmt.Sprintf("it is this machine, and registry %s is not; a remote registry may not send ferry to local services", p.host),
			Err:    ErrUnsafeTarget}
	}
	if scheme == "http" && !(p.insecure || name == "localhost" || isIP && addr.IsLoopback()) {
		return decision{}, &PolicyError{Host: u.Host, Op: "plain http",
			Reason: fmt.Sprintf("registry %s sent ferry there (by a redirect, token realm or upload location) and TLS is required; pass --insecure or set insecure = true under [registry.%q] in the config if you trust it", p.host, p.host),
			Err:    ErrInsecureScheme}
	}
	same := p.sameSite(name, addr, isIP)
	// Authorization may go to a token server on the registry's site, never
	// along a redirect (blob storage rejects or logs it).
	keep := same && req.Response == nil
	switch method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost:
		if keep && isForm(req) {
			break // an OAuth2 token request to the registry's own token server
		}
		fallthrough
	default:
		return decision{}, &PolicyError{Host: u.Host, Op: method + " request",
			Reason: fmt.Sprintf("it is not registry %s; ferry sends only GET and HEAD requests elsewhere, and uploads and credentials to the registry alone", p.host),
			Err:    ErrCrossHostWrite}
	}
	return decision{sameSite: same, keepAuth: keep}, nil
}

// sameSite reports whether a host other than the registry belongs to the
// same operator, by the heuristic of site(). IP literals must be equal.
func (p *policy) sameSite(name string, addr netip.Addr, isIP bool) bool {
	if isIP || p.addr.IsValid() {
		return isIP && p.addr.IsValid() && addr == p.addr
	}
	return site(name) == p.site
}

// SameSite reports whether hosts a and b (host or host:port) belong to the
// same site: the same IP address, or the same registrable domain as
// approximated by site. A token realm on the registry's site may receive
// the registry's credentials, as auth.docker.io does for
// registry-1.docker.io.
func SameSite(a, b string) bool {
	an, _ := splitHostPort(a)
	bn, _ := splitHostPort(b)
	an, bn = canonicalName(an), canonicalName(bn)
	aa, aIP := parseIP(an)
	ba, bIP := parseIP(bn)
	if aIP || bIP {
		return aIP && bIP && aa == ba
	}
	return site(an) == site(bn)
}

// site approximates the registrable domain of a canonical host name
// without a public suffix list: the last two labels ("docker.io"), the last
// three under a country's generic second level ("example.co.uk"), and the
// whole name under domains whose subdomains belong to different customers
// (cloud storage, hosting, wildcard DNS), where only the same host is the
// same site. A single-label name is its own site.
func site(name string) string {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 {
		return name
	}
	j := strings.LastIndexByte(name[:i], '.')
	if j < 0 {
		if sharedSuffix(name) || len(name)-i-1 == 2 && genericSecondLevel(name[:i]) {
			return "\x00" + name // a public suffix on its own: no site
		}
		return name
	}
	two := name[j+1:]
	if sharedSuffix(two) {
		return name
	}
	if len(name)-i-1 == 2 && genericSecondLevel(name[j+1:i]) {
		k := strings.LastIndexByte(name[:j], '.')
		return name[k+1:]
	}
	return two
}

// genericSecondLevel reports the second-level labels that countries use as
// public suffixes (co.uk, com.au, ne.jp, …).
func genericSecondLevel(label string) bool {
	switch label {
	case "co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "gv", "mil", "ltd", "plc", "gob", "nic", "sch":
		return true
	}
	return false
}

// sharedSuffix reports two-label domains whose subdomains are handed out to
// different customers, so that two of them are not the same operator.
func sharedSuffix(two string) bool {
	switch two {
	case "amazonaws.com", "cloudfront.net", "azurecr.io", "windows.net", "azurewebsites.net",
		"azureedge.net", "appspot.com", "googleapis.com", "googleusercontent.com", "run.app",
		"r2.dev", "pages.dev", "workers.dev", "digitaloceanspaces.com", "backblazeb2.com",
		"herokuapp.com", "github.io", "gitlab.io", "netlify.app", "vercel.app", "fly.dev",
		"onrender.com", "ngrok.io", "ngrok-free.app", "nip.io", "sslip.io", "traefik.me":
		return true
	}
	return false
}

// isForm reports an application/x-www-form-urlencoded body, the shape of
// an OAuth2 token request.
func isForm(req *http.Request) bool {
	mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	return err == nil && mt == "application/x-www-form-urlencoded"
}

// isMetadataName reports the DNS names of cloud instance metadata services.
func isMetadataName(name string) bool {
	switch name {
	case "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
		"instance-data.ec2.internal", "metadata.tencentyun.com", "metadata.azure.internal":
		return true
	}
	return false
}

// isMetadataAddr reports metadata service addresses outside link-local
// ranges: AWS's IPv6 endpoint and Alibaba Cloud's.
func isMetadataAddr(addr netip.Addr) bool {
	return addr == netip.AddrFrom16([16]byte{0xfd, 0x00, 0x0e, 0xc2, 14: 0x02, 15: 0x54}) ||
		addr == netip.AddrFrom4([4]byte{100, 100, 100, 200})
}

// defaultPort is the port a URL without one connects to.
func defaultPort(scheme string) string {
	if scheme == "http" {
		return "80"
	}
	return "443"
}

// splitHostPort splits "host", "host:port", "[v6]", "[v6]:port" or a bare
// IPv6 address; port is "" when absent.
func splitHostPort(hostport string) (host, port string) {
	if strings.HasPrefix(hostport, "[") {
		if h, p, err := net.SplitHostPort(hostport); err == nil {
			return h, p
		}
		return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), ""
	}
	if strings.Count(hostport, ":") == 1 {
		h, p, _ := strings.Cut(hostport, ":")
		return h, p
	}
	return hostport, ""
}

// canonicalName lower-cases a host name, drops a final dot, and writes IP
// literals in their canonical form.
func canonicalName(name string) string {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if addr, ok := parseIP(name); ok {
		return addr.String()
	}
	return name
}

// parseIP parses an IP literal, including an IPv6 zone (ignored, as the
// dialer ignores it for these checks), IPv4-mapped IPv6 (as the IPv4
// address) and the legacy IPv4 forms inet_aton accepts ("127.1",
// "0x7f000001", "017700000001"), so that a check cannot be dodged by
// spelling an address differently.
func parseIP(name string) (netip.Addr, bool) {
	if name == "" {
		return netip.Addr{}, false
	}
	h, _, _ := strings.Cut(name, "%")
	if addr, err := netip.ParseAddr(h); err == nil {
		return addr.WithZone("").Unmap(), true
	}
	return parseLegacyIPv4(name)
}

// parseLegacyIPv4 parses one to four dot-separated numbers, each decimal,
// hex (0x) or octal (leading 0), the last filling the remaining bytes.
func parseLegacyIPv4(name string) (netip.Addr, bool) {
	if c := name[0]; c < '0' || c > '9' || strings.Contains(name, "_") {
		return netip.Addr{}, false
	}
	parts := strings.Split(name, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i, part := range parts[:len(parts)-1] {
		v, err := strconv.ParseUint(part, 0, 8)
		if err != nil {
			return netip.Addr{}, false
		}
		b[i] = byte(v)
	}
	bits := [...]int{32, 24, 16, 8}[len(parts)-1]
	last, err := strconv.ParseUint(parts[len(parts)-1], 0, bits)
	if err != nil {
		return netip.Addr{}, false
	}
	for i := len(parts) - 1; i < 4; i++ {
		b[i] = byte(last >> (8 * (3 - i)))
	}
	return netip.AddrFrom4(b), true
}

// policed sends req if the policy allows it, without the headers it may not
// carry, through the transport for its host.
func (t *roundTripper) policed(req *http.Request) (*http.Response, error) {
	d, err := t.policy.check(req)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	if d.registry {
		return t.registry.RoundTrip(req)
	}
	// Header keys are compared without regard to case: a key set directly
	// in the map need not be canonical, and the wire does not care.
	var dropped []string
	for k := range req.Header {
		if strings.EqualFold(k, "Cookie") || !d.keepAuth && strings.EqualFold(k, "Authorization") {
			dropped = append(dropped, k)
		}
	}
	if len(dropped) > 0 {
		req = withHeaders(req)
		for _, k := range dropped {
			delete(req.Header, k)
		}
		if t.debug != nil {
			slices.Sort(dropped)
			t.debug(fmt.Sprintf("--- %s %s: not sending %s to %s, which is not registry %s",
				req.Method, redactURL(req.URL), strings.Join(dropped, " or "), req.URL.Host, t.policy.host))
		}
	}
	if d.sameSite {
		return t.registry.RoundTrip(req)
	}
	return t.other.RoundTrip(req)
}
