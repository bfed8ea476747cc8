package regtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// RekorLog is a transparency log on 127.0.0.1 that answers the part of
// Rekor's v1 REST API that signing tools use: adding a hashedrekord v0.0.1
// entry (POST /api/v1/log/entries), reading one back
// (GET /api/v1/log/entries/{id}) and the log's public key
// (GET /api/v1/log/publicKey). Rekor itself needs Trillian and a database;
// this log keeps its entries in memory and has no Merkle tree, so its
// entries carry a signed entry timestamp (SET) but no inclusion proof.
//
// It checks a proposed entry as Rekor does (the signature must verify
// over the hash with the given key or certificate), stores the entry's
// canonical JSON as its body, names it by RFC 6962's leaf hash of that
// body, answers 409 with the entry's Location for a duplicate, and signs
// each SET with its own ECDSA P-256 key over the canonical JSON of
// {body, integratedTime, logID, logIndex}, as Rekor does.
type RekorLog struct {
	// URL is the log's base URL, "http://127.0.0.1:port".
	URL string
	// PublicKey is the log's PEM public key: what cosign reads from the
	// file SIGSTORE_REKOR_PUBLIC_KEY names.
	PublicKey []byte

	srv   *httptest.Server
	key   *ecdsa.PrivateKey
	logID string

	mu       sync.Mutex
	requests int
	bodies   [][]byte       // by log index
	byUUID   map[string]int // leaf hash (hex) → log index
}

// rekorTreeID is the tree ID that leads the entry IDs the log returns.
const rekorTreeID = "2b7a6b5e1d0c9f8e"

// Rekor starts a RekorLog, closed in t.Cleanup.
func Rekor(t testing.TB) *RekorLog {
	t.Helper()
	l, err := NewRekor()
	if err != nil {
		t.Fatalf("regtest: starting a Rekor log: %v", err)
	}
	t.Cleanup(l.Close)
	return l
}

// NewRekor starts a RekorLog for callers without a testing.TB (a
// testscript setup); Close stops it.
func NewRekor() (*RekorLog, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(key.Public())
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	l := &RekorLog{PublicKey: pub, key: key, logID: hex.EncodeToString(sum[:]), byUUID: map[string]int{}}
	l.srv = httptest.NewServer(http.HandlerFunc(l.serve))
	l.URL = l.srv.URL
	return l, nil
}

// Close stops the server.
func (l *RekorLog) Close() { l.srv.Close() }

// Requests is how many requests the log has received.
func (l *RekorLog) Requests() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.requests
}

// Entries is how many entries the log holds.
func (l *RekorLog) Entries() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.bodies)
}

// LogID is the log's ID: the hex SHA-256 of its public key (DER).
func (l *RekorLog) LogID() string { return l.logID }

func (l *RekorLog) serve(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	l.requests++
	l.mu.Unlock()
	const entries = "/api/v1/log/entries"
	switch {
	case r.Method == http.MethodPost && r.URL.Path == entries:
		l.create(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, entries+"/"):
		l.get(w, strings.TrimPrefix(r.URL.Path, entries+"/"))
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/log/publicKey":
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(l.PublicKey)
	default:
		rekorError(w, http.StatusNotFound, "path "+r.URL.Path+" was not found")
	}
}

// create adds a proposed hashedrekord entry.
func (l *RekorLog) create(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		rekorError(w, http.StatusBadRequest, err.Error())
		return
	}
	body, err := canonicalHashedRekord(raw)
	if err != nil {
		rekorError(w, http.StatusBadRequest, err.Error())
		return
	}
	leaf := sha256.Sum256(append([]byte{0}, body...))
	uuid := hex.EncodeToString(leaf[:])

	l.mu.Lock()
	index, exists := l.byUUID[uuid]
	if !exists {
		index = len(l.bodies)
		l.bodies = append(l.bodies, body)
		l.byUUID[uuid] = index
	}
	l.mu.Unlock()
	location := "/api/v1/log/entries/" + rekorTreeID + uuid
	if exists {
		w.Header().Set("Location", location)
		rekorError(w, http.StatusConflict, "an equivalent entry already exists in the transparency log with UUID "+uuid)
		return
	}
	w.Header().Set("Location", location)
	w.Header().Set("ETag", rekorTreeID+uuid)
	l.answer(w, http.StatusCreated, uuid, index, body)
}

