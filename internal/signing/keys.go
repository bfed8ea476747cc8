// Package signing signs and verifies container images the way cosign does
// by default, offline: a key pair in cosign's encrypted format, the
// simple-signing payload, and signatures stored as an image tagged
// sha256-<hex>.sig beside the image they sign. It reads and writes through
// internal/transfer's endpoints, so a registry, an OCI layout and an OCI
// archive are signed and verified alike.
//
// It is the only package that deals in sigstore's formats. It builds on
// sigstore/sigstore's signature packages and go-securesystemslib's key
// encryption, as cosign does, but not on cosign itself: pkg/cosign would
// add 9 MB to the binary and 20 ms to every command's start for the two
// functions it would be used for. Its tests load keys with cosign's own
// library, and the interop suite signs and verifies with the cosign CLI.
// It talks to a Rekor transparency log only when asked to (SignOptions.TLog,
// in rekor.go, a small client of its REST API), and never to Fulcio or TUF.
package signing

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// ErrKey is the parent of errors about a key or certificate file: it
// cannot be read, decrypted or parsed, or does not match.
var ErrKey = errors.New("key error")

// ErrPassword means the password did not decrypt the private key.
var ErrPassword = fmt.Errorf("%w: wrong password", ErrKey)

// EnvPrefix marks a key reference that names an environment variable
// holding the PEM, as cosign's env://VAR.
const EnvPrefix = "env://"

// ReadKeyRef reads the PEM a --key reference names: a file path, or
// env://VAR for the content of an environment variable. getenv looks the
// variable up (os.LookupEnv when nil).
func ReadKeyRef(ref string, getenv func(string) (string, bool)) ([]byte, error) {
	if ref == "" {
		return nil, fmt.Errorf("%w: empty key reference", ErrKey)
	}
	if name, ok := strings.CutPrefix(ref, EnvPrefix); ok {
		if getenv == nil {
			getenv = os.LookupEnv
		}
		v, ok := getenv(name)
		if name == "" || !ok || v == "" {
			return nil, fmt.Errorf("%w: %s: the environment variable %q is not set", ErrKey, ref, name)
		}
		return []byte(v), nil
	}
	b, err := os.ReadFile(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrKey, ref, err)
	}
	return b, nil
}

// KeyPair is a key pair in cosign's formats: an encrypted PEM private key
// ("ENCRYPTED SIGSTORE PRIVATE KEY", scrypt + secretbox) and a PEM public key.
type KeyPair struct {
	Private []byte
	Public  []byte
}

// GenerateKeyPair makes an ECDSA P-256 key pair, as `cosign
// generate-key-pair` does, and encrypts the private key with password.
func GenerateKeyPair(password []byte) (KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generating a key pair: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return KeyPair{}, fmt.Errorf("encoding the private key: %w", err)
	}
	sealed, err := encrypted.Encrypt(der, password)
	if err != nil {
		return KeyPair{}, fmt.Errorf("encrypting the private key: %w", err)
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(key.Public())
	if err != nil {
		return KeyPair{}, fmt.Errorf("encoding the public key: %w", err)
	}
	return KeyPair{
		Private: pem.EncodeToMemory(&pem.Block{Type: privateKeyPEMType, Bytes: sealed}),
		Public:  pub,
	}, nil
}

// The PEM block types of cosign's encrypted private keys: the current
// one, which ferry writes, and the older one it still reads.
const (
	privateKeyPEMType       = "ENCRYPTED SIGSTORE PRIVATE KEY"
	legacyPrivateKeyPEMType = "ENCRYPTED COSIGN PRIVATE KEY"
)

// PasswordFunc returns the password of an encrypted private key. It is
// called at most once, and only for a key that is encrypted.
type PasswordFunc func() ([]byte, error)

// Signer signs payloads with a private key and, for sites with their own
// PKI, carries the certificate (and chain) that binds the key to an
// identity.
type Signer struct {
	sv    signature.SignerVerifier
	pub   crypto.PublicKey
	cert  []byte // PEM, or nil
	chain []byte // PEM, or nil
}

