package chunker

import (
	"fmt"
	"io"

	"github.com/cairn-backup/cairn/internal/core"
)

// Limits of the fixed chunk size. The repository picks one size per image
// backup (64 to 256 KiB); the chunker accepts any power of two in between
// these bounds so that tests and experiments can use others.
const (
	MinFixedSize = 4 << 10
	MaxFixedSize = 16 << 20
)

// Fixed cuts images into chunks of Size bytes aligned to multiples of Size.
// It is immutable and safe for concurrent use.
type Fixed struct {
	size int
}

// NewFixed returns a fixed-size chunker. size must be a power of two between
// MinFixedSize and MaxFixedSize, so that chunks line up with qcow2 clusters
// (64 KiB) and file-system blocks.
func NewFixed(size int) (*Fixed, error) {
	if size < MinFixedSize || size > MaxFixedSize || size&(size-1) != 0 {
		return nil, core.Invalid("chunker: fixed chunk size %d is not a power of two between %d and %d",
			size, MinFixedSize, MaxFixedSize)
	}
	return &Fixed{size: size}, nil
}

// Size returns the chunk size in bytes.
func (f *Fixed) Size() int { return f.size }

// Scan returns a scanner that reads r from its current position to its end,
// which it takes as offset 0, in chunks of Size bytes (the last may be
// shorter). Every byte is read; all-zero chunks are reported as Zero.
func (f *Fixed) Scan(r io.Reader) *FixedScanner {
	return &FixedScanner{size: f.size, r: r}
}

// ScanExtents returns a scanner over the image r of size bytes, of which only
// the extents may hold data: chunks cover [0, size), a chunk entirely outside
// the extents is reported as Zero without reading r, and the parts of a chunk
// outside the extents are taken as zeros without reading them. The extents
// may be unsorted, overlapping or reach past size (they are normalised); a
// negative offset or length is an error. A read that ends early (the image
// is shorter than an extent says) is an error wrapping io.ErrUnexpectedEOF.
func (f *Fixed) ScanExtents(r io.ReaderAt, size int64, extents []Extent) (*FixedScanner, error) {
	if size < 0 {
		return nil, core.Invalid("chunker: negative image size %d", size)
	}
	ext, err := normalizeExtents(extents, size)
	if err != nil {
		return nil, err
	}
	return &FixedScanner{size: f.size, ra: r, total: size, extents: ext}, nil
}

// ScanExtentsOnly is ScanExtents yielding only the chunks that overlap the
// ranges only (in image order): the rest of the image is neither read nor
// reported. An empty only yields nothing.
func (f *Fixed) ScanExtentsOnly(r io.ReaderAt, size int64, extents, only []Extent) (*FixedScanner, error) {
	s, err := f.ScanExtents(r, size, extents)
	if err != nil {
		return nil, err
	}
	if s.only, err = normalizeExtents(only, size); err != nil {
		return nil, err
	}
	s.restricted = true
	return s, nil
}

// FixedScanner yields the chunks of one stream or image. It is not safe for
// concurrent use.
type FixedScanner struct {
	size int
	off  int64
	err  error

	// stream mode
	r   io.Reader
	eof bool

	// image mode (ra != nil)
	ra      io.ReaderAt
	total   int64
	extents []Extent // normalised; extents[0] is the first that ends after off
	// restricted: only chunks overlapping only are yielded
	restricted bool
	only       []Extent // normalised; only[0] is the first that ends after off
}

// Next returns the next chunk, or io.EOF after the last one.
func (s *FixedScanner) Next() (Chunk, error) {
	if s.ra != nil {
		sp, err := s.NextSpan()
		if err != nil {
			return Chunk{}, err
		}
		c, err := s.ReadSpan(sp)
		if err != nil {
			s.err = err
		}
		return c, err
	}
	if s.err != nil {
		return Chunk{}, s.err
	}
	c, err := s.nextStream()
	if err != nil {
		s.err = err
		return Chunk{}, err
	}
	s.off += int64(c.Length)
	return c, nil
}

