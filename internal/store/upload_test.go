package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestUploadCommit(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	chunks := []string{"first chunk, ", "second chunk, ", "last"}
	whole := []byte(strings.Join(chunks, ""))
	for _, want := range []digest.Digest{digest.SHA256.FromBytes(whole), digest.SHA512.FromBytes(whole)} {
		t.Run(string(want.Algorithm()), func(t *testing.T) {
			// Hashed with sha256 while written; a sha512 digest at the end
			// makes Commit re-read the data.
			u, err := s.NewUpload(digest.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range chunks {
				if _, err := u.Write([]byte(c)); err != nil {
					t.Fatal(err)
				}
			}
			if u.Size() != int64(len(whole)) {
				t.Errorf("Size = %d, want %d", u.Size(), len(whole))
			}
			if err := u.Commit(ctx, want); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, s, want); !bytes.Equal(got, whole) {
				t.Errorf("stored %q", got)
			}
			if _, err := u.Write([]byte("x")); !errors.Is(err, ErrUploadClosed) {
				t.Errorf("Write after Commit = %v, want ErrUploadClosed", err)
			}
			if err := u.Commit(ctx, want); !errors.Is(err, ErrUploadClosed) {
				t.Errorf("second Commit = %v, want ErrUploadClosed", err)
			}
		})
	}
	assertNoTemp(t, s)
}

// Digest follows the bytes written, and writing goes on after it.
func TestUploadDigestSoFar(t *testing.T) {
	s := newStore(t)
	u, err := s.NewUpload(digest.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Cancel()
	u.Write([]byte("hello, "))
	if got, want := u.Digest(), digest.FromString("hello, "); got != want {
		t.Errorf("after one write: Digest = %s, want %s", got, want)
	}
	u.Write([]byte("world"))
	if got, want := u.Digest(), digest.FromString("hello, world"); got != want {
		t.Errorf("after two writes: Digest = %s, want %s", got, want)
	}
}

func TestUploadMismatchLeavesNothing(t *testing.T) {
	s := newStore(t)
	u, err := s.NewUpload(digest.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("what was sent"))
	want := digest.FromString("what was announced")
	err = u.Commit(context.Background(), want)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), string(want)) {
		t.Fatalf("Commit = %v, want ErrDigestMismatch naming %s", err, want)
	}
	assertAbsent(t, s, want)
	assertAbsent(t, s, digest.FromString("what was sent"))
	assertNoTemp(t, s)
}

func TestUploadCancel(t *testing.T) {
	s := newStore(t)
	u, err := s.NewUpload(digest.SHA512)
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("abandoned"))
	if len(tempFiles(t, s.Dir())) != 1 {
		t.Fatalf("an open upload should have one temp file, have %v", tempFiles(t, s.Dir()))
	}
	if err := u.Cancel(); err != nil {
		t.Fatal(err)
	}
	assertNoTemp(t, s)
	if err := u.Cancel(); !errors.Is(err, ErrUploadClosed) {
		t.Errorf("second Cancel = %v, want ErrUploadClosed", err)
	}
	if err := u.Commit(context.Background(), digest.SHA512.FromString("abandoned")); !errors.Is(err, ErrUploadClosed) {
		t.Errorf("Commit after Cancel = %v, want ErrUploadClosed", err)
	}
	entries, _ := os.ReadDir(filepath.Join(s.Dir(), "blobs"))
	if len(entries) != 0 {
		t.Errorf("blobs/ has %v after a cancelled upload", entries)
	}
	if _, err := s.NewUpload("md5"); !errors.Is(err, ErrInvalidDigest) {
		t.Errorf("NewUpload(md5) = %v, want ErrInvalidDigest", err)
	}
}
