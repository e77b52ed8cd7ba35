package chunker

import (
	"fmt"
	"io"
	"math/bits"

	"github.com/cairn-backup/cairn/internal/core"
)

// CDCParams are the chunk size bounds of the content-defined chunker. They
// are part of a repository's configuration: the same data cut with other
// parameters gives other chunks (and no deduplication between the two).
type CDCParams struct {
	// Min is the smallest chunk (only the last chunk of a stream may be
	// smaller). At least 64, below Avg.
	Min int
	// Avg is the target chunk size, a power of two of at least 256, below
	// Max. With Min = Avg/2 the measured mean is about 1.2 * Avg.
	Avg int
	// Max is the largest chunk: a chunk that reaches it is cut there. At
	// most 64 MiB.
	Max int
}

// DefaultCDCParams returns 512 KiB / 1 MiB / 8 MiB, restic's sizes: large
// enough that a file tree's index stays small, small enough that an edit in
// a large file costs about one or two MiB of new data.
func DefaultCDCParams() CDCParams {
	return CDCParams{Min: 512 << 10, Avg: 1 << 20, Max: 8 << 20}
}

// Validate reports whether the parameters are usable (a core.Invalid error).
func (p CDCParams) Validate() error {
	switch {
	case p.Min < 64:
		return core.Invalid("chunker: CDC minimum chunk size %d is below 64", p.Min)
	case p.Avg < 256 || p.Avg&(p.Avg-1) != 0:
		return core.Invalid("chunker: CDC average chunk size %d is not a power of two of at least 256", p.Avg)
	case p.Min >= p.Avg:
		return core.Invalid("chunker: CDC minimum chunk size %d is not below the average %d", p.Min, p.Avg)
	case p.Max <= p.Avg:
		return core.Invalid("chunker: CDC maximum chunk size %d is not above the average %d", p.Max, p.Avg)
	case p.Max > maxBufferSize:
		return core.Invalid("chunker: CDC maximum chunk size %d is above %d", p.Max, maxBufferSize)
	}
	return nil
}

// CDC is a FastCDC content-defined chunker. It is immutable and safe for
// concurrent use.
//
// The cut rule (part of the repository format, pinned by test vectors):
// the Gear fingerprint fp starts at 0 at byte Min-64 of a chunk and takes
// fp = fp<<1 + gearTable[byte] for every byte from there on (so from byte
// Min-1 on it depends exactly on the 64 bytes that end at the current byte).
// After the byte at index i (0-based in the chunk, i >= Min-1) the chunk is
// cut, with length i+1, when fp & mask == 0, where mask is maskS (the top
// log2(Avg)+2 bits) while i+1 < Avg and maskL (the top log2(Avg)-2 bits)
// after: cuts are rare before Avg and frequent after it (normalized chunking,
// level 2). A chunk that reaches Max bytes is cut at Max; the end of the
// stream cuts the last chunk.
type CDC struct {
	p            CDCParams
	maskS, maskL uint64
	initial      int // capacity of a fresh chunk buffer
}

// NewCDC returns a content-defined chunker with the given parameters.
func NewCDC(p CDCParams) (*CDC, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	k := bits.Len(uint(p.Avg)) - 1 // Avg = 1<<k
	return &CDC{
		p:       p,
		maskS:   topBits(k + 2),
		maskL:   topBits(k - 2),
		initial: min(p.Max, 2*p.Avg),
	}, nil
}

// topBits returns a mask of the n most significant bits of a uint64.
func topBits(n int) uint64 { return ^uint64(0) << (64 - n) }

// Params returns the chunker's parameters.
func (c *CDC) Params() CDCParams { return c.p }

// Cut returns the length of the chunk that starts at data[0], given that
// data holds at least Max bytes or everything up to the end of the stream.
// It returns 0 only for empty data.
func (c *CDC) Cut(data []byte) int {
	cut, _, _ := c.advance(data, 0, 0)
	if cut < 0 {
		return min(len(data), c.p.Max)
	}
	return cut
}

// advance continues hashing the chunk that starts at b[0]: bytes before
// index p were hashed into fp already. It returns the chunk's length if a
// cut point lies in b (never beyond Max), or -1 with the position and
// fingerprint to resume from when more bytes arrive.
func (c *CDC) advance(b []byte, p int, fp uint64) (cut, next int, fpOut uint64) {
	n := min(len(b), c.p.Max)
	p = max(p, c.p.Min-64)
	if p >= n {
		return -1, p, fp
	}
	// Warm up: the 63 bytes before the first possible cut.
	if e := min(n, c.p.Min-1); p < e {
		for _, x := range b[p:e] {
			fp = fp<<1 + gearTable[x]
		}
		p = e
	}
	if e := min(n, c.p.Avg-1); p < e {
		i, f := gearScan(b[p:e], fp, c.maskS)
		if i >= 0 {
			return p + i + 1, 0, 0
		}
		p, fp = e, f
	}
	if p < n {
		i, f := gearScan(b[p:n], fp, c.maskL)
		if i >= 0 {
			return p + i + 1, 0, 0
		}
		p, fp = n, f
	}
	return -1, p, fp
}

