package format

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"

	"github.com/cairn-backup/cairn/internal/core"
)

// A pack file is a run of stored blobs followed by its sealed header and a
// fixed trailer:
//
//	blob 1 ‖ blob 2 ‖ ... ‖ blob n ‖ Seal(header) ‖ trailer
//
// The header plaintext is PackHeaderMagic followed by n entries of
// PackEntrySize bytes (see PackEntry.put). Blob i starts where blob i-1 ends;
// the first starts at 0. The trailer is 16 bytes: the sealed header's length
// (uint32 LE), its CRC32C (uint32 LE), and PackMagic.
const (
	PackMagic       = "cairnpk1"
	PackHeaderMagic = "CPH1"
	PackTrailerSize = 16
	PackEntrySize   = 48
	// MaxPackEntries bounds a header so that a damaged length cannot make a
	// reader allocate without limit (a 64 MiB pack of 4 KiB blobs has 16K).
	MaxPackEntries = 1 << 20
	// MaxBlobSize is the largest blob a pack may hold (the largest CDC chunk
	// is 8 MiB; sealing and a failed compression add little).
	MaxBlobSize = 64 << 20
)

// Flags of a stored blob.
const (
	// FlagZstd: the sealed payload is zstd-compressed plaintext. Without it
	// the payload is the plaintext itself.
	FlagZstd uint8 = 1
)

// castagnoli is the CRC32C table used for every checksum of the format.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C returns the CRC-32C (Castagnoli) of b.
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// PackEntry describes one blob in a pack (and, with its pack, in an index).
type PackEntry struct {
	Type      BlobType `json:"type"`
	Flags     uint8    `json:"flags"`
	ID        ID       `json:"id"`
	Offset    uint32   `json:"offset"`     // in the pack; implied by the order in a pack header
	Length    uint32   `json:"length"`     // stored (sealed) bytes
	RawLength uint32   `json:"raw_length"` // plaintext bytes
	CRC       uint32   `json:"crc32c"`     // CRC32C of the stored bytes
}

// put writes e's 48 bytes: type u8, flags u8, reserved u16 (0), length u32,
// raw length u32, crc32c u32, id [32]byte, all little-endian.
func (e *PackEntry) put(b []byte) {
	b[0] = byte(e.Type)
	b[1] = e.Flags
	b[2], b[3] = 0, 0
	binary.LittleEndian.PutUint32(b[4:], e.Length)
	binary.LittleEndian.PutUint32(b[8:], e.RawLength)
	binary.LittleEndian.PutUint32(b[12:], e.CRC)
	copy(b[16:48], e.ID[:])
}

func (e *PackEntry) get(b []byte) error {
	e.Type = BlobType(b[0])
	e.Flags = b[1]
	e.Length = binary.LittleEndian.Uint32(b[4:])
	e.RawLength = binary.LittleEndian.Uint32(b[8:])
	e.CRC = binary.LittleEndian.Uint32(b[12:])
	copy(e.ID[:], b[16:48])
	if b[2] != 0 || b[3] != 0 {
		return core.Corrupt("blob %s: reserved bytes are not zero", e.ID.Short())
	}
	return e.check()
}

// check validates the fields every entry must satisfy.
func (e *PackEntry) check() error {
	switch {
	case !e.Type.Valid():
		return core.Corrupt("unknown blob type %d", e.Type)
	case e.Flags&^FlagZstd != 0:
		return core.Corrupt("blob %s: unknown flags %#x", e.ID.Short(), e.Flags)
	case e.Length < SealOverhead || e.Length > MaxBlobSize:
		return core.Corrupt("blob %s: stored length %d out of range", e.ID.Short(), e.Length)
	case e.RawLength > MaxBlobSize:
		return core.Corrupt("blob %s: length %d out of range", e.ID.Short(), e.RawLength)
	case e.Flags&FlagZstd == 0 && e.RawLength+SealOverhead != e.Length:
		return core.Corrupt("blob %s: uncompressed blob of %d bytes stored in %d", e.ID.Short(), e.RawLength, e.Length)
	case e.ID.IsZero():
		return core.Corrupt("blob with the zero id")
	}
	return nil
}

// SealOverhead is what sealing adds to a payload: a 12-byte nonce and a
// 16-byte tag.
const SealOverhead = 28

