package signing

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/tuf"

	"github.com/ferry-oci/ferry/internal/regtest"
)

// rekorClient is a client of the test log.
func rekorClient(t testing.TB, url string) *Rekor {
	t.Helper()
	r, err := NewRekor(url, func(string) (http.RoundTripper, error) { return http.DefaultTransport, nil })
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tlogPolicy is a policy that trusts the test log l.
func tlogPolicy(t testing.TB, l *regtest.RekorLog, require bool) *TLogPolicy {
	t.Helper()
	p, err := NewTLogPolicy("rekor.pub", l.PublicKey, require)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sigLayers returns the annotations of the layers of d's signature image.
func sigLayers(t testing.TB, ref string, d digest.Digest) []map[string]string {
	t.Helper()
	m, err := openSource(t, parseRef(t, ref)).Manifest(context.Background(), SignatureTag(d))
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for _, l := range m.Layers {
		out = append(out, l.Annotations)
	}
	return out
}

// keysOf lists a JSON object's keys, sorted.
func keysOf(t testing.TB, raw []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return sortedKeys(m)
}

// Signing sends nothing to the log unless asked; asked, it adds one
// entry per signature and stores it in cosign's bundle annotation.
func TestSignTLogUpload(t *testing.T) {
	s := mustTestSigner(t)
	log := regtest.Rekor(t)
	endpoints(t, func(t *testing.T, ref string, d digest.Digest) {
		before := log.Requests()
		res := sign(t, ref, s, SignOptions{})
		if n := log.Requests() - before; n != 0 || res[0].TLog != nil {
			t.Fatalf("signing without a log sent %d requests to it (entry %+v)", n, res[0].TLog)
		}
		if ann := sigLayers(t, ref, d)[0]; ann[AnnotationBundle] != "" {
			t.Fatalf("a signature made without a log has a bundle: %s", ann[AnnotationBundle])
		}

		entries := log.Entries()
		res = sign(t, ref, s, SignOptions{TLog: rekorClient(t, log.URL), Annotations: map[string]string{"logged": "yes"}})
		if log.Entries() != entries+1 || res[0].TLog == nil || res[0].TLog.LogIndex != int64(entries) || res[0].TLog.LogID != log.LogID() {
			t.Fatalf("signing with the log: %d entries (had %d), result %+v", log.Entries(), entries, res[0].TLog)
		}
		layers := sigLayers(t, ref, d)
		if len(layers) != 2 {
			t.Fatalf("%d signature layers, want 2", len(layers))
		}
		raw := []byte(layers[1][AnnotationBundle])
		if got := keysOf(t, raw); !slices.Equal(got, []string{"Payload", "SignedEntryTimestamp"}) {
			t.Fatalf("bundle %s has the keys %v", raw, got)
		}
		var b struct {
			SignedEntryTimestamp []byte
			Payload              json.RawMessage
		}
		if err := json.Unmarshal(raw, &b); err != nil || len(b.SignedEntryTimestamp) == 0 {
			t.Fatalf("bundle %s: %v", raw, err)
		}
		if got := keysOf(t, b.Payload); !slices.Equal(got, []string{"body", "integratedTime", "logID", "logIndex"}) {
			t.Fatalf("bundle payload %s has the keys %v", b.Payload, got)
		}
		var p rekorPayload
		json.Unmarshal(b.Payload, &p)
		body, _ := base64.StdEncoding.DecodeString(p.Body)
		var e hashedRekord
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("entry body %s: %v", body, err)
		}
		sum := sha256.Sum256(res[0].Payload)
		if e.Kind != "hashedrekord" || e.Spec.Data.Hash.Value != hex.EncodeToString(sum[:]) || b64(e.Spec.Signature.Content) != layers[1][AnnotationSignature] {
			t.Errorf("the entry does not record the signature: %s", body)
		}

		// Signing the same payload again: the logged signature is there,
		// nothing is sent.
		requests := log.Requests()
		again := sign(t, ref, s, SignOptions{TLog: rekorClient(t, log.URL), Annotations: map[string]string{"logged": "yes"}})
		if !again[0].Existing || again[0].TLog == nil || again[0].TLog.LogIndex != res[0].TLog.LogIndex || log.Requests() != requests {
			t.Errorf("re-signing a logged signature: %+v, entry %+v, %d requests", again[0], again[0].TLog, log.Requests()-requests)
		}
	})
}

// A signature signed earlier without the log is signed and logged anew
// when the log is asked for, as cosign appends one.
func TestSignTLogAfterOffline(t *testing.T) {
	s := mustTestSigner(t)
	log := regtest.Rekor(t)
	ref, d := registryImage(t, regtest.GGCR(t, nil), "offline-first")
	sign(t, ref, s, SignOptions{})
	res := sign(t, ref, s, SignOptions{TLog: rekorClient(t, log.URL)})
	if res[0].Existing || res[0].TLog == nil || log.Entries() != 1 {
		t.Fatalf("logging an offline signature: %+v, %d entries", res[0], log.Entries())
	}
	opts := keyOpts(s)
	opts.TLog = tlogPolicy(t, log, true)
	got, err := verify(t, ref, opts)
	if err != nil || len(got[0].Signatures) != 1 || got[0].Signatures[0].TLog == nil {
		t.Fatalf("with --require-tlog: %+v, %v", got, err)
	}
	if n := len(sigLayers(t, ref, d)); n != 2 {
		t.Errorf("%d signature layers, want 2", n)
	}
}

// cosign's own library reads ferry's bundle annotation and verifies it
// offline with the log's key, the way cosign verify --offline does with
// SIGSTORE_REKOR_PUBLIC_KEY.
func TestTLogBundleVerifiesInCosign(t *testing.T) {
	s := mustTestSigner(t)
	log := regtest.Rekor(t)
	ref, d := registryImage(t, regtest.GGCR(t, nil), "cosign-bundle")
	sign(t, ref, s, SignOptions{TLog: rekorClient(t, log.URL)})

	keys := cosign.NewTrustedTransparencyLogPubKeys()
	if err := keys.AddTransparencyLogPubKey(log.PublicKey, tuf.Active); err != nil {
		t.Fatal(err)
	}
	if _, ok := keys.Keys[log.LogID()]; !ok {
		t.Fatalf("cosign computes another log ID for the test log than %s", log.LogID())
	}
	verifier, err := signature.LoadVerifier(s.PublicKey(), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	named, err := name.ParseReference(strings.Split(ref, ":v1")[0]+"@"+string(d), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	co := &cosign.CheckOpts{
		SigVerifier:   verifier,
		RekorPubKeys:  &keys,
		ClaimVerifier: cosign.SimpleClaimVerifier,
		Offline:       true,
	}
	sigs, bundleVerified, err := cosign.VerifyImageSignatures(context.Background(), named, co)
	if err != nil || !bundleVerified || len(sigs) != 1 {
		t.Fatalf("cosign: %d signatures, bundle verified %v: %v", len(sigs), bundleVerified, err)
	}

	// And cosign rejects it with another log's key.
	other := cosign.NewTrustedTransparencyLogPubKeys()
	if err := other.AddTransparencyLogPubKey(regtest.Rekor(t).PublicKey, tuf.Active); err != nil {
		t.Fatal(err)
	}
	co.RekorPubKeys = &other
	if _, _, err := cosign.VerifyImageSignatures(context.Background(), named, co); err == nil {
		t.Fatal("cosign verifies the bundle with another log's key")
	}
}

// replaceBundle rewrites the bundle annotation of the signature layers of
// d (in a registry) with edit's result.
func replaceBundle(t *testing.T, ref string, d digest.Digest, edit func(layer int, ann string) string) {
	t.Helper()
	ctx := context.Background()
	ep := openEndpoint(t, parseRef(t, ref))
	m, err := readSigManifest(ctx, ep, d)
	if err != nil {
		t.Fatal(err)
	}
	img, err := loadSigImage(ctx, ep, m)
	if err != nil {
		t.Fatal(err)
	}
	for i := range img.layers {
		img.layers[i].Annotations[AnnotationBundle] = edit(i, img.layers[i].Annotations[AnnotationBundle])
	}
	first := img.layers[0]
	payload, err := ep.FetchBlob(ctx, first.Digest, first.Size, MaxPayload)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.write(ctx, ep, payload, SignatureTag(d)); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyTLog(t *testing.T) {
	s := mustTestSigner(t)
	log := regtest.Rekor(t)
	reg := regtest.GGCR(t, nil)
	tlog := rekorClient(t, log.URL)
	withTLog := func(require bool) VerifyOptions {
		opts := keyOpts(s)
		opts.TLog = tlogPolicy(t, log, require)
		return opts
	}

	ref, d := registryImage(t, reg, "logged")
	res := sign(t, ref, s, SignOptions{TLog: tlog})
	got, err := verify(t, ref, withTLog(true))
	if err != nil {
		t.Fatal(err)
	}
	if e := got[0].Signatures[0].TLog; e == nil || *e != *res[0].TLog {
		t.Fatalf("verified entry %+v, want %+v", e, res[0].TLog)
	}
	// Offline, without the log's key, the entry is not read.
	if got, err := verify(t, ref, keyOpts(s)); err != nil || got[0].Signatures[0].TLog != nil {
		t.Fatalf("without a log key: %+v, %v", got, err)
	}

	// Another log's key.
	opts := keyOpts(s)
	opts.TLog = tlogPolicy(t, regtest.Rekor(t), false)
	_, err = verify(t, ref, opts)
	wantVerificationError(t, err, ref+"@"+string(d), "no valid signature", "from another log", log.LogID())

	// Not signed with the log: fine unless required.
	bare, bareDigest := registryImage(t, reg, "bare")
	sign(t, bare, s, SignOptions{})
	if _, err := verify(t, bare, withTLog(false)); err != nil {
		t.Errorf("a signature without an entry, entries not required: %v", err)
	}
	_, err = verify(t, bare, withTLog(true))
	wantVerificationError(t, err, bare+"@"+string(bareDigest), "no valid signature", "no transparency log entry", AnnotationBundle)

	// The entry's body altered: the log's signature no longer verifies.
	ref2, d2 := registryImage(t, reg, "tampered")
	sign(t, ref2, s, SignOptions{TLog: tlog})
	replaceBundle(t, ref2, d2, func(_ int, ann string) string {
		var b rekorBundle
		json.Unmarshal([]byte(ann), &b)
		body, _ := base64.StdEncoding.DecodeString(b.Payload.Body)
		b.Payload.Body = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(body), `"sha256"`, `"sha256" `, 1)))
		out, _ := json.Marshal(b)
		return string(out)
	})
	_, err = verify(t, ref2, withTLog(false))
	wantVerificationError(t, err, ref2, "signed entry timestamp does not verify with rekor.pub")
	// Without the log's key the signature itself still verifies.
	if _, err := verify(t, ref2, keyOpts(s)); err != nil {
		t.Errorf("offline: %v", err)
	}

	// A genuine entry, for another signature: moved from one image's
	// signature to another's, it records another payload's hash.
	ref3, d3 := registryImage(t, reg, "transplant")
	sign(t, ref3, s, SignOptions{TLog: tlog})
	moved := sigLayers(t, ref, d)[0][AnnotationBundle]
	replaceBundle(t, ref3, d3, func(int, string) string { return moved })
	_, err = verify(t, ref3, withTLog(false))
	wantVerificationError(t, err, ref3, "does not match the signature", "it records the hash sha256:", "not this payload's")

	// The same payload signed with two keys: each entry records its own
	// signature.
	ref4, d4 := registryImage(t, reg, "twice")
	sign(t, ref4, s, SignOptions{TLog: tlog})
	sign(t, ref4, newSigner(t), SignOptions{TLog: tlog})
	layers := sigLayers(t, ref4, d4)
	replaceBundle(t, ref4, d4, func(i int, _ string) string { return layers[1-i][AnnotationBundle] })
	_, err = verify(t, ref4, withTLog(false))
	wantVerificationError(t, err, ref4, "does not match the signature: it records another signature")

	// A malformed bundle.
	replaceBundle(t, ref4, d4, func(int, string) string {
		return `{"SignedEntryTimestamp":"AA==","Payload":{"body":"not base64!","integratedTime":1,"logIndex":0,"logID":"00"}}`
	})
	_, err = verify(t, ref4, withTLog(false))
	wantVerificationError(t, err, ref4, "transparency log entry is malformed: its body is not base64")
}

// checkEntryBody tells each part of an entry that does not match.
func TestCheckEntryBody(t *testing.T) {
	s, other := newSigner(t), newSigner(t)
	payload := []byte(`{"critical":{}}`)
	sig, err := s.sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := s.logKey()
	otherPEM, _ := other.logKey()
	entry := func(payload, sig, keyPEM []byte) string {
		b, _ := json.Marshal(newHashedRekord(payload, sig, keyPEM))
		return base64.StdEncoding.EncodeToString(b)
	}
	if p := checkEntryBody(entry(payload, sig, keyPEM), payload, sig, s.PublicKey()); p != "" {
		t.Fatalf("the entry of the signature: %s", p)
	}
	for name, c := range map[string]struct{ body, want string }{
		"other payload": {entry([]byte("x"), sig, keyPEM), "it records the hash sha256:2d71"},
		"other sig":     {entry(payload, []byte("sig"), keyPEM), "it records another signature"},
		"other key":     {entry(payload, sig, otherPEM), "it records another signer's key"},
		"no key":        {entry(payload, sig, []byte("nope")), "its public key is unusable: not PEM"},
		"other kind":    {base64.StdEncoding.EncodeToString([]byte(`{"apiVersion":"0.0.1","kind":"rekord"}`)), `a "rekord" "0.0.1" entry`},
		"duplicate key": {base64.StdEncoding.EncodeToString([]byte(`{"kind":"hashedrekord","kind":"x"}`)), `the key "kind" appears twice`},
	} {
		if p := checkEntryBody(c.body, payload, sig, s.PublicKey()); !strings.Contains(p, c.want) {
			t.Errorf("%s: %q, want %q", name, p, c.want)
		}
	}
}

// The log answers 409 for an entry it holds; upload fetches that entry.
func TestRekorExistingEntry(t *testing.T) {
	s := mustTestSigner(t)
	log := regtest.Rekor(t)
	r := rekorClient(t, log.URL)
	payload := []byte("payload")
	sig, err := s.sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := s.logKey()
	first, ann1, err := r.upload(context.Background(), payload, sig, keyPEM, s.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	second, ann2, err := r.upload(context.Background(), payload, sig, keyPEM, s.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if *first != *second || log.Entries() != 1 || log.Requests() != 3 {
		t.Fatalf("second upload: %+v (first %+v), %d entries, %d requests (want POST, POST, GET)", second, first, log.Entries(), log.Requests())
	}
	p := tlogPolicy(t, log, true)
	for _, ann := range []string{string(ann1), string(ann2)} {
		if _, problem := p.check(ann, payload, sig, s.PublicKey()); problem != "" {
			t.Errorf("bundle %s: %s", ann, problem)
		}
	}
}

// A log that refuses the entry, or is not there: signing fails, naming
// the log, and writes no signature.
func TestRekorRefuses(t *testing.T) {
	s := mustTestSigner(t)
	log := regtest.Rekor(t)
	ctx := context.Background()
	payload := []byte("payload")
	sig, _ := s.sign(payload)
	keyPEM, _ := s.logKey()

	_, _, err := rekorClient(t, log.URL).upload(ctx, []byte("another payload"), sig, keyPEM, s.PublicKey())
	if err == nil || !strings.Contains(err.Error(), log.URL+" refused the entry: 400 verifying signature") {
		t.Errorf("a signature that does not verify: %v", err)
	}
	_, _, err = rekorClient(t, log.URL+"/nope").upload(ctx, payload, sig, keyPEM, s.PublicKey())
	if err == nil || !strings.Contains(err.Error(), log.URL+"/nope refused the entry: 404") {
		t.Errorf("a wrong path: %v", err)
	}

	ref, d := registryImage(t, regtest.GGCR(t, nil), "refused")
	gone := regtest.Rekor(t)
	gone.Close()
	ep, finish, err := OpenForSigning(ctx, remote(), parseRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Sign(ctx, ep, parseRef(t, ref), s, SignOptions{TLog: rekorClient(t, gone.URL)})
	finish(false)
	if err == nil || !strings.Contains(err.Error(), "transparency log") || !strings.Contains(err.Error(), "@"+string(d)) {
		t.Errorf("an unreachable log: %v", err)
	}
	if m, err := readSigManifest(ctx, openSource(t, parseRef(t, ref)), d); m != nil || err != nil {
		t.Errorf("a signature was written although the log was unreachable: %v, %v", m, err)
	}
}

func TestNewRekorURL(t *testing.T) {
	for _, u := range []string{"rekor.sigstore.dev", "ftp://rekor", "https://", "https://u:p@rekor", "https://rekor?x=1"} {
		if _, err := NewRekor(u, func(string) (http.RoundTripper, error) { return http.DefaultTransport, nil }); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
	var host string
	r, err := NewRekor("https://rekor.example.com:8443/prefix/", func(h string) (http.RoundTripper, error) { host = h; return http.DefaultTransport, nil })
	if err != nil || host != "rekor.example.com:8443" || r.endpoint() != "https://rekor.example.com:8443/prefix/api/v1/log/entries" {
		t.Errorf("NewRekor: %v, transport for %q, endpoint %s", err, host, r.endpoint())
	}
}

// The signed form of an entry is RFC 8785's; values it cannot write as
// plain text are refused.
func TestRekorPayloadCanonical(t *testing.T) {
	p := rekorPayload{Body: "e30=", IntegratedTime: 1700000000, LogIndex: 7, LogID: "0a1b"}
	got, err := p.canonical()
	if want := `{"body":"e30=","integratedTime":1700000000,"logID":"0a1b","logIndex":7}`; err != nil || string(got) != want {
		t.Fatalf("canonical = %s, %v; want %s", got, err, want)
	}
	for _, bad := range []rekorPayload{
		{Body: "e30=\n", LogID: "0a"},
		{Body: "", LogID: "0a"},
		{Body: "e30=", LogID: "0A"},
		{Body: "e30=", LogID: `0a","x":"`},
		{Body: "e30=", LogID: "0a", LogIndex: -1},
		{Body: "e30=", LogID: "0a", IntegratedTime: 1 << 60},
	} {
		if _, err := bad.canonical(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// With a certificate, the log records the certificate, as cosign uploads
// it, and a certificate policy verifies the entry like a key does.
func TestTLogCertificate(t *testing.T) {
	s := mustTestSigner(t)
	now := time.Now()
	pki := newTestPKI(t, now.Add(-time.Hour), now.Add(24*time.Hour))
	leaf := pki.leaf(t, s.PublicKey(), leafSpec{email: testIdentity, issuerV1: testIssuer, issuerV2: testIssuer})
	signer := *s
	if err := signer.SetCertificate(pemOf(leaf), pemOf(pki.inter, pki.root)); err != nil {
		t.Fatal(err)
	}
	log := regtest.Rekor(t)
	ref, d := registryImage(t, regtest.GGCR(t, nil), "cert-logged")
	sign(t, ref, &signer, SignOptions{TLog: rekorClient(t, log.URL)})

	var b rekorBundle
	if err := json.Unmarshal([]byte(sigLayers(t, ref, d)[0][AnnotationBundle]), &b); err != nil {
		t.Fatal(err)
	}
	body, _ := base64.StdEncoding.DecodeString(b.Payload.Body)
	var e hashedRekord
	json.Unmarshal(body, &e)
	if !strings.HasPrefix(string(e.Spec.Signature.PublicKey.Content), "-----BEGIN CERTIFICATE-----") {
		t.Errorf("the log records %q, not the certificate", e.Spec.Signature.PublicKey.Content)
	}

	p, err := NewCertificatePolicy(pemOf(pki.root), nil, testIdentity, "", testIssuer, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := verify(t, ref, VerifyOptions{Certificate: p, TLog: tlogPolicy(t, log, true)})
	if err != nil || got[0].Signatures[0].TLog == nil || got[0].Signatures[0].Certificate == nil {
		t.Fatalf("certificate and log entry: %+v, %v", got, err)
	}
}

// ferry does not check the log entries in sigstore bundles: a bundle
// signature verifies as before, unless entries are required.
func TestTLogRequiredRejectsBundles(t *testing.T) {
	s := mustTestSigner(t)
	ctx := context.Background()
	ref, d := registryImage(t, regtest.GGCR(t, nil), "sigstore-bundle")
	r := parseRef(t, ref)
	ep := openEndpoint(t, r)
	subject, err := ep.Manifest(ctx, string(d))
	if err != nil {
		t.Fatal(err)
	}
	putBundle(t, ep, subject, statementFor(d, predicateCosignSign), s, nil)
	log := regtest.Rekor(t)
	opts := keyOpts(s)
	opts.TLog = tlogPolicy(t, log, false)
	if _, err := Verify(ctx, ep, r, opts); err != nil {
		t.Fatalf("entries not required: %v", err)
	}
	opts.TLog = tlogPolicy(t, log, true)
	_, err = Verify(ctx, ep, r, opts)
	wantVerificationError(t, err, ref, "no valid signature", "1 sigstore bundle(s) verified, but ferry does not check the transparency log entries in bundles")
}
