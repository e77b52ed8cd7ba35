package repo

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

func TestImageReader(t *testing.T) {
	ctx := context.Background()
	r, store := newTestRepo(t)
	path := filepath.Join(t.TempDir(), "img.raw")
	const size = 9<<20 + 4097 // odd: a short last chunk
	want := writeImage(t, path, size, 11)
	src, done := rawSource(t, path)
	m, err := r.BackupImage(ctx, src, BackupInfo{}, nil)
	done()
	if err != nil {
		t.Fatal(err)
	}
	r2 := reopen(t, store)
	ir, err := r2.NewImageReader(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if ir.Size() != size {
		t.Fatalf("size %d", ir.Size())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		off := rng.Int64N(size)
		n := rng.IntN(600 << 10)
		p := make([]byte, n)
		got, err := ir.ReadAt(p, off)
		wantN := min(int64(n), size-off)
		if int64(got) != wantN || (int64(n) > wantN && err != io.EOF) || (int64(n) <= wantN && err != nil) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, got, err)
		}
		if !bytes.Equal(p[:got], want[off:off+int64(got)]) {
			t.Fatalf("ReadAt(%d bytes at %d): wrong bytes", n, off)
		}
	}
	if n, err := ir.ReadAt(make([]byte, 10), size); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d %v", n, err)
	}
	if ir.chunks.order.Len() > readerChunks {
		t.Fatalf("%d chunks cached, more than %d", ir.chunks.order.Len(), readerChunks)
	}
	// Extents: the zero runs are exactly the all-zero chunks.
	exts, err := ir.Extents(0, size)
	if err != nil {
		t.Fatal(err)
	}
	var pos int64
	cs := int64(m.Image.ChunkSize)
	for _, e := range exts {
		if e.Offset != pos {
			t.Fatalf("extents not consecutive at %d: %+v", pos, e)
		}
		for c := e.Offset; c < e.Offset+e.Length; c += cs {
			end := min(c+cs, size)
			allZero := !bytes.ContainsFunc(want[c:end], func(r rune) bool { return r != 0 })
			if allZero != e.Zero {
				t.Fatalf("chunk at %d: Zero %v, bytes all zero %v", c, e.Zero, allZero)
			}
		}
		pos += e.Length
	}
	if pos != size {
		t.Fatalf("extents cover %d bytes of %d", pos, size)
	}
}
