package repo

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestBufferPool: a buffer given back is handed out again for a size it
// fits (not one far smaller), emptied; at most keep are kept.
func TestBufferPool(t *testing.T) {
	p := bufferPool{keep: 2}
	a := p.get(1000)
	if len(a) != 0 || cap(a) < 1000 {
		t.Fatalf("get(1000): len %d cap %d", len(a), cap(a))
	}
	a = append(a, 1, 2, 3)
	p.put(a)
	if b := p.get(100); cap(b) == cap(a) {
		t.Fatal("a 1000-byte buffer was handed out for 100 bytes")
	}
	b := p.get(900)
	if len(b) != 0 || &b[:1][0] != &a[:1][0] {
		t.Fatal("the buffer given back was not reused, or not emptied")
	}
	p.put(b)
	p.put(make([]byte, 10))
	p.put(make([]byte, 20))
	if len(p.free) != 2 {
		t.Fatalf("%d buffers kept, want 2", len(p.free))
	}
}

// TestCompressOneBlock: a compressible image chunk of 128 KiB becomes a
// zstd frame of one block (the fast path), and comes back intact.
func TestCompressOneBlock(t *testing.T) {
	var text bytes.Buffer
	for i := 0; text.Len() < 128<<10; i++ {
		fmt.Fprintf(&text, "line %d of a log file, status %d\n", i, i%7)
	}
	chunk := text.Bytes()[:128<<10]
	c, ok := compress(chunk, nil)
	if !ok {
		t.Fatal("text was stored uncompressed")
	}
	var h zstd.Header
	if err := h.Decode(c); err != nil {
		t.Fatal(err)
	}
	if !h.FirstBlock.OK || !h.FirstBlock.Last {
		t.Fatalf("the frame's first block is not its last (block header %+v): the chunk was split", h.FirstBlock)
	}
	out, err := decompress(c, true, len(chunk), nil)
	if err != nil || !bytes.Equal(out, chunk) {
		t.Fatalf("round trip: %v", err)
	}
}
