package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Transparency log entries, the way cosign records them: a signature is
// added to a Rekor log as a hashedrekord entry (the SHA-256 of the payload,
// the signature, and the public key or certificate), and what the log
// answers is kept beside the signature, in the layer's
// dev.sigstore.cosign/bundle annotation. Verifying that annotation needs
// only the log's public key: it carries the log's signed promise to
// include the entry (the SignedEntryTimestamp, SET).
//
// Rekor's v1 REST API: https://github.com/sigstore/rekor/blob/main/openapi.yaml

// DefaultRekorURL is the public Rekor instance, cosign's default.
const DefaultRekorURL = "https://rekor.sigstore.dev"

// AnnotationBundle holds a signature's transparency log entry: cosign's
// "bundle", {"SignedEntryTimestamp": ..., "Payload": {"body", "integratedTime",
// "logIndex", "logID"}}.
const AnnotationBundle = "dev.sigstore.cosign/bundle"

// maxRekorResponse caps what is read of a Rekor response (an entry with
// its inclusion proof is a few kilobytes).
const maxRekorResponse = 1 << 20

// maxSafeInteger is the largest integer JSON canonicalization (RFC 8785)
// writes as plain digits; log indexes and times are far below it.
const maxSafeInteger = 1<<53 - 1

// TLogEntry is where a signature is recorded in a transparency log.
type TLogEntry struct {
	// LogIndex is the entry's position in the log.
	LogIndex int64 `json:"logIndex"`
	// IntegratedTime is when the log added the entry, in Unix seconds.
	IntegratedTime int64 `json:"integratedTime"`
	// LogID names the log: the hex SHA-256 of its public key (DER).
	LogID string `json:"logID"`
}

// Rekor adds signatures to a Rekor transparency log, through its v1 REST
// API.
type Rekor struct {
	base   *url.URL
	client *http.Client
}

// ErrRekorURL is a Rekor URL that cannot be used.
var ErrRekorURL = errors.New("invalid Rekor URL")

