package store

import (
	"context"
	"errors"
	"os"
	"testing"
)

func TestCheckFindsCorruptAndMissingBlobs(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	img := putImage(t, s, "v1", "layer one", "layer two")
	other := putImage(t, s, "v2", "other layer")

	problems, err := s.Check(ctx)
	if err != nil || len(problems) != 0 {
		t.Fatalf("Check of a good layout = %v, %v", problems, err)
	}

	// Corrupt one layer (same size, other bytes), delete another.
	corrupt := img.layers[0]
	data := readAll(t, s, corrupt.Digest)
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(s.blobPath(corrupt.Digest), data, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := other.layers[0]
	if err := os.Remove(s.blobPath(missing.Digest)); err != nil {
		t.Fatal(err)
	}
	// A file under blobs/ whose name is no digest.
	if err := os.WriteFile(s.Dir()+"/blobs/sha256/not-a-digest", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	problems, err = s.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sawCorrupt, sawMissing, sawBadName bool
	for _, p := range problems {
		switch {
		case p.Digest == corrupt.Digest && errors.Is(p.Err, ErrDigestMismatch):
			sawCorrupt = true
			if p.Path != blobRelPath(corrupt.Digest) {
				t.Errorf("corrupt blob path = %q", p.Path)
			}
		case p.Digest == missing.Digest && errors.Is(p.Err, ErrNotFound):
			sawMissing = true
		case p.Path == "blobs/sha256/not-a-digest" && errors.Is(p.Err, ErrInvalidDigest):
			sawBadName = true
		default:
			t.Errorf("unexpected problem: %+v", p)
		}
	}
	if !sawCorrupt || !sawMissing || !sawBadName {
		t.Errorf("Check found corrupt=%v missing=%v badName=%v; problems: %v", sawCorrupt, sawMissing, sawBadName, problems)
	}
}

func TestCheckFindsWrongSize(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	img := putImage(t, s, "v1", "layer")
	// Rewrite the config with other content: it no longer matches its name
	// nor the size the manifest declares.
	if err := os.WriteFile(s.blobPath(img.config.Digest), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	problems, err := s.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sawSize, sawDigest bool
	for _, p := range problems {
		sawSize = sawSize || (p.Digest == img.config.Digest && errors.Is(p.Err, ErrSizeMismatch))
		sawDigest = sawDigest || (p.Digest == img.config.Digest && errors.Is(p.Err, ErrDigestMismatch))
	}
	if !sawSize || !sawDigest {
		t.Errorf("problems = %v, want a size and a digest mismatch of the config", problems)
	}
}