// EncodePackHeader returns the plaintext header of a pack holding entries,
// in order. The entries' Offset fields are ignored.
func EncodePackHeader(entries []PackEntry) []byte {
	b := make([]byte, len(PackHeaderMagic)+len(entries)*PackEntrySize)
	copy(b, PackHeaderMagic)
	for i := range entries {
		entries[i].put(b[len(PackHeaderMagic)+i*PackEntrySize:])
	}
	return b
}

// DecodePackHeader parses a pack header plaintext; blobsSize is the number of
// bytes before the sealed header, which the entries must fill exactly. The
// returned entries carry their offsets.
func DecodePackHeader(b []byte, blobsSize int64) ([]PackEntry, error) {
	if !bytes.HasPrefix(b, []byte(PackHeaderMagic)) {
		return nil, core.Corrupt("pack header: bad magic")
	}
	b = b[len(PackHeaderMagic):]
	if len(b)%PackEntrySize != 0 {
		return nil, core.Corrupt("pack header: %d bytes of entries is not a multiple of %d", len(b), PackEntrySize)
	}
	n := len(b) / PackEntrySize
	if n > MaxPackEntries {
		return nil, core.Corrupt("pack header: %d entries, at most %d allowed", n, MaxPackEntries)
	}
	entries := make([]PackEntry, n)
	var off int64
	for i := range entries {
		e := &entries[i]
		if err := e.get(b[i*PackEntrySize:]); err != nil {
			return nil, core.Corrupt("pack header entry %d: %v", i, err)
		}
		e.Offset = uint32(off)
		off += int64(e.Length)
		if off > blobsSize {
			return nil, core.Corrupt("pack header: entry %d ends at %d, past the %d bytes of blobs", i, off, blobsSize)
		}
	}
	if off != blobsSize {
		return nil, core.Corrupt("pack header: entries cover %d bytes, the pack holds %d", off, blobsSize)
	}
	return entries, nil
}

// EncodePackTrailer returns the trailer for a sealed header.
func EncodePackTrailer(sealedHeader []byte) []byte {
	t := make([]byte, PackTrailerSize)
	binary.LittleEndian.PutUint32(t[0:], uint32(len(sealedHeader)))
	binary.LittleEndian.PutUint32(t[4:], CRC32C(sealedHeader))
	copy(t[8:], PackMagic)
	return t
}

// DecodePackTrailer parses a trailer of a pack of packSize bytes and returns
// the sealed header's length and CRC32C. A pack of a newer format version is
// refused with a message that says to upgrade.
func DecodePackTrailer(t []byte, packSize int64) (headerLen int64, crc uint32, err error) {
	if len(t) != PackTrailerSize {
		return 0, 0, core.Corrupt("pack trailer: %d bytes, want %d", len(t), PackTrailerSize)
	}
	magic := string(t[8:])
	if magic != PackMagic {
		if magic[:7] == PackMagic[:7] && magic[7] > PackMagic[7] {
			return 0, 0, core.E(core.KindInternal, "format_version", "pack format %q is newer than this cairn supports (%q): upgrade cairn", magic, PackMagic)
		}
		return 0, 0, core.Corrupt("pack trailer: bad magic (not a cairn pack, or truncated)")
	}
	headerLen = int64(binary.LittleEndian.Uint32(t[0:]))
	crc = binary.LittleEndian.Uint32(t[4:])
	if headerLen < SealOverhead+int64(len(PackHeaderMagic)) || headerLen > packSize-PackTrailerSize {
		return 0, 0, core.Corrupt("pack trailer: header length %d does not fit a pack of %d bytes", headerLen, packSize)
	}
	if headerLen > SealOverhead+int64(len(PackHeaderMagic))+MaxPackEntries*PackEntrySize {
		return 0, 0, core.Corrupt("pack trailer: header length %d too large", headerLen)
	}
	return headerLen, crc, nil
}

// BlobAD returns the additional data a blob of type t and id is sealed with,
// so that a stored blob cannot be moved to another id or type unnoticed.
func BlobAD(t BlobType, id ID) []byte {
	ad := make([]byte, 0, 14+33)
	ad = append(ad, "cairn blob v1\x00"...)
	ad = append(ad, byte(t))
	return append(ad, id[:]...)
}

// PackHeaderAD is the additional data of a sealed pack header.
var PackHeaderAD = []byte("cairn pack header v1")
