package transport

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// debugLines collects what Options.Debug receives.
type debugLines struct {
	mu    sync.Mutex
	lines []string
}

func (d *debugLines) add(line string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lines = append(d.lines, line)
}

func (d *debugLines) text() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

// TestDebugRedactsCredentials is ROBUSTNESS row 15: with --debug on, no
// credential of the request, the response or a retry appears in the log,
// while the method, path and protocol parameters do.
func TestDebugRedactsCredentials(t *testing.T) {
	t.Parallel()
	secrets := []string{
		"bearer-secret", "cookie-secret", "hdr-token-secret", "user:pass", "pass@",
		"amz-sig-secret", "amz-cred-secret", "sas-sig-secret", "query-token-secret",
		"set-cookie-secret", "loc-sig-secret", "link-token-secret", "body-token-secret", "resp-token-secret",
	}
	srv, _ := server(t, false, func(w http.ResponseWriter, r *http.Request, n int) {
		switch r.URL.Path {
		case "/token":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"token":"body-token-secret","access_token":"body-token-secret"}`)
		case "/v2/_catalog":
			w.Header().Set("Link", `</v2/_catalog?n=10&last=app&token=link-token-secret>; rel="next"`)
			io.WriteString(w, `{"repositories":[]}`)
		default:
			if n == 0 {
				w.WriteHeader(http.StatusServiceUnavailable) // a retry line, too
				return
			}
			w.Header().Set("Set-Cookie", "sid=set-cookie-secret; HttpOnly")
			w.Header().Set("X-Auth-Token", "resp-token-secret")
			w.Header().Set("Location", "https://storage.example.net/b?X-Amz-Signature=loc-sig-secret&sig=sas-sig-secret")
			w.WriteHeader(http.StatusTemporaryRedirect)
		}
	})
	var log debugLines
	rt := newRT(t, Options{Host: hostOf(srv), Debug: log.add, Retry: fastRetry()})
	client := &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	u, _ := url.Parse(srv.URL)
	u.User = url.UserPassword("user", "pass")
	u.Path = blobPath
	u.RawQuery = "X-Amz-Signature=amz-sig-secret&X-Amz-Credential=amz-cred-secret&sig=sas-sig-secret&token=query-token-secret&digest=sha256:abc"
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u.String(), nil)
	req.Header.Set("Authorization", "Bearer bearer-secret")
	req.Header.Set("Cookie", "session=cookie-secret")
	req.Header.Set("X-Registry-Token", "hdr-token-secret")
	for _, r := range []*http.Request{req, mustRequest(t, srv.URL+"/token?scope=repository:app:pull&service=reg"), mustRequest(t, srv.URL+"/v2/_catalog?n=10")} {
		resp, err := client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	text := log.text()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("debug log contains %q:\n%s", s, text)
		}
	}
	for _, want := range []string{
		"--> GET http://REDACTED@" + hostOf(srv) + blobPath + "?",
		"digest=sha256:abc",
		"Authorization: Bearer <redacted>",
		"<-- 307 Temporary Redirect (",
		"retrying",
		"scope=repository:app:pull&service=reg",
		"<-- 200 OK (",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("debug log lacks %q:\n%s", want, text)
		}
	}
}

func mustRequest(t *testing.T, url string) *http.Request {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestDebugLogsRefusals: a refused request is logged with its reason and a
// redacted URL.
func TestDebugLogsRefusals(t *testing.T) {
	t.Parallel()
	var log debugLines
	rt := newRT(t, Options{Host: "registry.example.com", Debug: log.add, Base: newFakeNet()})
	req := mustRequest(t, "http://169.254.169.254/latest/meta-data/?token=query-token-secret")
	if _, err := rt.RoundTrip(req); err == nil {
		t.Fatal("request to the metadata address was sent")
	}
	text := log.text()
	if !strings.Contains(text, "<-- error") || !strings.Contains(text, "refusing GET request to 169.254.169.254") {
		t.Errorf("refusal not logged:\n%s", text)
	}
	if strings.Contains(text, "query-token-secret") {
		t.Errorf("debug log contains the token:\n%s", text)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://u:p@r.example.com/v2/a/tags/list?n=100&last=x":         "https://REDACTED@r.example.com/v2/a/tags/list?n=100&last=x",
		"https://b.s3.amazonaws.com/k?X-Amz-Security-Token=t&x-id=Get":  "https://b.s3.amazonaws.com/k?X-Amz-Security-Token=REDACTED&x-id=REDACTED",
		"https://a.blob.core.windows.net/c/b?sv=1&se=2&sp=r&sig=s%2B":   "https://a.blob.core.windows.net/c/b?sv=REDACTED&se=REDACTED&sp=REDACTED&sig=REDACTED",
		"/v2/a/blobs/uploads/1?_state=s&digest=sha256:x#frag":           "/v2/a/blobs/uploads/1?_state=REDACTED&digest=sha256:x",
		"https://auth.docker.io/token?scope=repository:a:pull&password": "https://auth.docker.io/token?scope=repository:a:pull&password=REDACTED",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := redactURL(u); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