// NewRekor returns a client for the Rekor instance at rawURL
// ("https://rekor.sigstore.dev"; a path prefix is kept) that sends its
// requests through the RoundTripper transport returns for its host[:port].
func NewRekor(rawURL string, transport func(host string) (http.RoundTripper, error)) (*Rekor, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w %q: expected http(s)://host[:port][/path], e.g. %s", ErrRekorURL, rawURL, DefaultRekorURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	rt, err := transport(u.Host)
	if err != nil {
		return nil, err
	}
	return &Rekor{
		base: u,
		client: &http.Client{
			Transport: rt,
			// The API does not redirect; an entry is never sent elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// String is the log's URL.
func (r *Rekor) String() string { return r.base.String() }

// hashedRekord is a hashedrekord v0.0.1 entry: the SHA-256 of a payload,
// its signature, and the PEM public key or certificate that made it.
// https://github.com/sigstore/rekor/blob/main/pkg/types/hashedrekord/v0.0.1/hashedrekord_v0_0_1_schema.json
type hashedRekord struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Spec       struct {
		Data struct {
			Hash struct {
				Algorithm string `json:"algorithm"`
				Value     string `json:"value"`
			} `json:"hash"`
		} `json:"data"`
		Signature struct {
			Content   []byte `json:"content"`
			PublicKey struct {
				Content []byte `json:"content"`
			} `json:"publicKey"`
		} `json:"signature"`
	} `json:"spec"`
}

// newHashedRekord is the entry cosign proposes for a signature of payload
// by the key (or certificate) in keyPEM.
func newHashedRekord(payload, sig, keyPEM []byte) hashedRekord {
	var e hashedRekord
	e.APIVersion, e.Kind = "0.0.1", "hashedrekord"
	sum := sha256.Sum256(payload)
	e.Spec.Data.Hash.Algorithm, e.Spec.Data.Hash.Value = "sha256", hex.EncodeToString(sum[:])
	e.Spec.Signature.Content = sig
	e.Spec.Signature.PublicKey.Content = keyPEM
	return e
}

// rekorBundle is the dev.sigstore.cosign/bundle annotation, in cosign's
// field names and order.
type rekorBundle struct {
	SignedEntryTimestamp []byte
	Payload              rekorPayload
}

// rekorPayload is what the log signs in a SET.
type rekorPayload struct {
	Body           string `json:"body"` // the base64 entry
	IntegratedTime int64  `json:"integratedTime"`
	LogIndex       int64  `json:"logIndex"`
	LogID          string `json:"logID"`
}

// canonical returns the bytes the log signed: the payload's canonical
// JSON (RFC 8785), which Rekor signs and cosign verifies. The fields are
// checked first, and for such values canonical JSON is simply the members
// in key order, without spaces: the strings are base64 and hex (nothing to
// escape), the integers below 2^53 (written as plain digits).
func (p rekorPayload) canonical() ([]byte, error) {
	body, err := base64.StdEncoding.DecodeString(p.Body)
	if err != nil || base64.StdEncoding.EncodeToString(body) != p.Body || len(body) == 0 {
		return nil, errors.New("its body is not base64")
	}
	if id, err := hex.DecodeString(p.LogID); err != nil || hex.EncodeToString(id) != p.LogID || len(id) == 0 {
		return nil, fmt.Errorf("its log ID %q is not lowercase hex", p.LogID)
	}
	if p.IntegratedTime < 0 || p.IntegratedTime > maxSafeInteger || p.LogIndex < 0 || p.LogIndex > maxSafeInteger {
		return nil, fmt.Errorf("its log index %d or integrated time %d is out of range", p.LogIndex, p.IntegratedTime)
	}
	return fmt.Appendf(nil, `{"body":"%s","integratedTime":%d,"logID":"%s","logIndex":%d}`,
		p.Body, p.IntegratedTime, p.LogID, p.LogIndex), nil
}

// entry is the payload as a TLogEntry.
func (p rekorPayload) entry() *TLogEntry {
	return &TLogEntry{LogIndex: p.LogIndex, IntegratedTime: p.IntegratedTime, LogID: p.LogID}
}

// logEntry is one entry as the API returns it (LogEntryAnon).
type logEntry struct {
	Body           string  `json:"body"`
	IntegratedTime *int64  `json:"integratedTime"`
	LogID          *string `json:"logID"`
	LogIndex       *int64  `json:"logIndex"`
	Verification   *struct {
		SignedEntryTimestamp []byte `json:"signedEntryTimestamp"`
	} `json:"verification"`
}

// upload adds the signature sig of payload by keyPEM (a PEM public key or
// certificate) to the log, and returns the entry and the bundle annotation
// that records it. An entry the log already holds (the same signature
// uploaded before, as a deterministic Ed25519 signature is) is fetched
// instead.
func (r *Rekor) upload(ctx context.Context, payload, sig, keyPEM []byte, pub crypto.PublicKey) (*TLogEntry, []byte, error) {
	body, err := json.Marshal(newHashedRekord(payload, sig, keyPEM))
	if err != nil {
		return nil, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.endpoint(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	raw, status, header, err := r.do(req)
	if err != nil {
		return nil, nil, err
	}
	want := ""
	switch status {
	case http.StatusCreated:
	case http.StatusConflict:
		// Location names the existing entry: /api/v1/log/entries/<id>.
		want = path.Base(header.Get("Location"))
		if !isEntryID(want) {
			return nil, nil, fmt.Errorf("%s says the entry exists, but names it %q", r, header.Get("Location"))
		}
		if raw, err = r.get(ctx, want); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, r.apiError("refused the entry", status, raw)
	}
	p, set, err := parseEntries(raw, want)
	if err != nil {
		return nil, nil, fmt.Errorf("%s answered with %v", r, err)
	}
	if problem := checkEntryBody(p.Body, payload, sig, pub); problem != "" {
		return nil, nil, fmt.Errorf("%s answered with an entry that does not record this signature: %s", r, problem)
	}
	ann, err := json.Marshal(rekorBundle{SignedEntryTimestamp: set, Payload: p})
	if err != nil {
		return nil, nil, err
	}
	return p.entry(), ann, nil
}

// endpoint is the URL of the log's entries.
func (r *Rekor) endpoint() string { return r.base.JoinPath("api/v1/log/entries").String() }

// get fetches the entry id.
func (r *Rekor) get(ctx context.Context, id string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.endpoint()+"/"+id, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	raw, status, _, err := r.do(req)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, r.apiError("did not return the existing entry "+id, status, raw)
	}
	return raw, nil
}

// do sends req and reads the response, up to maxRekorResponse.
func (r *Rekor) do(req *http.Request) ([]byte, int, http.Header, error) {
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxRekorResponse+1))
	if err != nil {
		return nil, 0, nil, fmt.Errorf("reading the answer of %s: %w", r, err)
	}
	if len(raw) > maxRekorResponse {
		return nil, 0, nil, fmt.Errorf("%s answered %s %s with more than %d bytes", r, req.Method, req.URL.Path, maxRekorResponse)
	}
	return raw, resp.StatusCode, resp.Header, nil
}

// apiError describes a failed request, what went wrong, with the log's
// own message when it sent one ({"code": ..., "message": ...}).
func (r *Rekor) apiError(what string, status int, raw []byte) error {
	var e struct {
		Message string `json:"message"`
	}
	msg := http.StatusText(status)
	if json.Unmarshal(raw, &e) == nil && e.Message != "" {
		msg = e.Message
	}
	return fmt.Errorf("%s %s: %d %s", r, what, status, msg)
}

// isEntryID reports whether s names an entry: its UUID (64 hex digits),
// optionally after its tree's ID (16 more).
func isEntryID(s string) bool {
	if len(s) != 64 && len(s) != 80 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// parseEntries reads the one entry of an API answer ({"<id>": entry})
// and checks that its ID is the hash of its body, as the log computes it
// (RFC 6962's leaf hash), and, when want is set, that it is that entry.
func parseEntries(raw []byte, want string) (rekorPayload, []byte, error) {
	var entries map[string]logEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		return rekorPayload{}, nil, fmt.Errorf("an unreadable entry: %v", err)
	}
	if len(entries) != 1 {
		return rekorPayload{}, nil, fmt.Errorf("%d entries, expected one", len(entries))
	}
	var id string
	var e logEntry
	for k, v := range entries { // the only one
		id, e = k, v
	}
	if e.IntegratedTime == nil || e.LogID == nil || e.LogIndex == nil || e.Verification == nil || len(e.Verification.SignedEntryTimestamp) == 0 {
		return rekorPayload{}, nil, fmt.Errorf("entry %s without its index, time, log ID or signed entry timestamp", id)
	}
	p := rekorPayload{Body: e.Body, IntegratedTime: *e.IntegratedTime, LogIndex: *e.LogIndex, LogID: *e.LogID}
	if _, err := p.canonical(); err != nil {
		return rekorPayload{}, nil, fmt.Errorf("entry %s: %v", id, err)
	}
	body, _ := base64.StdEncoding.DecodeString(p.Body)
	leaf := sha256.Sum256(append([]byte{0}, body...))
	uuid := hex.EncodeToString(leaf[:])
	if !isEntryID(id) || !strings.HasSuffix(id, uuid) || want != "" && !strings.HasSuffix(want, uuid) {
		return rekorPayload{}, nil, fmt.Errorf("entry %s, whose body hashes to %s", id, uuid)
	}
	return p, e.Verification.SignedEntryTimestamp, nil
}

// checkEntryBody checks that a base64 entry is a hashedrekord of this
// signature: the SHA-256 of payload, sig, and a key or certificate whose
// public key is pub. It returns what does not match.
func checkEntryBody(b64 string, payload, sig []byte, pub crypto.PublicKey) string {
	body, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "its body is not base64"
	}
	if err := checkDuplicateKeys(body); err != nil {
		return "its body is malformed: " + err.Error()
	}
	var e hashedRekord
	if err := json.Unmarshal(body, &e); err != nil {
		return "its body is malformed: " + err.Error()
	}
	if e.Kind != "hashedrekord" || e.APIVersion != "0.0.1" {
		return fmt.Sprintf("it is a %q %q entry, not a hashedrekord 0.0.1 entry of a signature", e.Kind, e.APIVersion)
	}
	sum := sha256.Sum256(payload)
	if h := e.Spec.Data.Hash; h.Algorithm != "sha256" || h.Value != hex.EncodeToString(sum[:]) {
		return fmt.Sprintf("it records the hash %s:%s, not this payload's sha256:%x", h.Algorithm, h.Value, sum)
	}
	if !bytes.Equal(e.Spec.Signature.Content, sig) {
		return "it records another signature"
	}
	key, err := pemPublicKey(e.Spec.Signature.PublicKey.Content)
	if err != nil {
		return "its public key is unusable: " + err.Error()
	}
	if cryptoutils.EqualKeys(key, pub) != nil {
		return "it records another signer's key"
	}
	return ""
}

