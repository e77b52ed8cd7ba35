package xfs

import (
	"encoding/binary"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crcOK reports whether the CRC32C stored little endian at off in b matches
// b with those four bytes taken as zero, as version 5 metadata stores it.
func crcOK(b []byte, off int) bool {
	if off < 0 || off+4 > len(b) {
		return false
	}
	return binary.LittleEndian.Uint32(b[off:]) == metadataCRC(b, off)
}

// metadataCRC computes the CRC32C of b with the CRC field at off zeroed.
func metadataCRC(b []byte, off int) uint32 {
	var zero [4]byte
	c := crc32.Update(0, castagnoli, b[:off])
	c = crc32.Update(c, castagnoli, zero[:])
	return crc32.Update(c, castagnoli, b[off+4:])
}
