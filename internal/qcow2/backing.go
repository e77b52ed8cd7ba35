package qcow2

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/cairn-backup/cairn/internal/uncached"
)

// source is what a backing file offers a layer.
type source interface {
	Size() int64
	readAt(p []byte, off int64) error // [off, off+len(p)) within Size
	extents() ([]Extent, error)
	close() error
}

// qcow2Source is a qcow2 backing file: its active layer.
type qcow2Source struct {
	im *Image
	l  *Layer
}

func (s *qcow2Source) Size() int64                      { return s.l.size }
func (s *qcow2Source) readAt(p []byte, off int64) error { return s.l.read(p, off) }
func (s *qcow2Source) extents() ([]Extent, error)       { return s.l.Extents() }
func (s *qcow2Source) close() error                     { return s.im.Close() }

// rawSource is a raw backing file (or block device).
type rawSource struct {
	path    string
	f       *os.File
	data    *uncached.File // f, for reads of data
	size    int64
	regular bool
	mu      sync.Mutex // serialises SEEK_DATA / SEEK_HOLE walks
}

func (s *rawSource) Size() int64 { return s.size }

func (s *rawSource) readAt(p []byte, off int64) error {
	n, err := s.data.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		// The file shrank since it was opened: what is gone reads as zeros,
		// as QEMU reads past the end of a raw file.
		clear(p[n:])
		return nil
	}
	return fmt.Errorf("qcow2: reading raw backing file %s at 0x%x: %w", s.path, off, err)
}

func (s *rawSource) extents() ([]Extent, error) {
	if !s.regular {
		return []Extent{{0, s.size}}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := dataExtents(s.f, s.size)
	if err != nil {
		return nil, fmt.Errorf("qcow2: data extents of raw backing file %s: %w", s.path, err)
	}
	if e == nil {
		return []Extent{{0, s.size}}, nil
	}
	return e, nil
}

func (s *rawSource) close() error { return s.f.Close() }

// hostExtents returns the data extents of the image file itself, or nil
// (everything is data) when they cannot be had.
func (im *Image) hostExtents() extentList {
	if !im.regular {
		return nil
	}
	im.seekMu.Lock()
	defer im.seekMu.Unlock()
	size := im.fileSize.Load()
	if fi, err := im.f.Stat(); err == nil {
		size = max(size, fi.Size())
	}
	e, err := dataExtents(im.f, size)
	if err != nil || e == nil {
		return nil
	}
	if len(e) == 0 {
		return extentList{} // all hole: not nil, which would mean all data
	}
	return e
}
