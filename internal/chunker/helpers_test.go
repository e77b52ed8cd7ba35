package chunker

import (
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
)

// randomBytes returns n bytes from a ChaCha8 stream seeded with seed.
func randomBytes(n int, seed uint64) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// counterStream returns the first n bytes of SHA-256(seed || uint64le(j)),
// j = 0, 1, ... concatenated: the language-independent input of the CDC test
// vectors.
func counterStream(seed string, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	var ctr [8]byte
	for j := uint64(0); len(out) < n; j++ {
		binary.LittleEndian.PutUint64(ctr[:], j)
		h := sha256.Sum256(append([]byte(seed), ctr[:]...))
		out = append(out, h[:]...)
	}
	return out[:n]
}

var words = []string{"the", "backup", "repository", "chunk", "volume", "snapshot", "qemu", "disk",
	"image", "of", "and", "a", "to", "in", "is", "server", "node", "agent", "file", "tree", "data",
	"block", "cluster", "zero", "hole", "index", "pack", "manifest", "key", "lock"}

// mixedData returns n bytes of segments of 4 KiB to 1 MiB: 40% random, 40%
// text made of words, 20% zeros, the mix the benchmarks chunk.
func mixedData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0x636169726e))
	rnd := rand.NewChaCha8([32]byte{byte(seed), 'c', 'a', 'i', 'r', 'n'})
	out := make([]byte, n)
	for pos := 0; pos < n; {
		seg := min(4<<10+r.IntN(1<<20), n-pos)
		b := out[pos : pos+seg]
		switch k := r.IntN(10); {
		case k < 4:
			rnd.Read(b)
		case k < 8:
			for i := 0; i < len(b); {
				i += copy(b[i:], words[r.IntN(len(words))])
				if i < len(b) {
					b[i] = " \n"[min(r.IntN(12), 1)]
					i++
				}
			}
		}
		pos += seg
	}
	return out
}

var (
	benchOnce sync.Once
	benchData []byte
)

// benchInput returns 256 MiB of mixed data, made once per process.
func benchInput() []byte {
	benchOnce.Do(func() { benchData = mixedData(256<<20, 1) })
	return benchData
}

// collect runs a scanner to its end and returns its chunks, checking that
// offsets are contiguous and that Data matches Length. Chunk buffers are
// copied and released.
func collect(t testing.TB, s Scanner) []Chunk {
	t.Helper()
	var out []Chunk
	var off int64
	for {
		c, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if c.Offset != off {
			t.Fatalf("chunk %d at offset %d, want %d", len(out), c.Offset, off)
		}
		if c.Length <= 0 {
			t.Fatalf("chunk %d at %d has length %d", len(out), c.Offset, c.Length)
		}
		if c.Zero != (c.Data == nil) {
			t.Fatalf("chunk at %d: Zero=%v but Data nil=%v", c.Offset, c.Zero, c.Data == nil)
		}
		if !c.Zero && len(c.Data) != c.Length {
			t.Fatalf("chunk at %d: len(Data)=%d, Length=%d", c.Offset, len(c.Data), c.Length)
		}
		cp := c
		if !c.Zero {
			cp.Data = append([]byte(nil), c.Data...)
		}
		cp.buf = nil
		c.Release()
		out = append(out, cp)
		off += int64(c.Length)
	}
	// EOF is sticky.
	if _, err := s.Next(); err != io.EOF {
		t.Fatalf("Next after EOF: %v, want io.EOF", err)
	}
	return out
}

// join concatenates chunks, zero chunks as zeros.
func join(chunks []Chunk) []byte {
	var out []byte
	for _, c := range chunks {
		if c.Zero {
			out = append(out, make([]byte, c.Length)...)
		} else {
			out = append(out, c.Data...)
		}
	}
	return out
}
