package repo

import (
	"bytes"
	"testing"
)

// FuzzDecompress feeds arbitrary frames and raw lengths to decompress (the C
// decoder in cgo builds, the pure-Go one without cgo). It must return an
// error or exactly the raw length, whatever buffer it is given, and never
// panic or crash.
func FuzzDecompress(f *testing.F) {
	for _, plain := range [][]byte{proseish(1<<10, 1), make([]byte, 256), proseish(2<<10, 2)} {
		c, ok := compress(plain, nil)
		if !ok {
			f.Fatalf("seed of %d bytes not compressed", len(plain))
		}
		f.Add(bytes.Clone(c), uint32(len(plain)))
		f.Add(bytes.Clone(c), uint32(len(plain)-1))
	}
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd}, uint32(10)) // a frame's magic number alone
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, frame []byte, rawLen uint32) {
		n := int(rawLen % (256 << 10)) // blobs reach 64 MiB; the decoder's paths do not need it
		out, err := decompress(frame, true, n, nil)
		if err == nil && len(out) != n {
			t.Fatalf("decompress returned %d bytes, want %d", len(out), n)
		}
		small := make([]byte, 0, 16)
		out2, err2 := decompress(frame, true, n, small)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("with a small buffer: error %v, with none: %v", err2, err)
		}
		if err == nil && !bytes.Equal(out, out2) {
			t.Fatal("the output depends on the buffer given")
		}
	})
}
