package blob

import (
	"bytes"
	"context"
	"fmt"
	"io"
)

// SizedReader returns a reader that yields exactly the size bytes of r and
// then io.EOF. If r ends early, the reader returns an error wrapping
// io.ErrUnexpectedEOF; if r holds more than size bytes, the reader returns an
// error instead of its last bytes (it looks one byte ahead before handing
// them out), so that an upload built on it never completes with a cut
// object. Backends use it to keep Save's size promise.
func SizedReader(r io.Reader, size int64, name string) io.Reader {
	return &sizedReader{r: r, left: size, size: size, name: name}
}

type sizedReader struct {
	r    io.Reader
	left int64
	size int64
	name string
	err  error // sticky: the error (or io.EOF) every later Read returns
}

func (s *sizedReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.left == 0 {
		if err := s.checkEnd(); err != nil {
			return 0, err
		}
		s.err = io.EOF
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	switch {
	case err == io.EOF && s.left > 0:
		s.err = fmt.Errorf("saving blob %s: the reader ended after %d of the %d bytes announced: %w",
			s.name, s.size-s.left, s.size, io.ErrUnexpectedEOF)
		return 0, s.err
	case err != nil && err != io.EOF:
		s.err = err
		return 0, err
	case s.left == 0:
		// The last bytes: hand them out only if nothing follows.
		if err := s.checkEnd(); err != nil {
			return 0, err
		}
		s.err = io.EOF
		return n, nil
	}
	return n, nil
}

// checkEnd makes sure the underlying reader has nothing more.
func (s *sizedReader) checkEnd() error {
	var one [1]byte
	for range 100 {
		n, err := s.r.Read(one[:])
		if n > 0 {
			s.err = fmt.Errorf("saving blob %s: the reader holds more than the %d bytes announced", s.name, s.size)
			return s.err
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			s.err = err
			return err
		}
	}
	s.err = io.ErrNoProgress
	return s.err
}

// ContextReader returns a reader that fails with ctx's error once ctx is
// done. Backends whose I/O ignores contexts (files, memory) wrap readers in it.
func ContextReader(ctx context.Context, r io.Reader) io.Reader {
	return &contextReader{ctx: ctx, r: r}
}

type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ExactReadCloser wraps rc, which promises n bytes of name: reaching the end
// before n bytes is an error wrapping io.ErrUnexpectedEOF, and reading stops
// after n bytes. Close closes rc.
func ExactReadCloser(rc io.ReadCloser, name string, n int64) io.ReadCloser {
	return &exactReadCloser{rc: rc, name: name, left: n, want: n}
}

type exactReadCloser struct {
	rc   io.ReadCloser
	name string
	left int64
	want int64
}

func (e *exactReadCloser) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.rc.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = fmt.Errorf("loading blob %s: got %d of %d bytes: %w", e.name, e.want-e.left, e.want, io.ErrUnexpectedEOF)
	}
	if err == nil && e.left == 0 {
		err = io.EOF
	}
	return n, err
}

func (e *exactReadCloser) Close() error { return e.rc.Close() }

// SaveBytes saves data under name.
func SaveBytes(ctx context.Context, s Store, name string, data []byte) error {
	return s.Save(ctx, name, NewBytesReader(data), int64(len(data)))
}

// A BytesReader reads a byte slice that a store may also take whole with
// Bytes (the local store writes it in one call).
type BytesReader struct {
	*bytes.Reader
	b []byte
}

// NewBytesReader returns a BytesReader of b.
func NewBytesReader(b []byte) *BytesReader { return &BytesReader{Reader: bytes.NewReader(b), b: b} }

// Bytes returns the unread bytes.
func (r *BytesReader) Bytes() []byte { return r.b[len(r.b)-r.Len():] }

// LoadAll reads the whole object name.
func LoadAll(ctx context.Context, s Store, name string) ([]byte, error) {
	return LoadRange(ctx, s, name, 0, 0)
}

// LoadRange reads the bytes [offset, offset+length) of name (length 0: to the
// end) into memory.
func LoadRange(ctx context.Context, s Store, name string, offset, length int64) ([]byte, error) {
	return LoadRangeInto(ctx, s, name, offset, length, nil)
}

// LoadRangeInto is LoadRange reading into buf when it has room (a range of
// known length is read straight into a buffer of exactly that length). A
// range that ends early is an error wrapping io.ErrUnexpectedEOF.
func LoadRangeInto(ctx context.Context, s Store, name string, offset, length int64, buf []byte) ([]byte, error) {
	rc, err := s.Load(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	if length > 0 {
		if int64(cap(buf)) < length {
			buf = make([]byte, length)
		}
		buf = buf[:length]
		var n int
		n, err = io.ReadFull(rc, buf)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("loading %s: got %d of %d bytes at %d: %w", name, n, length, offset, io.ErrUnexpectedEOF)
		}
	} else {
		b := bytes.NewBuffer(buf[:0])
		_, err = b.ReadFrom(rc)
		buf = b.Bytes()
	}
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return buf, nil
}
