package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The part writer cuts at exact byte boundaries whatever the order and
// sizes of the writes, hashes each part, writes nothing at a final name
// until commit, refuses to commit a stream with a gap, and abort leaves
// nothing.
func TestPartWriter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 10_000)
	for i := range data {
		data[i] = byte(rng.IntN(256))
	}
	type span struct{ start, end int }
	for _, split := range []int64{7, 999, 1000, 4096, 10_000, 20_000} {
		dir := t.TempDir()
		w, err := newPartWriter(filepath.Join(dir, "x.tar"), split)
		if err != nil {
			t.Fatal(err)
		}
		// Cut the stream into pieces and write them in a random order,
		// from several goroutines, as entries of a bundle arrive.
		var spans []span
		for off := 0; off < len(data); {
			n := min(len(data)-off, 1+rng.IntN(3000))
			spans = append(spans, span{off, off + n})
			off += n
		}
		rng.Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Go(func() {
				for k := i; k < len(spans); k += 3 {
					s := spans[k]
					if _, err := w.WriteAt(data[s.start:s.end], int64(s.start)); err != nil {
						t.Error(err)
					}
					w.Done(int64(s.start), int64(s.end))
				}
			})
		}
		wg.Wait()
		if ents, _ := os.ReadDir(dir); len(ents) == 0 || !strings.HasPrefix(ents[0].Name(), ".x.tar") {
			t.Fatalf("split %d: before commit: %v", split, ents)
		}
		// The hasher finishes (and closes) each part it has hashed whole;
		// commit is left the last one.
		if err := w.closeAndHash(); err != nil {
			t.Fatal(err)
		}
		for i, p := range w.parts[:len(w.parts)-1] {
			if p.sum == "" {
				t.Errorf("split %d: part %d was not finished when hashed", split, i)
			}
		}
		files, err := w.commit(int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		parts, sums := files[:len(files)-1], files[len(files)-1]
		want := (int64(len(data)) + split - 1) / split
		if int64(len(parts)) != want {
			t.Errorf("split %d: %d parts, want %d", split, len(parts), want)
		}
		var all []byte
		lines, _ := readChecksums(sums)
		for i, p := range parts {
			b, _ := os.ReadFile(p)
			if i < len(parts)-1 && int64(len(b)) != split {
				t.Errorf("split %d: part %d has %d bytes", split, i, len(b))
			}
			sum := sha256.Sum256(b)
			if lines[i].sum != hex.EncodeToString(sum[:]) || lines[i].name != filepath.Base(p) {
				t.Errorf("split %d: checksum line %v for %s", split, lines[i], p)
			}
			all = append(all, b...)
		}
		if !bytes.Equal(all, data) {
			t.Errorf("split %d: the parts do not add up to the stream", split)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != len(parts)+1 {
			t.Errorf("split %d: %d files left", split, len(ents))
		}
	}

	// A range written but never done is a gap: nothing is committed.
	dir := t.TempDir()
	w, _ := newPartWriter(filepath.Join(dir, "x.tar"), 10)
	w.WriteAt(data[:100], 0)
	w.Done(0, 40)
	w.Done(60, 100)
	if _, err := w.commit(100); err == nil || !strings.Contains(err.Error(), "40 of 100 bytes") {
		t.Errorf("commit with a gap: %v", err)
	}
	w.abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("abort left %v", ents)
	}
}

