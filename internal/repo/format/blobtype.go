package format

import "fmt"

// BlobType says what a blob holds. It is stored in pack headers and index
// files and bound into each blob's encryption, so a blob cannot be passed off
// as another type.
type BlobType uint8

const (
	// DataBlob is a chunk of file or image content.
	DataBlob BlobType = 1
	// TreeBlob is a directory listing of a file tree backup (JSON, see
	// package filebackup).
	TreeBlob BlobType = 2
	// SegmentBlob is a run of chunk ids of a disk image backup.
	SegmentBlob BlobType = 3
)

// Valid reports whether t is a known type.
func (t BlobType) Valid() bool { return t >= DataBlob && t <= SegmentBlob }

func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	case SegmentBlob:
		return "segment"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// MarshalText writes the type's name ("data", "tree", "segment"), for JSON.
func (t BlobType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }
