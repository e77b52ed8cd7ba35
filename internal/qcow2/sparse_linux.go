package qcow2

import (
	"errors"
	"os"
	"syscall"
)

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// dataExtents walks f's data with SEEK_DATA / SEEK_HOLE within [0, size).
// It returns nil, nil when the file system cannot tell (everything is data
// then). The caller serialises calls on one file: they move its offset,
// which ReadAt does not use.
func dataExtents(f *os.File, size int64) (extentList, error) {
	out := extentList{}
	for off := int64(0); off < size; {
		data, err := f.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break
		}
		if err != nil {
			if off == 0 && (errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP)) {
				return nil, nil
			}
			return nil, err
		}
		if data >= size {
			break
		}
		hole, err := f.Seek(data, seekHole)
		if err != nil {
			return nil, err
		}
		hole = min(hole, size)
		if hole <= data {
			break
		}
		out.add(data, hole-data)
		off = hole
	}
	return out, nil
}