// LoadSigner decrypts a private key in cosign's format (also the older
// "ENCRYPTED COSIGN PRIVATE KEY"). name is the key's reference, for
// messages.
func LoadSigner(name string, keyPEM []byte, password PasswordFunc) (*Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, fmt.Errorf("%w: %s is not a PEM file", ErrKey, name)
	}
	if block.Type != privateKeyPEMType && block.Type != legacyPrivateKeyPEMType {
		return nil, fmt.Errorf("%w: %s holds a %q block; expected an encrypted cosign private key (ferry key generate, cosign generate-key-pair)", ErrKey, name, block.Type)
	}
	if password == nil {
		password = func() ([]byte, error) { return nil, nil }
	}
	pass, err := password()
	if err != nil {
		return nil, err
	}
	// A wrong password is told from a damaged file by checking the
	// envelope first.
	var envelope struct {
		KDF    json.RawMessage `json:"kdf"`
		Cipher json.RawMessage `json:"cipher"`
	}
	if err := json.Unmarshal(block.Bytes, &envelope); err != nil || envelope.KDF == nil || envelope.Cipher == nil {
		return nil, fmt.Errorf("%w: %s: the encrypted key is damaged", ErrKey, name)
	}
	der, err := encrypted.Decrypt(block.Bytes, pass)
	if err != nil {
		return nil, fmt.Errorf("%w for %s (or the key file is damaged)", ErrPassword, name)
	}
	pk, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: parsing the private key: %v", ErrKey, name, err)
	}
	// ED25519ph for Ed25519 keys, as cosign signs with them.
	sv, err := signature.LoadDefaultSignerVerifier(pk, options.WithED25519ph())
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKey, name, err)
	}
	pub, err := sv.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKey, name, err)
	}
	return &Signer{sv: sv, pub: pub}, nil
}

// PublicKey is the signer's public key.
func (s *Signer) PublicKey() crypto.PublicKey { return s.pub }

// SetCertificate attaches a PEM certificate for the signer's key, and
// optionally the PEM chain of intermediates (and root) that issued it,
// as cosign sign --cert --cert-chain does. The certificate's public key
// must be the signer's.
func (s *Signer) SetCertificate(certPEM, chainPEM []byte) error {
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM(certPEM)
	if err != nil || len(certs) == 0 {
		return fmt.Errorf("%w: --cert: no PEM certificate found", ErrKey)
	}
	if len(certs) != 1 {
		return fmt.Errorf("%w: --cert: %d certificates; put the leaf in --cert and the rest in --cert-chain", ErrKey, len(certs))
	}
	if err := cryptoutils.EqualKeys(certs[0].PublicKey, s.pub); err != nil {
		return fmt.Errorf("%w: --cert: the certificate's public key is not the signing key's", ErrKey)
	}
	if len(chainPEM) > 0 {
		chain, err := cryptoutils.UnmarshalCertificatesFromPEMLimited(chainPEM, maxChain)
		if err != nil || len(chain) == 0 {
			return fmt.Errorf("%w: --cert-chain: no PEM certificates found", ErrKey)
		}
		// The chain must actually issue the certificate. As cosign does,
		// its last certificate is taken as the root.
		pool := x509.NewCertPool()
		inter := x509.NewCertPool()
		pool.AddCert(chain[len(chain)-1])
		for _, c := range chain[:len(chain)-1] {
			inter.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{
			Roots: pool, Intermediates: inter,
			KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			CurrentTime: certs[0].NotBefore,
		}); err != nil {
			return fmt.Errorf("%w: --cert-chain (intermediates, ending with the root CA) does not issue --cert: %v", ErrKey, err)
		}
		chainPEM, err = cryptoutils.MarshalCertificatesToPEM(chain)
		if err != nil {
			return err
		}
	}
	s.cert, err = cryptoutils.MarshalCertificateToPEM(certs[0])
	if err != nil {
		return err
	}
	s.chain = chainPEM
	return nil
}

// sign signs payload.
func (s *Signer) sign(payload []byte) ([]byte, error) {
	return s.sv.SignMessage(bytes.NewReader(payload))
}

// maxChain caps the certificates read from one PEM chain.
const maxChain = 10

// LoadPublicKey parses a PEM public key (as `cosign public-key` or
// `ferry key generate` write it). name is for messages.
func LoadPublicKey(name string, pubPEM []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(pubPEM)
	if block == nil {
		return nil, fmt.Errorf("%w: %s is not a PEM file", ErrKey, name)
	}
	if strings.Contains(block.Type, "PRIVATE KEY") {
		return nil, fmt.Errorf("%w: %s is a private key; verify needs the public key (.pub)", ErrKey, name)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pubPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKey, name, err)
	}
	if _, err := verifiersFor(pub); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKey, name, err)
	}
	return pub, nil
}

// verifiersFor returns the ways a signature by pub may have been made:
// SHA-256 over the payload, which is what cosign verify assumes, and the
// key type's default (SHA-384 for P-384, Ed25519ph), which is what cosign
// sign uses.
func verifiersFor(pub crypto.PublicKey) ([]signature.Verifier, error) {
	v1, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	out := []signature.Verifier{v1}
	if v2, err := signature.LoadDefaultVerifier(pub, options.WithED25519ph()); err == nil {
		out = append(out, v2)
	}
	return out, nil
}

// verifyWith reports whether sig is a signature of payload by pub.
func verifyWith(pub crypto.PublicKey, sig, payload []byte) bool {
	vs, err := verifiersFor(pub)
	if err != nil {
		return false
	}
	for _, v := range vs {
		if v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(payload)) == nil {
			return true
		}
	}
	return false
}
