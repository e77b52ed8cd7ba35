package repo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sync/errgroup"
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

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestImageReaderOpenPacks: on a local repository the reader keeps packs
// open; reads from many goroutines, with packs leaving the cache while in
// use, return the right bytes; Close closes every pack, and reads after it
// still work.
func TestImageReaderOpenPacks(t *testing.T) {
	ctx := context.Background()
	r, store, _ := localRepo(t)
	path := filepath.Join(t.TempDir(), "img.raw")
	const size = 3*PackSize + 5<<20 // random, so at least four packs
	want := make([]byte, size)
	chacha := rand.NewChaCha8([32]byte{5, 6})
	chacha.Read(want)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	m := backupImageFile(t, r, path)
	r2 := reopen(t, store)
	before := openFDs(t)
	ir, err := r2.NewImageReader(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if ir.packs == nil {
		t.Fatal("the reader keeps no packs open on a local store")
	}
	ir.packs.max = 2 // packs leave the cache all the time
	var g errgroup.Group
	for w := range 8 {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			p := make([]byte, 300<<10)
			for range 100 {
				off := rng.Int64N(size - int64(len(p)))
				if _, err := ir.ReadAt(p, off); err != nil {
					return err
				}
				if !bytes.Equal(p, want[off:off+int64(len(p))]) {
					return fmt.Errorf("wrong bytes at %d", off)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := ir.packs.order.Len(); n > 2 {
		t.Fatalf("%d packs cached, more than 2", n)
	}
	if open := openFDs(t) - before; open > 2 {
		t.Fatalf("%d files open after the reads, more than the 2 cached", open)
	}
	ir.Close()
	if open := openFDs(t) - before; open != 0 {
		t.Fatalf("%d files still open after Close", open)
	}
	p := make([]byte, 1<<20)
	if _, err := ir.ReadAt(p, size/2); err != nil || !bytes.Equal(p, want[size/2:size/2+1<<20]) {
		t.Fatalf("read after Close: %v", err)
	}
	if open := openFDs(t) - before; open != 0 {
		t.Fatalf("a read after Close left %d files open", open)
	}
}
