package registry

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Authenticator checks the credentials of HTTP basic authentication.
// Implementations must be safe for concurrent use.
type Authenticator interface {
	// Authenticate reports whether pass is the password of user.
	Authenticate(user, pass string) bool
}

// realm is the basic-auth realm the server announces.
const realm = "ferry"

// authenticate checks the request's basic-auth credentials when the server
// requires them (ROBUSTNESS row 31) and returns the user.
func (s *Server) authenticate(r *http.Request) (string, *apiError) {
	if s.opts.Auth == nil {
		return "", nil
	}
	user, pass, ok := r.BasicAuth()
	var e *apiError
	switch {
	case !ok:
		e = newError(http.StatusUnauthorized, codeUnauthorized, "authentication required: log in with a user name and password")
	case !s.opts.Auth.Authenticate(user, pass):
		e = newError(http.StatusUnauthorized, codeUnauthorized, "invalid user name or password")
	default:
		return user, nil
	}
	return "", e.withHeader("WWW-Authenticate", `Basic realm="`+realm+`"`)
}

// authorize asks Options.Authorize whether user may do action on rt.
func (s *Server) authorize(user string, rt route, action Action) *apiError {
	if s.opts.Authorize == nil || rt.kind == routeBase {
		return nil
	}
	if s.opts.Authorize(user, rt.name, action) {
		return nil
	}
	what := "the catalog"
	if rt.name != "" {
		what = "repository " + rt.name
	}
	return newError(http.StatusForbidden, codeDenied, "user %q may not %s %s", user, action, what)
}

// htpasswd is an Authenticator over bcrypt entries of an htpasswd file.
type htpasswd struct {
	users map[string][]byte
	dummy []byte // compared for unknown users, so that timing does not tell them apart

	// Successful checks are remembered for a while, keyed by an HMAC of
	// the credentials under a per-process key, so that a push of many
	// requests does not run bcrypt for each one. Failures are never
	// cached: every wrong guess pays the full bcrypt cost.
	key   []byte
	mu    sync.Mutex
	cache map[[sha256.Size]byte]time.Time
}

const (
	authCacheTTL  = 5 * time.Minute
	authCacheSize = 1024
)

// LoadHtpasswd reads an htpasswd file of bcrypt entries ("user:$2y$…", as
// `htpasswd -B` writes and distribution's registry reads). Blank lines
// and lines starting with '#' are skipped. Any other kind of hash (MD5
// "$apr1$", "{SHA}", crypt, plain text) is an error naming the file, the
// line and the user, never the hash.
func LoadHtpasswd(path string) (Authenticator, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading htpasswd file: %w", err)
	}
	return parseHtpasswd(path, data)
}

func parseHtpasswd(path string, data []byte) (*htpasswd, error) {
	h := &htpasswd{users: map[string][]byte{}, cache: map[[sha256.Size]byte]time.Time{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	cost := bcrypt.DefaultCost
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("htpasswd file %s, line %d: expected user:hash", path, n)
		}
		if _, dup := h.users[user]; dup {
			return nil, fmt.Errorf("htpasswd file %s, line %d: user %q appears twice", path, n, user)
		}
		if !strings.HasPrefix(hash, "$2y$") && !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$") {
			return nil, fmt.Errorf("htpasswd file %s, line %d: user %q: the password hash is %s, only bcrypt ($2y$, $2a$, $2b$) is supported: recreate the entry with `htpasswd -B`", path, n, user, hashKind(hash))
		}
		c, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			return nil, fmt.Errorf("htpasswd file %s, line %d: user %q: malformed bcrypt hash: %v", path, n, user, err)
		}
		cost = c
		h.users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading htpasswd file %s: %w", path, err)
	}
	if len(h.users) == 0 {
		return nil, fmt.Errorf("htpasswd file %s has no users", path)
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("ferry dummy password"), cost)
	if err != nil {
		return nil, err
	}
	h.dummy = dummy
	h.key = make([]byte, 32)
	_, _ = rand.Read(h.key)
	return h, nil
}

// hashKind names the kind of a non-bcrypt htpasswd hash for messages.
func hashKind(hash string) string {
	switch {
	case strings.HasPrefix(hash, "$apr1$"):
		return "MD5 ($apr1$)"
	case strings.HasPrefix(hash, "{SHA}"):
		return "SHA-1 ({SHA})"
	case strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$6$"), strings.HasPrefix(hash, "$1$"):
		return "crypt (" + hash[:3] + ")"
	case hash == "":
		return "empty"
	}
	return "crypt or plain text"
}

// Authenticate implements Authenticator.
func (h *htpasswd) Authenticate(user, pass string) bool {
	mac := hmac.New(sha256.New, h.key)
	mac.Write([]byte(user))
	mac.Write([]byte{0})
	mac.Write([]byte(pass))
	var key [sha256.Size]byte
	copy(key[:], mac.Sum(nil))
	now := time.Now()
	h.mu.Lock()
	exp, ok := h.cache[key]
	h.mu.Unlock()
	if ok && now.Before(exp) {
		return true
	}
	hash, known := h.users[user]
	if !known {
		_ = bcrypt.CompareHashAndPassword(h.dummy, []byte(pass))
		return false
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return false
	}
	h.mu.Lock()
	if len(h.cache) >= authCacheSize {
		for k, e := range h.cache {
			if !now.Before(e) || len(h.cache) >= authCacheSize {
				delete(h.cache, k)
			}
		}
	}
	h.cache[key] = now.Add(authCacheTTL)
	h.mu.Unlock()
	return true
}
