package transfer

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// TestBackgroundHash: the sum is that of everything written, in order,
// whatever the sizes of the writes and though the caller reuses its
// buffer at once; writes after Stop change nothing.
func TestBackgroundHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	b := NewBackgroundHash(sha256.New())
	buf := make([]byte, 0, 300<<10)
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(300<<10))
		buf = append(buf[:0], rest[:n]...)
		if w, err := b.Write(buf); w != n || err != nil {
			t.Fatalf("Write: %d, %v", w, err)
		}
		clear(buf) // the hash must have its own copy
		rest = rest[n:]
	}
	want := sha256.Sum256(data)
	if got := b.Sum(); !bytes.Equal(got, want[:]) {
		t.Fatalf("sum %x, want %x", got, want)
	}
	b.Write([]byte("late"))
	b.Stop()
	if got := b.Sum(); !bytes.Equal(got, want[:]) {
		t.Fatalf("a write after Stop changed the sum to %x", got)
	}
}
