package format

import (
	"encoding/hex"
	"fmt"

	"github.com/cairn-backup/cairn/internal/core"
)

// ID names a blob: the keyed hash of its plaintext (see crypto.ChunkID).
// The zero ID is never the id of a stored blob; in an image segment it stands
// for an all-zero chunk that is not stored.
type ID [32]byte

// String returns the id as 64 lower-case hex digits.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 bytes as hex, for messages.
func (id ID) Short() string { return hex.EncodeToString(id[:8]) }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses 64 hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return id, core.Invalid("invalid id %.70q: want 64 hex digits", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, core.Invalid("invalid id %.70q: %v", s, err)
	}
	return id, nil
}

// MarshalText encodes the id as hex (JSON strings use it).
func (id ID) MarshalText() ([]byte, error) {
	b := make([]byte, 2*len(id))
	hex.Encode(b, id[:])
	return b, nil
}

// UnmarshalText decodes 64 hex digits.
func (id *ID) UnmarshalText(b []byte) error {
	if len(b) != 2*len(id) {
		return fmt.Errorf("invalid id: %d characters, want 64 hex digits", len(b))
	}
	_, err := hex.Decode(id[:], b)
	if err != nil {
		return fmt.Errorf("invalid id: %w", err)
	}
	return nil
}
