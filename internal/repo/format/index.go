package format

import (
	"bytes"
	"encoding/binary"

	"github.com/cairn-backup/cairn/internal/core"
)

// IndexMagic starts the plaintext of an index file, which is:
//
//	"cairnix1" ‖ pack count u32 ‖ pack...
//	pack  = pack id [32]byte ‖ entry count u32 ‖ entry...
//	entry = offset u32 ‖ the 48 bytes of a pack header entry
//
// all little-endian. Stored, the plaintext is zstd-compressed and sealed.
const IndexMagic = "cairnix1"

// IndexPack lists the blobs of one pack.
type IndexPack struct {
	ID      ID          `json:"pack"` // the pack's name is data/<first two hex digits>/<hex>
	Entries []PackEntry `json:"blobs"`
}

// EncodeIndex returns the plaintext of an index file listing packs.
func EncodeIndex(packs []IndexPack) []byte {
	n := len(IndexMagic) + 4
	for _, p := range packs {
		n += 36 + len(p.Entries)*(4+PackEntrySize)
	}
	b := make([]byte, 0, n)
	b = append(b, IndexMagic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(packs)))
	var e [PackEntrySize]byte
	for _, p := range packs {
		b = append(b, p.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p.Entries)))
		for i := range p.Entries {
			b = binary.LittleEndian.AppendUint32(b, p.Entries[i].Offset)
			p.Entries[i].put(e[:])
			b = append(b, e[:]...)
		}
	}
	return b
}

// DecodeIndex parses the plaintext of an index file. Within a pack, entries
// must be in offset order and must not overlap.
func DecodeIndex(b []byte) ([]IndexPack, error) {
	if !bytes.HasPrefix(b, []byte(IndexMagic)) {
		if len(b) >= len(IndexMagic) && bytes.HasPrefix(b, []byte(IndexMagic[:7])) && b[7] > IndexMagic[7] {
			return nil, core.E(core.KindInternal, "format_version", "index format %q is newer than this cairn supports (%q): upgrade cairn", b[:8], IndexMagic)
		}
		return nil, core.Corrupt("index: bad magic")
	}
	b = b[len(IndexMagic):]
	if len(b) < 4 {
		return nil, core.Corrupt("index: truncated")
	}
	n := binary.LittleEndian.Uint32(b)
	b = b[4:]
	if uint64(n)*36 > uint64(len(b)) {
		return nil, core.Corrupt("index: %d packs cannot fit in %d bytes", n, len(b))
	}
	packs := make([]IndexPack, n)
	for i := range packs {
		if len(b) < 36 {
			return nil, core.Corrupt("index: pack %d truncated", i)
		}
		p := &packs[i]
		copy(p.ID[:], b)
		count := binary.LittleEndian.Uint32(b[32:])
		b = b[36:]
		if uint64(count)*(4+PackEntrySize) > uint64(len(b)) {
			return nil, core.Corrupt("index: pack %s: %d entries cannot fit in %d bytes", p.ID.Short(), count, len(b))
		}
		p.Entries = make([]PackEntry, count)
		var end uint64
		for j := range p.Entries {
			e := &p.Entries[j]
			e.Offset = binary.LittleEndian.Uint32(b)
			if err := e.get(b[4 : 4+PackEntrySize]); err != nil {
				return nil, core.Corrupt("index: pack %s entry %d: %v", p.ID.Short(), j, err)
			}
			b = b[4+PackEntrySize:]
			if uint64(e.Offset) < end {
				return nil, core.Corrupt("index: pack %s entry %d overlaps the one before", p.ID.Short(), j)
			}
			end = uint64(e.Offset) + uint64(e.Length)
		}
	}
	if len(b) != 0 {
		return nil, core.Corrupt("index: %d bytes after the last pack", len(b))
	}
	return packs, nil
}

// IndexAD is the additional data of a sealed index file.
var IndexAD = []byte("cairn index v1")
