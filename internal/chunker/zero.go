package chunker

import (
	"bytes"
	"encoding/binary"
)

// zeroBlock is what IsZero compares against.
var zeroBlock [64 << 10]byte

// IsZero reports whether every byte of b is zero. It compares b with a block
// of zeros through bytes.Equal (the runtime's vectorised memequal), which
// stops at the first differing block, so data that is not zero is usually
// rejected within its first few bytes.
func IsZero(b []byte) bool {
	// A quick look at the first word rejects most data chunks at once.
	if len(b) >= 8 && binary.LittleEndian.Uint64(b) != 0 {
		return false
	}
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
