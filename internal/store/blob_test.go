package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestWriteReadRoundTrip(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("ferry "), 100000) // 600 kB, more than one copy buffer
	sum256 := sha256.Sum256(data)
	sum512 := sha512.Sum512(data)
	for _, d := range []digest.Digest{
		digest.Digest("sha256:" + hex.EncodeToString(sum256[:])),
		digest.Digest("sha512:" + hex.EncodeToString(sum512[:])),
	} {
		t.Run(string(d.Algorithm()), func(t *testing.T) {
			if err := s.WriteBlob(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			onDisk, err := os.ReadFile(filepath.Join(s.Dir(), "blobs", string(d.Algorithm()), d.Encoded()))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(onDisk, data) {
				t.Fatalf("bytes on disk differ from what was written")
			}
			size, err := s.Stat(ctx, d)
			if err != nil || size != int64(len(data)) {
				t.Fatalf("Stat = %d, %v; want %d", size, err, len(data))
			}
			if got := readAll(t, s, d); !bytes.Equal(got, data) {
				t.Fatal("ReadBlob returned other bytes")
			}
			// Seekable for Range requests.
			rc, _, err := s.ReadBlob(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if _, err := rc.Seek(600000-6, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			tail, _ := io.ReadAll(rc)
			if string(tail) != "ferry " {
				t.Fatalf("after Seek read %q, want %q", tail, "ferry ")
			}
		})
	}
	// Unknown size works too.
	small := []byte("unknown size")
	d := digest.FromBytes(small)
	if err := s.WriteBlob(ctx, d, -1, bytes.NewReader(small)); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, d); !bytes.Equal(got, small) {
		t.Fatalf("got %q", got)
	}
	assertNoTemp(t, s)
}

func TestWriteBlobRejectsBadContent(t *testing.T) {
	data := []byte("the real content")
	d := digest.FromBytes(data)
	cases := []struct {
		name    string
		size    int64
		content []byte
		want    error
	}{
		{"wrong digest", int64(len(data)), []byte("other content!!!"), ErrDigestMismatch},
		{"wrong digest, unknown size", -1, []byte("other content"), ErrDigestMismatch},
		{"too long", int64(len(data)), append(append([]byte{}, data...), "and more"...), ErrSizeMismatch},
		{"too short", int64(len(data)), data[:5], ErrSizeMismatch},
		{"declared size wrong", int64(len(data)) + 1, data, ErrSizeMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			err := s.WriteBlob(context.Background(), d, c.size, bytes.NewReader(c.content))
			if !errors.Is(err, c.want) {
				t.Fatalf("WriteBlob = %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), string(d)) {
				t.Errorf("error %q does not name the digest", err)
			}
			assertAbsent(t, s, d)
			assertNoTemp(t, s)
		})
	}
}

// limitChecker fails the test if more than max bytes are read from it.
type limitChecker struct {
	t    *testing.T
	r    io.Reader
	read int64
	max  int64
}

func (l *limitChecker) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.read += int64(n)
	if l.read > l.max {
		l.t.Errorf("read %d bytes, WriteBlob may read at most %d", l.read, l.max)
	}
	return n, err
}

func TestWriteBlobReadsAtMostSizePlusOne(t *testing.T) {
	s := newStore(t)
	data := []byte("0123456789")
	endless := io.MultiReader(bytes.NewReader(data), strings.NewReader(strings.Repeat("x", 1<<20)))
	lc := &limitChecker{t: t, r: endless, max: int64(len(data)) + 1}
	err := s.WriteBlob(context.Background(), digest.FromBytes(data), int64(len(data)), lc)
	if !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("WriteBlob = %v, want ErrSizeMismatch", err)
	}
	assertAbsent(t, s, digest.FromBytes(data))
}

// failReader fails the test when read.
type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("the reader was read")
	return 0, io.EOF
}

