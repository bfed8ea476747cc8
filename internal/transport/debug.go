package transport

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// redacted replaces a secret in debug lines.
const redacted = "REDACTED"

// logged writes req and its outcome to Options.Debug: the request line and
// headers before it is sent ("--> GET https://…"), then the status line and
// headers of the response ("<-- 200 OK (12ms) GET https://…") or the error.
// Credentials are redacted everywhere (ROBUSTNESS row 15) and bodies are
// never logged, so neither is a token response.
func (t *roundTripper) logged(req *http.Request) (*http.Response, error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	u := redactURL(req.URL)
	t.debug("--> " + method + " " + u)
	t.logHeaders("-->", req.Header)
	start := time.Now()
	resp, err := t.retried(req)
	took := time.Since(start).Milliseconds()
	if err != nil {
		t.debug(fmt.Sprintf("<-- error (%dms) %s %s: %s", took, method, u, redactError(err, req.URL)))
		return resp, err
	}
	status := resp.Status
	if status == "" {
		status = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	t.debug(fmt.Sprintf("<-- %s (%dms) %s %s", status, took, method, u))
	t.logHeaders("<--", resp.Header)
	return resp, nil
}

// logHeaders writes one line per header value, sorted by name, redacted.
func (t *roundTripper) logHeaders(prefix string, h http.Header) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			t.debug(prefix + "   " + k + ": " + redactHeader(k, v))
		}
	}
}

// redactHeader returns the value of header name as it may be logged:
// credentials are replaced (the scheme word of Authorization is kept) and
// URLs have their secrets removed as in redactURL.
func redactHeader(name, value string) string {
	n := strings.ToLower(name)
	switch n {
	case "authorization", "proxy-authorization":
		if scheme, _, ok := strings.Cut(strings.TrimSpace(value), " "); ok && scheme != "" {
			return scheme + " <redacted>"
		}
		return "<redacted>"
	case "www-authenticate", "proxy-authenticate":
		return value // a challenge: realm, service and scope, no secret
	case "location", "content-location":
		u, err := url.Parse(value)
		if err != nil {
			return "<redacted>"
		}
		return redactURL(u)
	case "link":
		return redactLink(value)
	}
	for _, word := range []string{"cookie", "token", "secret", "passw", "auth", "key", "signature", "credential", "session"} {
		if strings.Contains(n, word) {
			return "<redacted>"
		}
	}
	return value
}

// redactLink redacts each <URL> of a Link header (RFC 8288).
func redactLink(value string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(value, '<')
		j := strings.IndexByte(value[i+1:], '>')
		if i < 0 || j < 0 {
			b.WriteString(value)
			return b.String()
		}
		j += i + 1
		b.WriteString(value[:i+1])
		if u, err := url.Parse(value[i+1 : j]); err == nil {
			b.WriteString(redactURL(u))
		} else {
			b.WriteString(redacted)
		}
		value = value[j:]
	}
}

// redactURL returns u without the parts that can carry credentials: the
// user info is replaced, the fragment dropped, and every query parameter
// but those of the registry protocol (scope, service, digest, mount, from,
// n, last, …) has its value replaced, which covers presigned URLs
// (X-Amz-Signature, X-Goog-Credential, Azure's sig) and tokens.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	var b strings.Builder
	if u.Scheme != "" {
		b.WriteString(u.Scheme)
		b.WriteByte(':')
	}
	if u.Opaque != "" {
		b.WriteString(redacted)
		return b.String()
	}
	if u.Host != "" || u.User != nil {
		b.WriteString("//")
	}
	if u.User != nil {
		b.WriteString(redacted + "@")
	}
	b.WriteString(u.Host)
	b.WriteString(u.EscapedPath())
	if u.RawQuery != "" || u.ForceQuery {
		b.WriteByte('?')
		b.WriteString(redactQuery(u.RawQuery))
	}
	return b.String()
}

// redactQuery replaces the values of the parameters safeParam does not
// know in a raw query string.
func redactQuery(raw string) string {
	if raw == "" {
		return raw
	}
	parts := strings.Split(raw, "&")
	for i, part := range parts {
		key, _, _ := strings.Cut(part, "=")
		k, err := url.QueryUnescape(key)
		if err != nil {
			k = key
		}
		if !safeParam(k) {
			parts[i] = key + "=" + redacted
		}
	}
	return strings.Join(parts, "&")
}

// safeParam reports the query parameters of the distribution and token
// protocols, whose values are never secret.
func safeParam(key string) bool {
	switch strings.ToLower(key) {
	case "scope", "service", "mount", "from", "digest", "n", "last", "artifacttype",
		"ns", "offline_token", "client_id", "grant_type", "account":
		return true
	}
	return false
}

// redactError returns the text of err with the URL of the request redacted
// wherever it appears.
func redactError(err error, u *url.URL) string {
	msg := err.Error()
	if u == nil {
		return msg
	}
	if s := u.String(); s != "" {
		msg = strings.ReplaceAll(msg, s, redactURL(u))
	}
	if u.RawQuery != "" {
		msg = strings.ReplaceAll(msg, u.RawQuery, redactQuery(u.RawQuery))
	}
	if u.User != nil {
		if s := u.User.String(); s != "" {
			msg = strings.ReplaceAll(msg, s, redacted)
		}
	}
	return msg
}
