package signing

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// Fulcio's certificate extensions for the OIDC issuer of the identity:
// the original one (the raw string) and its DER-encoded successor.
// https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md
var (
	oidIssuerV1 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}
	oidIssuerV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}
)

// CertificatePolicy says which certificates a signature may be made
// with: issued (through the signature's chain, or Intermediates) by one
// of Roots for code signing, valid now, for an identity (a SAN email,
// URI, DNS name or IP) and an OIDC issuer that match. It needs no network:
// it is cosign verify --ca-roots with --insecure-ignore-tlog and
// --insecure-ignore-sct.
type CertificatePolicy struct {
	Roots         *x509.CertPool
	Intermediates []*x509.Certificate
	// Identity must equal a SAN, or IdentityRegexp match one whole.
	Identity       string
	IdentityRegexp *regexp.Regexp
	// Issuer must equal the issuer extension, or IssuerRegexp match it whole.
	Issuer       string
	IssuerRegexp *regexp.Regexp
}

// NewCertificatePolicy builds a policy from PEM roots, optional PEM
// intermediates, and the identity and issuer to require: each either
// exact or a regular expression, which must match the whole value.
func NewCertificatePolicy(rootsPEM, intermediatesPEM []byte, identity, identityRegexp, issuer, issuerRegexp string) (*CertificatePolicy, error) {
	roots, err := cryptoutils.UnmarshalCertificatesFromPEMLimited(rootsPEM, 100)
	if err != nil || len(roots) == 0 {
		return nil, fmt.Errorf("%w: --ca-roots: no PEM certificates found", ErrKey)
	}
	p := &CertificatePolicy{Roots: x509.NewCertPool(), Identity: identity, Issuer: issuer}
	for _, c := range roots {
		p.Roots.AddCert(c)
	}
	if len(intermediatesPEM) > 0 {
		if p.Intermediates, err = cryptoutils.UnmarshalCertificatesFromPEMLimited(intermediatesPEM, 100); err != nil || len(p.Intermediates) == 0 {
			return nil, fmt.Errorf("%w: --ca-intermediates: no PEM certificates found", ErrKey)
		}
	}
	if (identity == "") == (identityRegexp == "") {
		return nil, fmt.Errorf("%w: give one of --certificate-identity and --certificate-identity-regexp", ErrKey)
	}
	if (issuer == "") == (issuerRegexp == "") {
		return nil, fmt.Errorf("%w: give one of --certificate-oidc-issuer and --certificate-oidc-issuer-regexp", ErrKey)
	}
	if identityRegexp != "" {
		if p.IdentityRegexp, err = regexp.Compile(`^(?:` + identityRegexp + `)$`); err != nil {
			return nil, fmt.Errorf("%w: --certificate-identity-regexp: %v", ErrKey, err)
		}
	}
	if issuerRegexp != "" {
		if p.IssuerRegexp, err = regexp.Compile(`^(?:` + issuerRegexp + `)$`); err != nil {
			return nil, fmt.Errorf("%w: --certificate-oidc-issuer-regexp: %v", ErrKey, err)
		}
	}
	return p, nil
}

// CertificateInfo is what a verified certificate says about the signer.
type CertificateInfo struct {
	Identities []string `json:"identities"`
	Issuer     string   `json:"issuer"`
	Subject    string   `json:"subject,omitempty"`
}

// checkPEM verifies a signature's certificate and chain (PEM, from its
// annotations) against the policy at now, and returns the certificate.
func (p *CertificatePolicy) checkPEM(certPEM, chainPEM string, now time.Time) (*x509.Certificate, *CertificateInfo, error) {
	if certPEM == "" {
		return nil, nil, fmt.Errorf("it has no certificate (it was signed with a bare key; verify it with --key)")
	}
	certs, err := cryptoutils.UnmarshalCertificatesFromPEMLimited([]byte(certPEM), maxChain)
	if err != nil || len(certs) != 1 {
		return nil, nil, fmt.Errorf("its certificate annotation is not one PEM certificate")
	}
	var chain []*x509.Certificate
	if chainPEM != "" {
		if chain, err = cryptoutils.UnmarshalCertificatesFromPEMLimited([]byte(chainPEM), maxChain); err != nil {
			return nil, nil, fmt.Errorf("its chain annotation is not PEM certificates")
		}
	}
	return p.check(certs[0], chain, now)
}

// check verifies a certificate, with the chain that came with it, against
// the policy at now.
func (p *CertificatePolicy) check(cert *x509.Certificate, chain []*x509.Certificate, now time.Time) (*x509.Certificate, *CertificateInfo, error) {
	var err error
	inter := x509.NewCertPool()
	for _, c := range p.Intermediates {
		inter.AddCert(c)
	}
	// Only ever intermediates: trust comes from --ca-roots alone.
	for _, c := range chain {
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:         p.Roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}); err != nil {
		return nil, nil, fmt.Errorf("its certificate (%s) does not verify against --ca-roots: %v", describeCert(cert), err)
	}
	info := &CertificateInfo{Identities: certIdentities(cert), Subject: cert.Subject.String()}
	info.Issuer, err = certIssuer(cert)
	if err != nil {
		return nil, nil, err
	}
	if !p.identityOK(info.Identities) {
		want := p.Identity
		if p.IdentityRegexp != nil {
			want = "one matching " + p.IdentityRegexp.String()
		}
		return nil, nil, fmt.Errorf("its certificate is for %s, not %s", orNone(info.Identities), want)
	}
	if !match(info.Issuer, p.Issuer, p.IssuerRegexp) {
		want := p.Issuer
		if p.IssuerRegexp != nil {
			want = "one matching " + p.IssuerRegexp.String()
		}
		got := info.Issuer
		if got == "" {
			got = "no issuer (no extension 1.3.6.1.4.1.57264.1.8 or .1.1)"
		}
		return nil, nil, fmt.Errorf("its certificate's OIDC issuer is %s, not %s", got, want)
	}
	return cert, info, nil
}

func (p *CertificatePolicy) identityOK(ids []string) bool {
	for _, id := range ids {
		if match(id, p.Identity, p.IdentityRegexp) {
			return true
		}
	}
	return false
}

func match(got, exact string, re *regexp.Regexp) bool {
	if re != nil {
		return re.MatchString(got)
	}
	return got != "" && got == exact
}

// certIdentities lists a certificate's subject alternative names.
func certIdentities(c *x509.Certificate) []string {
	var out []string
	out = append(out, c.EmailAddresses...)
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	out = append(out, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

// certIssuer reads the OIDC issuer extension, the DER form first.
func certIssuer(c *x509.Certificate) (string, error) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidIssuerV2) {
			var s string
			if rest, err := asn1.Unmarshal(e.Value, &s); err != nil || len(rest) != 0 {
				return "", fmt.Errorf("its certificate's issuer extension 1.3.6.1.4.1.57264.1.8 is not a DER string")
			}
			return s, nil
		}
	}
	for _, e := range c.Extensions {
		if e.Id.Equal(oidIssuerV1) {
			return string(e.Value), nil
		}
	}
	return "", nil
}

func describeCert(c *x509.Certificate) string {
	if ids := certIdentities(c); len(ids) > 0 {
		return strings.Join(ids, ", ")
	}
	return c.Subject.String()
}

func orNone(ids []string) string {
	if len(ids) == 0 {
		return "no identity (no subject alternative name)"
	}
	return strings.Join(ids, ", ")
}
