//go:build !linux

package chunker

import (
	"fmt"
	"os"
)

// SparseExtents returns one extent for the whole file: holes are found only
// on Linux (SEEK_DATA / SEEK_HOLE).
func SparseExtents(f *os.File) ([]Extent, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("chunker: sparse extents of %s: %w", f.Name(), err)
	}
	if fi.Size() == 0 {
		return nil, nil
	}
	return []Extent{{Offset: 0, Length: fi.Size()}}, nil
}