// get answers one entry, by UUID or entry ID.
func (l *RekorLog) get(w http.ResponseWriter, id string) {
	uuid := id
	if len(id) == len(rekorTreeID)+64 {
		uuid = id[len(rekorTreeID):]
	}
	l.mu.Lock()
	index, ok := l.byUUID[uuid]
	var body []byte
	if ok {
		body = l.bodies[index]
	}
	l.mu.Unlock()
	if !ok {
		rekorError(w, http.StatusNotFound, "entry "+id+" not found")
		return
	}
	l.answer(w, http.StatusOK, uuid, index, body)
}

// answer writes {"<entry ID>": entry}, with a SET made now.
func (l *RekorLog) answer(w http.ResponseWriter, status int, uuid string, index int, body []byte) {
	signed := map[string]any{
		"body":           base64.StdEncoding.EncodeToString(body),
		"integratedTime": time.Now().Unix(),
		"logID":          l.logID,
		"logIndex":       index,
	}
	canonical, err := canonicalJSON(signed)
	if err != nil {
		rekorError(w, http.StatusInternalServerError, err.Error())
		return
	}
	sum := sha256.Sum256(canonical)
	set, err := ecdsa.SignASN1(rand.Reader, l.key, sum[:])
	if err != nil {
		rekorError(w, http.StatusInternalServerError, err.Error())
		return
	}
	signed["verification"] = map[string]any{"signedEntryTimestamp": set}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{rekorTreeID + uuid: signed})
}

// canonicalHashedRekord checks a proposed hashedrekord v0.0.1 entry as
// Rekor does and returns its canonical form: the hash, the signature and
// the key (re-encoded), nothing else. The schema is declared here again,
// not shared with the client in internal/signing, so that the log reads
// what a client sends on its own terms, as Rekor would.
func canonicalHashedRekord(raw []byte) ([]byte, error) {
	var e struct {
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
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("parsing the proposed entry: %v", err)
	}
	if e.Kind != "hashedrekord" || e.APIVersion != "0.0.1" {
		return nil, fmt.Errorf("kind %q version %q: this log takes hashedrekord 0.0.1 entries only", e.Kind, e.APIVersion)
	}
	algs := map[string]crypto.Hash{"sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512}
	h := e.Spec.Data.Hash
	alg, ok := algs[h.Algorithm]
	digest, err := hex.DecodeString(h.Value)
	if !ok || err != nil || len(digest) != alg.Size() {
		return nil, fmt.Errorf("invalid value for hash %s:%s", h.Algorithm, h.Value)
	}
	if len(e.Spec.Signature.Content) == 0 {
		return nil, fmt.Errorf("missing signature")
	}
	keyPEM, pub, err := canonicalKey(e.Spec.Signature.PublicKey.Content)
	if err != nil {
		return nil, err
	}
	v, err := signature.LoadVerifier(pub, alg)
	if err != nil {
		return nil, err
	}
	if err := v.VerifySignature(bytes.NewReader(e.Spec.Signature.Content), nil, options.WithDigest(digest)); err != nil {
		return nil, fmt.Errorf("verifying signature: %v", err)
	}
	return canonicalJSON(map[string]any{
		"apiVersion": "0.0.1",
		"kind":       "hashedrekord",
		"spec": map[string]any{
			"data": map[string]any{"hash": map[string]any{"algorithm": h.Algorithm, "value": h.Value}},
			"signature": map[string]any{
				"content":   e.Spec.Signature.Content,
				"publicKey": map[string]any{"content": keyPEM},
			},
		},
	})
}

// canonicalKey parses a PEM public key or certificate and returns it
// re-encoded, with its public key.
func canonicalKey(b []byte) ([]byte, crypto.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, nil, fmt.Errorf("the public key is not PEM")
	}
	if block.Type == "CERTIFICATE" {
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, err
		}
		out, err := cryptoutils.MarshalCertificateToPEM(cert)
		return out, cert.PublicKey, err
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(b)
	if err != nil {
		return nil, nil, err
	}
	out, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	return out, pub, err
}

// canonicalJSON writes v as RFC 8785 canonical JSON, for the values this
// log writes (maps, ASCII strings without escapes, byte strings in base64
// and small integers): encoding/json sorts map keys, and only HTML
// escaping and the final newline need turning off.
func canonicalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// rekorError writes Rekor's error answer, {"code": ..., "message": ...}.
func rekorError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"code": status, "message": msg})
}
