package signing

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"flag"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/txtar"

	"github.com/ferry-oci/ferry/internal/regtest"
)

var update = flag.Bool("update", false, "rewrite the test certificates in testdata/keys")

// testPKI is a root CA, an intermediate, and issuing helpers.
type testPKI struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
}

func newTestPKI(t testing.TB, notBefore, notAfter time.Time) *testPKI {
	t.Helper()
	p := &testPKI{rootKey: genKey(t), interKey: genKey(t)}
	p.root = issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "ferry test root CA (TEST ONLY)"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: notBefore, NotAfter: notAfter,
	}, nil, p.rootKey.Public(), p.rootKey)
	p.inter = issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "ferry test intermediate CA (TEST ONLY)"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: notBefore, NotAfter: notAfter,
	}, p.root, p.interKey.Public(), p.rootKey)
	return p
}

// leafSpec describes a signing certificate.
type leafSpec struct {
	email, uri         string
	issuerV1, issuerV2 string
	noCodeSigning      bool
	notBefore          time.Time
	notAfter           time.Time
}

func (p *testPKI) leaf(t testing.TB, pub crypto.PublicKey, s leafSpec) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		NotBefore:   s.notBefore, NotAfter: s.notAfter,
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = p.inter.NotBefore, p.inter.NotAfter
	}
	if s.noCodeSigning {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if s.email != "" {
		tmpl.EmailAddresses = []string{s.email}
	}
	if s.uri != "" {
		u, _ := url.Parse(s.uri)
		tmpl.URIs = []*url.URL{u}
	}
	if s.issuerV1 != "" {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidIssuerV1, Value: []byte(s.issuerV1)})
	}
	if s.issuerV2 != "" {
		v, err := asn1.MarshalWithParams(s.issuerV2, "utf8")
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidIssuerV2, Value: v})
	}
	return issue(t, tmpl, p.inter, pub, p.interKey)
}

func genKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func issue(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

const (
	testIdentity = "signer@example.com"
	testIssuer   = "https://issuer.example.com"
)

func TestCertificateSignVerify(t *testing.T) {
	s := mustTestSigner(t)
	now := time.Now()
	pki := newTestPKI(t, now.Add(-time.Hour), now.Add(24*time.Hour))
	reg := regtest.GGCR(t, nil)

	policy := func(t *testing.T, roots *x509.Certificate, identity, identityRE, issuer, issuerRE string) VerifyOptions {
		t.Helper()
		p, err := NewCertificatePolicy(pemOf(roots), nil, identity, identityRE, issuer, issuerRE)
		if err != nil {
			t.Fatal(err)
		}
		return VerifyOptions{Certificate: p}
	}
	// signed signs a fresh image with s and the certificate (none when
	// leaf is nil) and returns its reference.
	n := 0
	signed := func(t *testing.T, leaf *x509.Certificate, chain []byte) string {
		t.Helper()
		n++
		ref, _ := registryImage(t, reg, "cert"+string(rune('a'+n)))
		signer := *s
		if leaf != nil {
			if err := signer.SetCertificate(pemOf(leaf), chain); err != nil {
				t.Fatal(err)
			}
		}
		sign(t, ref, &signer, SignOptions{})
		return ref
	}

	good := pki.leaf(t, s.PublicKey(), leafSpec{email: testIdentity, issuerV1: testIssuer, issuerV2: testIssuer})
	ref := signed(t, good, pemOf(pki.inter, pki.root))

	t.Run("valid", func(t *testing.T) {
		for _, o := range []VerifyOptions{
			policy(t, pki.root, testIdentity, "", testIssuer, ""),
			policy(t, pki.root, "", `.*@example\.com`, "", `https://.*\.example\.com`),
		} {
			got, err := verify(t, ref, o)
			if err != nil {
				t.Fatal(err)
			}
			c := got[0].Signatures[0].Certificate
			if c == nil || c.Issuer != testIssuer || len(c.Identities) != 1 || c.Identities[0] != testIdentity {
				t.Errorf("certificate info %+v", c)
			}
		}
		// The key alone verifies it too, as with cosign.
		if _, err := verify(t, ref, keyOpts(s)); err != nil {
			t.Error(err)
		}
	})
	t.Run("wrong identity", func(t *testing.T) {
		_, err := verify(t, ref, policy(t, pki.root, "someone@example.com", "", testIssuer, ""))
		wantVerificationError(t, err, ref, "its certificate is for signer@example.com, not someone@example.com")
		// A regexp matches the whole identity, not a part of it.
		_, err = verify(t, ref, policy(t, pki.root, "", `signer@example\.co`, "", ".*"))
		wantVerificationError(t, err, ref, "not one matching")
	})
	t.Run("wrong issuer", func(t *testing.T) {
		_, err := verify(t, ref, policy(t, pki.root, testIdentity, "", "https://other.example.com", ""))
		wantVerificationError(t, err, ref, "OIDC issuer is https://issuer.example.com, not https://other.example.com")
	})
	t.Run("untrusted root", func(t *testing.T) {
		other := newTestPKI(t, now.Add(-time.Hour), now.Add(time.Hour))
		_, err := verify(t, ref, policy(t, other.root, testIdentity, "", testIssuer, ""))
		wantVerificationError(t, err, ref, "does not verify against --ca-roots")
	})
	t.Run("expired", func(t *testing.T) {
		o := policy(t, pki.root, testIdentity, "", testIssuer, "")
		o.Now = now.Add(48 * time.Hour)
		_, err := verify(t, ref, o)
		wantVerificationError(t, err, ref, "does not verify against --ca-roots", "expired")
	})
	t.Run("bare key signature", func(t *testing.T) {
		bare := signed(t, nil, nil)
		_, err := verify(t, bare, policy(t, pki.root, testIdentity, "", testIssuer, ""))
		wantVerificationError(t, err, bare, "it has no certificate")
	})
	t.Run("self-made root in the chain", func(t *testing.T) {
		// An attacker's CA, shipped in the chain annotation, is never trusted.
		evil := newTestPKI(t, now.Add(-time.Hour), now.Add(time.Hour))
		leaf := evil.leaf(t, s.PublicKey(), leafSpec{email: testIdentity, issuerV2: testIssuer})
		r := signed(t, leaf, pemOf(evil.inter, evil.root))
		_, err := verify(t, r, policy(t, pki.root, testIdentity, "", testIssuer, ""))
		wantVerificationError(t, err, r, "does not verify against --ca-roots")
	})
	t.Run("not for code signing", func(t *testing.T) {
		leaf := pki.leaf(t, s.PublicKey(), leafSpec{email: testIdentity, issuerV2: testIssuer, noCodeSigning: true})
		r := signed(t, leaf, pemOf(pki.inter))
		_, err := verify(t, r, policy(t, pki.root, testIdentity, "", testIssuer, ""))
		wantVerificationError(t, err, r, "does not verify against --ca-roots")
	})
	t.Run("v1 issuer extension and URI identity", func(t *testing.T) {
		leaf := pki.leaf(t, s.PublicKey(), leafSpec{uri: "https://ci.example.com/release", issuerV1: testIssuer})
		r := signed(t, leaf, pemOf(pki.inter))
		if _, err := verify(t, r, policy(t, pki.root, "https://ci.example.com/release", "", testIssuer, "")); err != nil {
			t.Error(err)
		}
	})
	t.Run("intermediates from the flag", func(t *testing.T) {
		r := signed(t, good, nil) // no chain stored with the signature
		_, err := verify(t, r, policy(t, pki.root, testIdentity, "", testIssuer, ""))
		wantVerificationError(t, err, r, "does not verify against --ca-roots")
		p, err := NewCertificatePolicy(pemOf(pki.root), pemOf(pki.inter), testIdentity, "", testIssuer, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verify(t, r, VerifyOptions{Certificate: p}); err != nil {
			t.Error(err)
		}
	})
}

func TestSetCertificate(t *testing.T) {
	s := mustTestSigner(t)
	now := time.Now()
	pki := newTestPKI(t, now.Add(-time.Hour), now.Add(time.Hour))
	other := pki.leaf(t, genKey(t).Public(), leafSpec{email: testIdentity})
	signer := *s
	if err := signer.SetCertificate(pemOf(other), nil); !errors.Is(err, ErrKey) {
		t.Errorf("a certificate for another key: got %v, want ErrKey", err)
	}
	mine := pki.leaf(t, s.PublicKey(), leafSpec{email: testIdentity})
	stranger := newTestPKI(t, now.Add(-time.Hour), now.Add(time.Hour))
	if err := signer.SetCertificate(pemOf(mine), pemOf(stranger.inter, stranger.root)); !errors.Is(err, ErrKey) {
		t.Errorf("a chain that did not issue the certificate: got %v, want ErrKey", err)
	}
	if err := signer.SetCertificate(pemOf(mine), pemOf(pki.inter, pki.root)); err != nil {
		t.Errorf("a good certificate and chain: %v", err)
	}
	if _, err := NewCertificatePolicy(pemOf(pki.root), nil, testIdentity, "x", testIssuer, ""); !errors.Is(err, ErrKey) {
		t.Errorf("identity and identity regexp together: %v", err)
	}
	if _, err := NewCertificatePolicy(pemOf(pki.root), nil, testIdentity, "", "", ""); !errors.Is(err, ErrKey) {
		t.Errorf("no issuer: %v", err)
	}
}

// TestTestCertificates checks the certificates in testdata/keys, which
// the end-to-end scripts use, and with -update makes them anew for
// test.key, valid for a hundred years.
func TestTestCertificates(t *testing.T) {
	dir := filepath.Dir(testKeyFile)
	s := mustTestSigner(t)
	if *update {
		start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		pki := newTestPKI(t, start, start.AddDate(100, 0, 0))
		leaf := pki.leaf(t, s.PublicKey(), leafSpec{email: testIdentity, issuerV1: testIssuer, issuerV2: testIssuer})
		stranger := newTestPKI(t, start, start.AddDate(100, 0, 0))
		for name, data := range map[string][]byte{"ca.pem": pemOf(pki.root), "chain.pem": pemOf(pki.inter, pki.root), "test-cert.pem": pemOf(leaf), "other-ca.pem": pemOf(stranger.root)} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%v (make them with -update)", err)
		}
		return b
	}
	signer := *s
	if err := signer.SetCertificate(read("test-cert.pem"), read("chain.pem")); err != nil {
		t.Fatal(err)
	}
	p, err := NewCertificatePolicy(read("ca.pem"), nil, testIdentity, "", testIssuer, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.checkPEM(string(signer.cert), string(signer.chain), time.Now()); err != nil {
		t.Fatal(err)
	}
	other, err := NewCertificatePolicy(read("other-ca.pem"), nil, testIdentity, "", testIssuer, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.checkPEM(string(signer.cert), string(signer.chain), time.Now()); err == nil {
		t.Fatal("other-ca.pem accepts test-cert.pem")
	}
}

// TestScriptKeys checks that the copies of testdata/keys in the
// end-to-end scripts (testdata/script/sign*.txtar,
// testdata/interop/sign*.txtar) are the same files; -update rewrites them.
func TestScriptKeys(t *testing.T) {
	keys := filepath.Dir(testKeyFile)
	var scripts []string
	for _, g := range []string{"../../testdata/script/sign*.txtar", "../../testdata/interop/sign*.txtar"} {
		m, err := filepath.Glob(g)
		if err != nil {
			t.Fatal(err)
		}
		scripts = append(scripts, m...)
	}
	if len(scripts) == 0 {
		t.Fatal("no sign scripts found")
	}
	for _, path := range scripts {
		a, err := txtar.ParseFile(path)
		if err != nil {
			t.Fatal(err)
		}
		changed := false
		for i, f := range a.Files {
			want, err := os.ReadFile(filepath.Join(keys, f.Name))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(f.Data) == string(want) {
				continue
			}
			if !*update {
				t.Errorf("%s: %s differs from testdata/keys/%s (run with -update)", path, f.Name, f.Name)
				continue
			}
			a.Files[i].Data, changed = want, true
		}
		if changed {
			if err := os.WriteFile(path, txtar.Format(a), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
