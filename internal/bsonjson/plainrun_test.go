package bsonjson

import (
	"math/rand/v2"
	"testing"
)

func plainRunRef(b []byte) int {
	for i, c := range b {
		if c == '"' || c == '\\' || c < 0x20 || c >= 0x80 {
			return i
		}
	}
	return len(b)
}

// TestPlainRunMatchesByteLoop checks the eight-bytes-at-a-time scan against
// the plain loop: every byte value at every position of a word, and random
// strings biased toward the bytes that stop a run.
func TestPlainRunMatchesByteLoop(t *testing.T) {
	for n := 0; n <= 24; n++ {
		for pos := 0; pos < n; pos++ {
			for v := 0; v < 256; v++ {
				b := make([]byte, n)
				for i := range b {
					b[i] = 'a'
				}
				b[pos] = byte(v)
				if got, want := plainRun(b), plainRunRef(b); got != want {
					t.Fatalf("len %d, byte %#x at %d: got %d, want %d", n, v, pos, got, want)
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	special := []byte{'"', '\\', 0, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xff, 'x'}
	for range 200000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			if r.IntN(4) == 0 {
				b[i] = special[r.IntN(len(special))]
			} else {
				b[i] = byte(0x20 + r.IntN(0x60))
			}
		}
		if got, want := plainRun(b), plainRunRef(b); got != want {
			t.Fatalf("%q: got %d, want %d", b, got, want)
		}
	}
}
