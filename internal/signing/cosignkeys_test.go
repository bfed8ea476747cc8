package signing

import (
	"testing"

	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// Key files are cosign's format both ways: cosign's own library loads a
// key pair ferry generates, and ferry loads one cosign's library
// generates. (The interop suite does the same with the cosign CLI.)
func TestKeyFilesInterchangeWithCosign(t *testing.T) {
	password := []byte("s3cret")
	ours, err := GenerateKeyPair(password)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := cosign.LoadPrivateKey(ours.Private, password, nil)
	if err != nil {
		t.Fatalf("cosign cannot load a private key ferry generated: %v", err)
	}
	pub, err := sv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if want, err := cryptoutils.UnmarshalPEMToPublicKey(ours.Public); err != nil || cryptoutils.EqualKeys(pub, want) != nil {
		t.Fatalf("cosign reads ferry's private key with another public key than ferry's .pub (parse error: %v)", err)
	}

	theirs, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return password, nil })
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner("cosign.key", theirs.PrivateBytes, func() ([]byte, error) { return password, nil })
	if err != nil {
		t.Fatalf("ferry cannot load a private key cosign generated: %v", err)
	}
	verifier, err := LoadPublicKey("cosign.pub", theirs.PublicBytes)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.sign([]byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	if !verifyWith(verifier, sig, []byte("payload")) {
		t.Fatal("a signature by cosign's private key, loaded by ferry, does not verify with cosign's public key")
	}
}