func TestInvalidDigestsRejectedBeforeTouchingFiles(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	// A file where a naive join of "sha256:../../victim" would land.
	victim := filepath.Join(s.Dir(), "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := []digest.Digest{
		"sha256:../../victim",
		"sha256:../../../x",
		"sha256:abc",
		"sha256:" + digest.Digest(strings.ToUpper(digest.FromString("x").Encoded())),
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha384:" + digest.Digest(strings.Repeat("a", 96)),
		"sha512:" + digest.Digest(strings.Repeat("a", 64)),
		digest.Digest(strings.Repeat("a", 64)),
		"",
		"sha256:" + digest.Digest(strings.Repeat("a", 63)) + "/",
	}
	for _, d := range bad {
		t.Run(string(d), func(t *testing.T) {
			checks := map[string]error{
				"WriteBlob":  s.WriteBlob(ctx, d, 3, failReader{t}),
				"DeleteBlob": s.DeleteBlob(ctx, d),
				"Touch":      s.Touch(ctx, d),
			}
			_, checks["Stat"] = s.Stat(ctx, d)
			_, _, checks["ReadBlob"] = s.ReadBlob(ctx, d)
			_, checks["Referrers"] = s.Referrers(ctx, d)
			checks["RemoveRoot"] = s.RemoveRoot(ctx, d, nil)
			for op, err := range checks {
				if !errors.Is(err, ErrInvalidDigest) {
					t.Errorf("%s(%q) = %v, want ErrInvalidDigest", op, d, err)
				}
			}
		})
	}
	if data, err := os.ReadFile(victim); err != nil || string(data) != "keep me" {
		t.Fatalf("victim file changed: %q, %v", data, err)
	}
	entries, _ := os.ReadDir(filepath.Join(s.Dir(), "blobs"))
	if len(entries) != 0 {
		t.Errorf("blobs/ has entries %v after only invalid digests", entries)
	}
	assertNoTemp(t, s)
}

// cancelAfter cancels a context once n bytes were read, and counts reads
// made after that.
type cancelAfter struct {
	r         io.Reader
	n         int64
	cancel    context.CancelFunc
	read      int64
	readsLate int
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.read >= c.n {
		c.readsLate++
	}
	if len(p) > 4096 {
		p = p[:4096]
	}
	n, err := c.r.Read(p)
	c.read += int64(n)
	if c.read >= c.n {
		c.cancel()
	}
	return n, err
}

func TestWriteBlobCancelledMidStream(t *testing.T) {
	s := newStore(t)
	data := bytes.Repeat([]byte("z"), 1<<20)
	d := digest.FromBytes(data)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &cancelAfter{r: bytes.NewReader(data), n: 64 << 10, cancel: cancel}
	err := s.WriteBlob(ctx, d, int64(len(data)), r)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteBlob = %v, want context.Canceled", err)
	}
	if r.readsLate > 0 {
		t.Errorf("WriteBlob read %d more times after the cancel", r.readsLate)
	}
	if r.read >= int64(len(data)) {
		t.Errorf("WriteBlob read the whole stream despite the cancel")
	}
	assertAbsent(t, s, d)
	assertNoTemp(t, s)
}

func TestWriteBlobConcurrentSameBlob(t *testing.T) {
	s := newStore(t)
	data := bytes.Repeat([]byte("concurrent "), 50000)
	d := digest.FromBytes(data)
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.WriteBlob(context.Background(), d, int64(len(data)), bytes.NewReader(data))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if got := readAll(t, s, d); !bytes.Equal(got, data) {
		t.Fatal("stored content differs")
	}
	assertNoTemp(t, s)
}

func TestWriteBlobExistingIsNotReadAndIsTouched(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	data := []byte("present already")
	desc := putBlob(t, s, "application/octet-stream", data)
	age(t, s, desc.Digest, 2*time.Hour)

	if err := s.WriteBlob(ctx, desc.Digest, desc.Size, failReader{t}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.blobPath(desc.Digest))
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(fi.ModTime()) > time.Minute {
		t.Errorf("mtime %v not refreshed", fi.ModTime())
	}
	// A descriptor that lies about the size of a present blob is an error.
	if err := s.WriteBlob(ctx, desc.Digest, desc.Size+1, failReader{t}); !errors.Is(err, ErrSizeMismatch) {
		t.Errorf("WriteBlob with wrong size of a present blob = %v, want ErrSizeMismatch", err)
	}
}

func TestStatDeleteTouchMissing(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	d := digest.FromString("never written")
	if _, err := s.Stat(ctx, d); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), string(d)) {
		t.Errorf("Stat = %v, want ErrNotFound naming %s", err, d)
	}
	if _, _, err := s.ReadBlob(ctx, d); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadBlob = %v, want ErrNotFound", err)
	}
	if err := s.Touch(ctx, d); !errors.Is(err, ErrNotFound) {
		t.Errorf("Touch = %v, want ErrNotFound", err)
	}
	if err := s.DeleteBlob(ctx, d); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteBlob = %v, want ErrNotFound", err)
	}

	desc := putBlob(t, s, "application/octet-stream", []byte("to delete"))
	age(t, s, desc.Digest, time.Hour)
	if err := s.Touch(ctx, desc.Digest); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(s.blobPath(desc.Digest)); time.Since(fi.ModTime()) > time.Minute {
		t.Errorf("Touch did not refresh the mtime: %v", fi.ModTime())
	}
	if err := s.DeleteBlob(ctx, desc.Digest); err != nil {
		t.Fatal(err)
	}
	assertAbsent(t, s, desc.Digest)
}
