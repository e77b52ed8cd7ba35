package chunker

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// Chunk is one piece of a stream or image, in stream order.
type Chunk struct {
	// Offset is where the chunk starts in the stream or image.
	Offset int64
	// Length is the chunk's size in bytes; it is len(Data) unless Zero.
	Length int
	// Zero is true when every byte of the chunk is zero: a hole, or data
	// that reads as zeros. A zero chunk has no Data.
	Zero bool
	// Data holds the chunk's bytes, valid until Release. Nil when Zero.
	Data []byte

	buf *buffer
	gen uint64
}

// End returns the offset just past the chunk.
func (c *Chunk) End() int64 { return c.Offset + int64(c.Length) }

// Release gives the chunk's buffer back to the pool. Data must not be used
// afterwards. It is idempotent, safe on zero chunks, and a no-op through a
// stale copy of a chunk whose buffer was already released (even if the buffer
// has been handed out again since).
func (c *Chunk) Release() {
	if c.buf != nil {
		c.buf.release(c.gen)
	}
	c.buf = nil
	c.Data = nil
}

// Scanner is what both chunkers' scanners implement: Next returns the next
// chunk, or io.EOF after the last one.
type Scanner interface {
	Next() (Chunk, error)
}

// Buffers come in power-of-two size classes from 4 KiB to 64 MiB, one
// sync.Pool per class, shared by every chunker of the process.
const (
	minClassShift = 12
	maxClassShift = 26
	maxBufferSize = 1 << maxClassShift
)

var pools [maxClassShift + 1]sync.Pool

// buffer is a pooled byte slice. gen counts its releases: a Chunk remembers
// the generation it was handed, so only the first Release of that generation
// returns the buffer to its pool.
type buffer struct {
	b     []byte // full capacity, len == cap == 1<<shift
	shift int
	gen   atomic.Uint64
}

// classShift returns the size class holding n bytes.
func classShift(n int) int {
	if n <= 1<<minClassShift {
		return minClassShift
	}
	return bits.Len(uint(n - 1))
}

// getBuffer returns a buffer of at least n bytes (n <= maxBufferSize).
func getBuffer(n int) *buffer {
	shift := classShift(n)
	if shift > maxClassShift {
		panic("chunker: buffer larger than the largest size class")
	}
	if v := pools[shift].Get(); v != nil {
		return v.(*buffer)
	}
	return &buffer{b: make([]byte, 1<<shift), shift: shift}
}

// release returns the buffer to its pool if gen is its current generation.
func (b *buffer) release(gen uint64) {
	if b.gen.CompareAndSwap(gen, gen+1) {
		pools[b.shift].Put(b)
	}
}

// chunkOf builds a non-zero chunk that owns buf.
func chunkOf(off int64, buf *buffer, n int) Chunk {
	return Chunk{Offset: off, Length: n, Data: buf.b[:n:n], buf: buf, gen: buf.gen.Load()}
}

// put returns a buffer that no Chunk has been handed yet.
func (b *buffer) put() { b.release(b.gen.Load()) }