// pemPublicKey is the public key in a PEM public key or certificate.
func pemPublicKey(b []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not PEM")
	}
	if block.Type == "CERTIFICATE" {
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		return cert.PublicKey, nil
	}
	return cryptoutils.UnmarshalPEMToPublicKey(b)
}

// TLogPolicy says how signatures' transparency log entries are checked:
// offline, with the log's public key, as cosign verify does with
// SIGSTORE_REKOR_PUBLIC_KEY set.
type TLogPolicy struct {
	key     crypto.PublicKey
	keyName string
	logID   string
	// Require rejects signatures that have no log entry; otherwise only
	// the entries there are must verify.
	Require bool
}

// NewTLogPolicy reads the log's PEM public key; name names it in messages.
func NewTLogPolicy(name string, keyPEM []byte, require bool) (*TLogPolicy, error) {
	key, err := LoadPublicKey(name, keyPEM)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKey, name, err)
	}
	sum := sha256.Sum256(der)
	return &TLogPolicy{key: key, keyName: name, logID: hex.EncodeToString(sum[:]), Require: require}, nil
}

// check checks the log entry in a signature's bundle annotation (ann,
// empty when there is none): the log's signature over it, the log it
// names, and that it records this signature of payload by pub. It
// returns the entry, or what is wrong; a missing entry is wrong only when
// one is required.
func (p *TLogPolicy) check(ann string, payload, sig []byte, pub crypto.PublicKey) (*TLogEntry, string) {
	if ann == "" {
		if p.Require {
			return nil, "it has no transparency log entry (no " + AnnotationBundle + " annotation; sign with --tlog-upload)"
		}
		return nil, ""
	}
	if len(ann) > MaxPayload {
		return nil, fmt.Sprintf("its transparency log entry is %d bytes, over the limit of %d", len(ann), MaxPayload)
	}
	if err := checkDuplicateKeys([]byte(ann)); err != nil {
		return nil, "its transparency log entry is malformed: " + err.Error()
	}
	var b rekorBundle
	if err := json.Unmarshal([]byte(ann), &b); err != nil {
		return nil, "its transparency log entry is malformed: " + err.Error()
	}
	signed, err := b.Payload.canonical()
	if err != nil {
		return nil, "its transparency log entry is malformed: " + err.Error()
	}
	if b.Payload.LogID != p.logID {
		return nil, fmt.Sprintf("its transparency log entry is from another log (ID %s), not the one %s is the key of (ID %s)", b.Payload.LogID, p.keyName, p.logID)
	}
	if !verifySET(p.key, b.SignedEntryTimestamp, signed) {
		return nil, fmt.Sprintf("its transparency log entry's signed entry timestamp does not verify with %s (the entry was altered)", p.keyName)
	}
	if problem := checkEntryBody(b.Payload.Body, payload, sig, pub); problem != "" {
		return nil, fmt.Sprintf("its transparency log entry (index %d) does not match the signature: %s", b.Payload.LogIndex, problem)
	}
	return b.Payload.entry(), ""
}

// verifySET reports whether set is the log's signature, by key, over the
// canonical payload: ECDSA over its SHA-256 as Rekor signs it (or Ed25519
// over the bytes, for a log with such a key).
func verifySET(key crypto.PublicKey, set, canonical []byte) bool {
	v, err := signature.LoadVerifier(key, crypto.SHA256)
	return err == nil && v.VerifySignature(bytes.NewReader(set), bytes.NewReader(canonical)) == nil
}

// bundleEntry reads the entry in a bundle annotation that records this
// signature of payload by pub, without checking the log's signature (for
// which the log's key is needed): what signing needs to tell that a
// signature was logged already.
func bundleEntry(ann string, payload, sig []byte, pub crypto.PublicKey) *TLogEntry {
	var b rekorBundle
	if ann == "" || json.Unmarshal([]byte(ann), &b) != nil {
		return nil
	}
	if _, err := b.Payload.canonical(); err != nil || checkEntryBody(b.Payload.Body, payload, sig, pub) != "" {
		return nil
	}
	return b.Payload.entry()
}