func (s *FixedScanner) nextStream() (Chunk, error) {
	if s.eof {
		return Chunk{}, io.EOF
	}
	buf := getBuffer(s.size)
	b := buf.b[:s.size]
	n, empty := 0, 0
	for n < len(b) {
		m, err := s.r.Read(b[n:])
		n += m
		if err == io.EOF {
			s.eof = true
			break
		}
		if err == nil && m == 0 {
			empty++
		}
		if err == nil && empty >= maxEmptyReads {
			err = io.ErrNoProgress
		}
		if err != nil {
			buf.put()
			return Chunk{}, fmt.Errorf("chunker: reading at offset %d: %w", s.off+int64(n), err)
		}
	}
	if n == 0 {
		buf.put()
		return Chunk{}, io.EOF
	}
	if IsZero(b[:n]) {
		buf.put()
		return Chunk{Offset: s.off, Length: n, Zero: true}, nil
	}
	return chunkOf(s.off, buf, n), nil
}

// A Span is where the next chunk of an image lies, before it is read: its
// offset, its length and the parts of it that may hold data.
type Span struct {
	Offset int64
	Length int
	data   []Extent // within [Offset, Offset+Length); none: a hole
}

// NextSpan is Next for an image scanner (ScanExtents) without the read
// (Next is NextSpan then ReadSpan): ReadSpan reads the span it returns, on
// any goroutine, so that several chunks can be read at once (an image that is
// not in the page cache is read from the disk while other chunks are
// processed).
func (s *FixedScanner) NextSpan() (Span, error) {
	if s.ra == nil {
		return Span{}, core.Invalid("chunker: NextSpan on a stream scanner")
	}
	if s.err != nil {
		return Span{}, s.err
	}
	sp, err := s.nextSpan()
	if err != nil {
		s.err = err
		return Span{}, err
	}
	s.off += int64(sp.Length)
	return sp, nil
}

func (s *FixedScanner) nextSpan() (Span, error) {
	if s.restricted {
		for len(s.only) > 0 && s.only[0].End() <= s.off {
			s.only = s.only[1:]
		}
		if len(s.only) == 0 {
			return Span{}, io.EOF
		}
		// Skip to the chunk holding the next range's start (s.off stays
		// a multiple of the chunk size).
		s.off = max(s.off, s.only[0].Offset/int64(s.size)*int64(s.size))
	}
	if s.off >= s.total {
		return Span{}, io.EOF
	}
	start := s.off
	end := min(start+int64(s.size), s.total)
	sp := Span{Offset: start, Length: int(end - start)}
	for len(s.extents) > 0 && s.extents[0].End() <= start {
		s.extents = s.extents[1:]
	}
	for _, e := range s.extents {
		if e.Offset >= end {
			break
		}
		lo, hi := max(e.Offset, start), min(e.End(), end)
		sp.data = append(sp.data, Extent{Offset: lo, Length: hi - lo})
	}
	return sp, nil
}

// ReadSpan reads the chunk at sp: a span without data, or whose data reads
// as zeros, is a Zero chunk. It is safe for concurrent use.
func (s *FixedScanner) ReadSpan(sp Span) (Chunk, error) {
	if len(sp.data) == 0 {
		// Entirely in a hole: nothing to read.
		return Chunk{Offset: sp.Offset, Length: sp.Length, Zero: true}, nil
	}
	buf := getBuffer(s.size)
	b := buf.b[:sp.Length]
	zero := true
	pos := sp.Offset // bytes before pos are filled
	for _, e := range sp.data {
		clear(b[pos-sp.Offset : e.Offset-sp.Offset])
		piece := b[e.Offset-sp.Offset : e.End()-sp.Offset]
		if err := readFullAt(s.ra, piece, e.Offset); err != nil {
			buf.put()
			return Chunk{}, err
		}
		if zero && !IsZero(piece) {
			zero = false
		}
		pos = e.End()
	}
	if zero {
		buf.put()
		return Chunk{Offset: sp.Offset, Length: sp.Length, Zero: true}, nil
	}
	clear(b[pos-sp.Offset:])
	return chunkOf(sp.Offset, buf, sp.Length), nil
}

// readFullAt fills p from r at off. An io.EOF that comes with a full read is
// not an error (io.ReaderAt allows it at the end of the input).
func readFullAt(r io.ReaderAt, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := r.ReadAt(p, off)
		p, off = p[n:], off+int64(n)
		if len(p) == 0 {
			return nil
		}
		if err == io.EOF || (err == nil && n == 0) {
			return fmt.Errorf("chunker: reading at offset %d: image ends inside a data extent: %w", off, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("chunker: reading at offset %d: %w", off, err)
		}
	}
	return nil
}
