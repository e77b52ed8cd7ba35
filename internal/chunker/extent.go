package chunker

import (
	"slices"

	"github.com/cairn-backup/cairn/internal/core"
)

// Extent is a range of an image that may hold data; everything outside the
// extents of an image is a hole and reads as zeros.
type Extent struct {
	Offset int64
	Length int64
}

// End returns the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// normalizeExtents returns the extents clipped to [0, size), sorted, with
// empty ones dropped and overlapping or touching ones merged. The input is
// not modified. Negative offsets or lengths, and lengths that overflow, are
// invalid.
func normalizeExtents(extents []Extent, size int64) ([]Extent, error) {
	out := make([]Extent, 0, len(extents))
	for _, e := range extents {
		if e.Offset < 0 || e.Length < 0 || e.Offset > maxInt64-e.Length {
			return nil, core.Invalid("chunker: invalid extent (offset %d, length %d)", e.Offset, e.Length)
		}
		if e.Length == 0 || e.Offset >= size {
			continue
		}
		if e.End() > size {
			e.Length = size - e.Offset
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Extent) int {
		switch {
		case a.Offset < b.Offset:
			return -1
		case a.Offset > b.Offset:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, e := range out {
		if n := len(merged); n > 0 && e.Offset <= merged[n-1].End() {
			if e.End() > merged[n-1].End() {
				merged[n-1].Length = e.End() - merged[n-1].Offset
			}
			continue
		}
		merged = append(merged, e)
	}
	return merged, nil
}

const maxInt64 = 1<<63 - 1