// gearScan hashes b into fp byte by byte and returns the index of the first
// byte after which fp&mask == 0, or -1 and the fingerprint after all of b.
func gearScan(b []byte, fp, mask uint64) (int, uint64) {
	i := 0
	for ; len(b)-i >= 4; i += 4 {
		w := b[i : i+4 : i+4]
		fp = fp<<1 + gearTable[w[0]]
		if fp&mask == 0 {
			return i, fp
		}
		fp = fp<<1 + gearTable[w[1]]
		if fp&mask == 0 {
			return i + 1, fp
		}
		fp = fp<<1 + gearTable[w[2]]
		if fp&mask == 0 {
			return i + 2, fp
		}
		fp = fp<<1 + gearTable[w[3]]
		if fp&mask == 0 {
			return i + 3, fp
		}
	}
	for ; i < len(b); i++ {
		fp = fp<<1 + gearTable[b[i]]
		if fp&mask == 0 {
			return i, fp
		}
	}
	return -1, fp
}

// Scan returns a scanner that cuts r, from its current position (offset 0)
// to its end, into content-defined chunks.
func (c *CDC) Scan(r io.Reader) *CDCScanner {
	return &CDCScanner{c: c, r: r}
}

// readStep is how much a CDCScanner asks the reader for at a time once a
// chunk has Min bytes. The bytes read past a cut point are copied into the
// next chunk's buffer: on average half a step per chunk.
const readStep = 256 << 10

// maxEmptyReads bounds the (0, nil) reads tolerated before io.ErrNoProgress,
// as bufio does.
const maxEmptyReads = 100

// CDCScanner yields the content-defined chunks of one stream. It is not safe
// for concurrent use.
type CDCScanner struct {
	c   *CDC
	r   io.Reader
	off int64 // stream offset of buf[0]

	buf *buffer // holds the current chunk's bytes read so far (nil: none yet)
	n   int     // bytes in buf
	p   int     // resume position of the hash
	fp  uint64  // fingerprint at p
	eof bool
	err error
}

// Next returns the next chunk, or io.EOF after the last one.
func (s *CDCScanner) Next() (Chunk, error) {
	if s.err != nil {
		return Chunk{}, s.err
	}
	maxLen := s.c.p.Max
	for {
		if s.buf != nil {
			cut, p, fp := s.c.advance(s.buf.b[:s.n], s.p, s.fp)
			if cut >= 0 {
				return s.emit(cut), nil
			}
			s.p, s.fp = p, fp
			if s.n >= maxLen {
				return s.emit(maxLen), nil
			}
		}
		if s.eof {
			if s.n > 0 {
				return s.emit(s.n), nil
			}
			if s.buf != nil {
				s.buf.put()
				s.buf = nil
			}
			s.err = io.EOF
			return Chunk{}, io.EOF
		}
		if err := s.fill(); err != nil {
			if s.buf != nil {
				s.buf.put()
				s.buf = nil
			}
			s.err = err
			return Chunk{}, err
		}
	}
}

// fill reads the next piece of the stream into the buffer, growing it when
// the chunk outgrows its size class.
func (s *CDCScanner) fill() error {
	want := min(max(s.n+readStep, s.c.p.Min), s.c.p.Max)
	if s.buf == nil {
		s.buf = getBuffer(max(s.c.initial, want))
	} else if want > len(s.buf.b) {
		nb := getBuffer(max(want, min(2*len(s.buf.b), s.c.p.Max)))
		copy(nb.b, s.buf.b[:s.n])
		s.buf.put()
		s.buf = nb
	}
	for tries := 0; tries < maxEmptyReads; tries++ {
		m, err := s.r.Read(s.buf.b[s.n:want])
		s.n += m
		if err == io.EOF {
			s.eof = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("chunker: reading at offset %d: %w", s.off+int64(s.n), err)
		}
		if m > 0 {
			return nil
		}
	}
	return fmt.Errorf("chunker: reading at offset %d: %w", s.off+int64(s.n), io.ErrNoProgress)
}

// emit hands out the first length bytes of the buffer as a chunk and moves
// the bytes after them into a fresh buffer for the next chunk.
func (s *CDCScanner) emit(length int) Chunk {
	buf := s.buf
	rest := s.n - length
	s.buf, s.n, s.p, s.fp = nil, 0, 0, 0
	if rest > 0 {
		s.buf = getBuffer(max(s.c.initial, rest))
		s.n = copy(s.buf.b, buf.b[length:length+rest])
	}
	if 4*length < len(buf.b) && classShift(length) < buf.shift {
		// A short chunk (the end of a stream, or a small file): move it to
		// a buffer of its size so that it does not pin a large one.
		small := getBuffer(length)
		copy(small.b, buf.b[:length])
		buf.put()
		buf = small
	}
	c := chunkOf(s.off, buf, length)
	s.off += int64(length)
	return c
}
