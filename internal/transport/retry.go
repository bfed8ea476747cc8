package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Retry is the policy for transient failures: connection errors and the
// statuses 408, 429, 500, 502, 503 and 504.
type Retry struct {
	// Attempts is the number of tries including the first; 1 disables
	// retries. Default 5.
	Attempts int
	// Base is the first backoff, doubled on each retry, with full jitter
	// (a random wait between zero and the backoff). Default 200ms.
	Base time.Duration
	// Cap bounds a single wait, Retry-After included: a server asking for
	// a longer wait gets its response returned instead. Default 60s.
	Cap time.Duration
}

// DefaultRetry returns the retry policy used when Options.Retry is zero:
// 5 attempts, 200ms first backoff, 60s longest wait.
func DefaultRetry() Retry {
	return Retry{Attempts: 5, Base: 200 * time.Millisecond, Cap: 60 * time.Second}
}

func (r Retry) withDefaults() Retry {
	d := DefaultRetry()
	if r.Attempts <= 0 {
		r.Attempts = d.Attempts
	}
	if r.Base <= 0 {
		r.Base = d.Base
	}
	if r.Cap <= 0 {
		r.Cap = d.Cap
	}
	return r
}

// backoff is the jittered wait before retry number n (1 for the first).
func (r Retry) backoff(n int) time.Duration {
	d := r.Cap
	if n-1 < 32 {
		if b := r.Base << (n - 1); b > 0 && b < r.Cap {
			d = b
		}
	}
	return rand.N(d + 1)
}

// retried sends req through the policy and sends it again after a transient
// failure (ROBUSTNESS rows 3, 4, 5). A request whose body cannot be
// replayed (no GetBody) is sent once. POST and PATCH, which are not
// idempotent, are retried only when the server cannot have acted on them:
// on 408, 429 and 503, and when the connection could not be made.
//
// Retry-After, in seconds or as an HTTP date, is waited for when it fits in
// Retry.Cap and before the context's deadline; otherwise the response is
// returned at once. Waits end when the context is cancelled, with its
// error. The last response is returned as is, with its body unread.
func (t *roundTripper) retried(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	idempotent := isIdempotent(req.Method)
	for attempt := 1; ; attempt++ {
		try := req
		if attempt > 1 && req.Body != nil && req.Body != http.NoBody {
			body, err := req.GetBody()
			if err != nil {
				return nil, fmt.Errorf("rewinding the body of %s %s to retry: %w", req.Method, redactURL(req.URL), err)
			}
			try = withHeaders(req)
			try.Body = body
		}
		resp, err := t.policed(try)
		if !replayable || attempt >= t.retry.Attempts || ctx.Err() != nil {
			return resp, err
		}
		var why string
		var wait time.Duration
		if err != nil {
			if !retryableError(err, idempotent) {
				return nil, err
			}
			why = redactError(err, req.URL)
			wait = t.retry.backoff(attempt)
		} else {
			if !retryableStatus(resp.StatusCode, idempotent) {
				return resp, nil
			}
			why = resp.Status
			wait = t.retry.backoff(attempt)
			if after, ok := RetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
				if after > t.retry.Cap {
					return resp, nil // the server wants more than we will wait
				}
				wait = max(wait, after)
			}
		}
		wait = min(wait, t.retry.Cap)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= wait {
			return resp, err // retrying could not finish in time
		}
		if resp != nil {
			discard(resp)
		}
		if t.debug != nil {
			t.debug(fmt.Sprintf("--- %s %s: %s; retrying in %s (attempt %d of %d)",
				req.Method, redactURL(req.URL), why, wait.Round(time.Millisecond), attempt+1, t.retry.Attempts))
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// sleep waits for d or until ctx is done, returning ctx.Err() then.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// discard reads a little of a response that will not be returned, so its
// connection can be reused, and closes it.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// RetryAfter parses a Retry-After value, delay-seconds or HTTP-date
// (RFC 9110 section 10.2.3), as a wait from now; a date in the past is zero.
func RetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(365*24*time.Hour/time.Second) {
			return 365 * 24 * time.Hour, true
		}
		return time.Duration(secs) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(at.Sub(now), 0), true
}

// isIdempotent reports the methods that may be repeated after the server
// may have acted on them (RFC 9110 section 9.2.2).
func isIdempotent(method string) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// retryableStatus reports the statuses worth another try.
func retryableStatus(code int, idempotent bool) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return true
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout:
		return idempotent
	}
	return false
}

// retryableError reports transient connection failures: resets, refused
// connections, early EOFs and timeouts. A refusal by the policy, a TLS
// failure, a cancelled context or anything unknown is final. For a request
// that is not idempotent, only a failure to connect is retried.
func retryableError(err error, idempotent bool) bool {
	var (
		pe         *PolicyError
		certErr    *tls.CertificateVerificationError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalid    x509.CertificateInvalidError
		recordErr  tls.RecordHeaderError
		alertErr   tls.AlertError
		opErr      *net.OpError
		dnsErr     *net.DNSError
		netErr     net.Error
		rootsError x509.SystemRootsError
	)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &pe), errors.As(err, &certErr), errors.As(err, &unknownCA),
		errors.As(err, &hostErr), errors.As(err, &invalid), errors.As(err, &recordErr),
		errors.As(err, &alertErr), errors.As(err, &rootsError):
		return false
	}
	if errors.As(err, &opErr) {
		switch opErr.Op {
		case "remote error", "local error": // TLS alerts
			return false
		case "dial":
			if errors.As(err, &dnsErr) {
				return dnsErr.IsTimeout || dnsErr.IsTemporary
			}
			return true // nothing was sent
		}
	}
	if !idempotent {
		return false
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT),
		errors.Is(err, syscall.ECONNREFUSED):
		return true
	case errors.As(err, &netErr) && netErr.Timeout():
		return true
	case errors.As(err, &dnsErr):
		return dnsErr.IsTimeout || dnsErr.IsTemporary
	case opErr != nil:
		return true // another failure reading or writing the connection
	}
	return false
}
