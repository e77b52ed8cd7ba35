package format

import "github.com/cairn-backup/cairn/internal/core"

// A segment lists the chunk ids of a run of consecutive fixed-size chunks of
// a disk image: its plaintext is their 32-byte ids, concatenated, the zero ID
// for a chunk that is all zeros (not stored). A segment covers
// Config.SegmentChunks chunks, the image's last segment fewer.

// EncodeSegment returns the plaintext of a segment.
func EncodeSegment(ids []ID) []byte {
	b := make([]byte, len(ids)*len(ID{}))
	for i := range ids {
		copy(b[i*32:], ids[i][:])
	}
	return b
}

// DecodeSegment parses a segment that must hold exactly want ids.
func DecodeSegment(b []byte, want int) ([]ID, error) {
	if len(b)%32 != 0 || len(b)/32 != want {
		return nil, core.Corrupt("segment: %d bytes, want %d chunk ids", len(b), want)
	}
	ids := make([]ID, want)
	for i := range ids {
		copy(ids[i][:], b[i*32:])
	}
	return ids, nil
}

// SegmentIsZero reports whether every id is the zero ID: such a segment is
// not stored and the manifest lists the zero ID for it.
func SegmentIsZero(ids []ID) bool {
	for _, id := range ids {
		if !id.IsZero() {
			return false
		}
	}
	return true
}
