package chunker

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// SparseExtents returns the data extents of f, found with lseek(2)
// SEEK_DATA / SEEK_HOLE, in order, within [0, size of f). A file with no data
// (all hole, or empty) has no extents. When the file system (or the kind of
// file) does not support SEEK_DATA, the whole file is one extent. Extents are
// as precise as the file system: ext4 and tmpfs report allocated blocks,
// others may report more data than was written, never less. f's file
// offset is restored before returning; f is not read.
func SparseExtents(f *os.File) ([]Extent, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("chunker: sparse extents of %s: %w", f.Name(), err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("chunker: sparse extents of %s: %w", f.Name(), err)
	}
	var extents []Extent
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		extents, serr = seekExtents(int(fd), fi)
	})
	if cerr == nil {
		cerr = serr
	}
	if cerr != nil {
		return nil, fmt.Errorf("chunker: sparse extents of %s: %w", f.Name(), cerr)
	}
	return extents, nil
}

func seekExtents(fd int, fi os.FileInfo) (extents []Extent, err error) {
	saved, err := unix.Seek(fd, 0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	defer func() {
		if _, rerr := unix.Seek(fd, saved, io.SeekStart); rerr != nil && err == nil {
			err = rerr
		}
	}()
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		// Block devices report size 0 in stat; ask the device.
		if size, err = unix.Seek(fd, 0, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			if off == 0 && unsupported(err) {
				return []Extent{{Offset: 0, Length: size}}, nil
			}
			return nil, err
		}
		if data >= size {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		hole = min(hole, size)
		if hole <= data {
			// A file that shrank between the two calls.
			break
		}
		extents = append(extents, Extent{Offset: data, Length: hole - data})
		off = hole
	}
	return extents, nil
}

func unsupported(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) ||
		errors.Is(err, unix.ESPIPE)
}