// multiReaderAt reads across part boundaries like one file.
func TestMultiReaderAt(t *testing.T) {
	dir := t.TempDir()
	data := []byte(strings.Repeat("0123456789abcdef", 100))
	var parts []Part
	for i, off := 0, 0; off < len(data); i++ {
		n := min(len(data)-off, 1+i*37%200)
		p := filepath.Join(dir, partName("x", i))
		os.WriteFile(p, data[off:off+n], 0o644)
		parts = append(parts, Part{Path: p})
		off += n
	}
	m, err := openParts(parts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.size != int64(len(data)) {
		t.Fatalf("size %d", m.size)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		off := rng.IntN(len(data) + 10)
		buf := make([]byte, rng.IntN(300))
		n, err := m.ReadAt(buf, int64(off))
		end := min(off+len(buf), len(data))
		if off > len(data) {
			end = off
		}
		if n != end-off || !bytes.Equal(buf[:n], data[off:end]) {
			t.Fatalf("ReadAt(%d, %d) = %d", len(buf), off, n)
		}
		if (n < len(buf)) != (err == io.EOF) {
			t.Fatalf("ReadAt(%d, %d): n %d, err %v", len(buf), off, n, err)
		}
		// FileAt finds the part holding a range, unless it crosses parts.
		f, at, ok := m.FileAt(int64(off), int64(len(buf)))
		i := sort.Search(len(m.offs), func(i int) bool { return m.offs[i] > int64(off) }) - 1
		within := off < len(data) && i >= 0 && int64(off+len(buf)) <= m.offs[i]+m.sizes[i]
		if ok != within {
			t.Fatalf("FileAt(%d, %d): ok %v, want %v", off, len(buf), ok, within)
		}
		if ok {
			got := make([]byte, len(buf))
			if _, err := f.ReadAt(got, at); err != nil && len(buf) > 0 || !bytes.Equal(got, data[off:off+len(buf)]) {
				t.Fatalf("FileAt(%d, %d) = %s at %d: wrong bytes", off, len(buf), f.Name(), at)
			}
		}
	}
}

// locate finds a bundle from FILE or FILE.000, and lists the parts
// SHA256SUMS names even when the disk lacks them.
func TestLocate(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.tar.000", "b.tar.001", "b.tar.002"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644)
	}
	sum := strings.Repeat("a", 64)
	os.WriteFile(filepath.Join(dir, ChecksumsFile), []byte(sum+"  b.tar.000\n"+sum+" *b.tar.001\n"+sum+"  b.tar.002\n"+sum+"  b.tar.003\n"+sum+"  other.tar.000\n"), 0o644)
	for _, p := range []string{"b.tar", "b.tar.000"} {
		l, err := locate(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if !l.split || l.base != "b.tar" || len(l.parts) != 4 || l.parts[3].Size != -1 || l.parts[1].Want != sum || l.parts[2].Offset != 2 {
			t.Errorf("locate(%s) = %+v", p, l)
		}
	}
	if _, err := locate(filepath.Join(dir, "nope.tar")); err == nil || !strings.Contains(err.Error(), "nope.tar.000") {
		t.Errorf("a missing bundle: %v", err)
	}
	os.Remove(filepath.Join(dir, "b.tar.000"))
	l, err := locate(filepath.Join(dir, "b.tar"))
	if err != nil || l.parts[0].Size != -1 || l.parts[1].Offset != -1 {
		t.Errorf("without its first part: %+v %v", l, err)
	}
}

// A write to the bundle's files that fails (a full disk) breaks the tar:
// the blob being written fails with the file's error, every later write
// fails at once, and abort leaves no file behind (ROBUSTNESS row 30).
func TestWriteFailureBreaksTheBundle(t *testing.T) {
	dir := t.TempDir()
	w, err := newPartWriter(filepath.Join(dir, "b.tar"), 0)
	if err != nil {
		t.Fatal(err)
	}
	tt := newTarTarget("bundle b.tar", w, nil)
	ctx := context.Background()
	blob := func(s string) (ocispec.Descriptor, io.Reader) {
		return ocispec.Descriptor{Digest: digest.FromString(s), Size: int64(len(s))}, strings.NewReader(s)
	}
	d, r := blob("first")
	if err := tt.writeBlob(ctx, d, r); err != nil {
		t.Fatal(err)
	}
	w.parts[0].tmp.Close() // the disk gives up
	d, r = blob("second")
	if err := tt.writeBlob(ctx, d, r); err == nil || !strings.Contains(err.Error(), d.Digest.Encoded()) {
		t.Fatalf("write after the failure: %v, want an error naming %s", err, d.Digest)
	}
	d, r = blob("third")
	if err := tt.writeBlob(ctx, d, r); err == nil || tt.brokenErr() == nil || !errors.Is(err, tt.brokenErr()) {
		t.Fatalf("a later write: %v, want the broken bundle's error %v", err, tt.brokenErr())
	}
	if _, err := tt.close(); err == nil {
		t.Error("a broken bundle closed")
	}
	w.abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("abort left %v", ents)
	}
}
