package xfs

import (
	"bytes"
	"encoding/binary"
)

// Directory formats (xfs_da_format.h).
const (
	dirMagicBlockV5 = 0x58444233 // "XDB3": single-block directory
	dirMagicDataV5  = 0x58444433 // "XDD3": data block of a leaf or node directory
	dirMagicBlockV4 = 0x58443242 // "XD2B"
	dirMagicDataV4  = 0x58443244 // "XD2D"
	dirHdrLenV4     = 16         // magic, three best-free entries
	dirHdrLenV5     = 64         // xfs_dir3_data_hdr
	dirOffCRC       = 4
	dirOffBlkno     = 8
	dirOffUUID      = 24
	dirOffOwner     = 40
	dirBlockTailLen = 8 // xfs_dir2_block_tail: count, stale
	dirLeafEntLen   = 8 // xfs_dir2_leaf_entry: hash, address
	dirFreeTag      = 0xffff
	dirLeafOffset   = 32 << 30 // data blocks live below this byte offset
	maxNameLen      = 255
)

// dirEntry is one name in a directory.
type dirEntry struct {
	name  string
	ino   uint64
	ftype uint8 // 0 without the ftype feature
}

// validName reports whether a directory entry name may be used in a path:
// not empty, no slash, no NUL, not "." or "..".
func validName(name []byte) bool {
	return len(name) > 0 && bytes.IndexByte(name, '/') < 0 && bytes.IndexByte(name, 0) < 0
}

func isDot(name []byte) bool { return string(name) == "." || string(name) == ".." }

// parseShortform decodes a shortform directory (stored in the inode's data
// fork, di_size bytes): a header with the entry count, the count of 8-byte
// inode numbers and the parent, then the entries.
func parseShortform(b []byte, ftype bool) ([]dirEntry, error) {
	if len(b) < 2 {
		return nil, corruptf("shortform directory of %d bytes", len(b))
	}
	count, i8count := int(b[0]), b[1]
	inoLen := 4
	if i8count != 0 {
		inoLen = 8
	}
	pos := 2 + inoLen // past the parent
	if pos > len(b) {
		return nil, corruptf("shortform directory of %d bytes cannot hold its header", len(b))
	}
	ftypeLen := 0
	if ftype {
		ftypeLen = 1
	}
	ents := make([]dirEntry, 0, count)
	for i := 0; i < count; i++ {
		if pos+3 > len(b) {
			return nil, corruptf("shortform directory: entry %d at byte %d beyond its %d bytes", i, pos, len(b))
		}
		namelen := int(b[pos])
		end := pos + 3 + namelen + ftypeLen + inoLen
		if namelen == 0 || end > len(b) {
			return nil, corruptf("shortform directory: entry %d (name length %d) overruns its %d bytes", i, namelen, len(b))
		}
		name := b[pos+3 : pos+3+namelen]
		if !validName(name) || isDot(name) {
			return nil, corruptf("shortform directory: entry %d has an invalid name %q", i, name)
		}
		e := dirEntry{name: string(name)}
		p := pos + 3 + namelen
		if ftype {
			e.ftype = b[p]
			p++
		}
		if inoLen == 8 {
			e.ino = binary.BigEndian.Uint64(b[p:])
		} else {
			e.ino = uint64(binary.BigEndian.Uint32(b[p:]))
		}
		ents = append(ents, e)
		pos = end
	}
	return ents, nil
}

// dataBlockHeader checks the magic of a directory data or block-form block
// and returns the header length and the end of the entry area.
func dataBlockHeader(b []byte, v5 bool) (hdr, end int, err error) {
	be := binary.BigEndian
	hdr, blockMagic, dataMagic := dirHdrLenV4, uint32(dirMagicBlockV4), uint32(dirMagicDataV4)
	if v5 {
		hdr, blockMagic, dataMagic = dirHdrLenV5, dirMagicBlockV5, dirMagicDataV5
	}
	if len(b) < hdr+dirBlockTailLen {
		return 0, 0, corruptf("directory block of %d bytes", len(b))
	}
	switch magic := be.Uint32(b); magic {
	case dataMagic:
		return hdr, len(b), nil
	case blockMagic:
		// The block form ends with the hash index and a tail that counts it.
		count := uint64(be.Uint32(b[len(b)-dirBlockTailLen:]))
		index := count * dirLeafEntLen
		if index > uint64(len(b)-dirBlockTailLen-hdr) {
			return 0, 0, corruptf("%d index entries do not fit", count)
		}
		return hdr, len(b) - dirBlockTailLen - int(index), nil
	default:
		return 0, 0, corruptf("bad magic 0x%08x", magic)
	}
}

// parseDataBlock decodes the entries of one directory data block (or the
// block of a block-form directory), skipping "." and "..". Every entry and
// free region must lie inside the entry area and move forward by a
// multiple of 8 bytes, and every entry's tag must point back at it.
func parseDataBlock(b []byte, v5, ftype bool, out []dirEntry) ([]dirEntry, error) {
	be := binary.BigEndian
	pos, end, err := dataBlockHeader(b, v5)
	if err != nil {
		return out, err
	}
	ftypeLen := 0
	if ftype {
		ftypeLen = 1
	}
	for pos < end {
		if pos+4 > end {
			return out, corruptf("entry at byte %d overruns the entry area (%d)", pos, end)
		}
		if be.Uint16(b[pos:]) == dirFreeTag {
			length := int(be.Uint16(b[pos+2:]))
			if length < 8 || length%8 != 0 || length > end-pos {
				return out, corruptf("free region at byte %d has a bad length %d", pos, length)
			}
			if tag := int(be.Uint16(b[pos+length-2:])); tag != pos {
				return out, corruptf("free region at byte %d has tag %d", pos, tag)
			}
			pos += length
			continue
		}
		if pos+9 > end {
			return out, corruptf("entry at byte %d overruns the entry area (%d)", pos, end)
		}
		namelen := int(b[pos+8])
		size := (8 + 1 + namelen + ftypeLen + 2 + 7) &^ 7
		if namelen == 0 || size > end-pos {
			return out, corruptf("entry at byte %d has a bad name length %d", pos, namelen)
		}
		if tag := int(be.Uint16(b[pos+size-2:])); tag != pos {
			return out, corruptf("entry at byte %d has tag %d", pos, tag)
		}
		name := b[pos+9 : pos+9+namelen]
		if !validName(name) {
			return out, corruptf("entry at byte %d has an invalid name %q", pos, name)
		}
		if !isDot(name) {
			e := dirEntry{name: string(name), ino: be.Uint64(b[pos:])}
			if ftype {
				e.ftype = b[pos+9+namelen]
			}
			out = append(out, e)
		}
		pos += size
	}
	return out, nil
}

// checkDirBlock verifies the version 5 self-describing header of a
// directory block whose first file system block is linear block lin.
func (f *FS) checkDirBlock(b []byte, lin, ino uint64) error {
	if !f.sb.v5 {
		return nil
	}
	be := binary.BigEndian
	if len(b) < dirHdrLenV5 {
		return corruptf("directory block of %d bytes", len(b))
	}
	if f.checkCRC && !crcOK(b, dirOffCRC) {
		return corruptf("CRC mismatch")
	}
	if got, want := be.Uint64(b[dirOffBlkno:]), f.daddr(lin); got != want {
		return corruptf("records disk address %d, read from %d", got, want)
	}
	if got := be.Uint64(b[dirOffOwner:]); got != ino {
		return corruptf("owned by inode %d", got)
	}
	if !f.uuidEqual(b[dirOffUUID : dirOffUUID+16]) {
		return corruptf("UUID does not match the file system")
	}
	return nil
}

// readDir returns a directory's entries in on-disk order, without "." and
// "..".
func (f *FS) readDir(ip *inode) ([]dirEntry, error) {
	if ip.format == fmtLocal {
		ents, err := parseShortform(ip.dfork[:ip.size], f.sb.ftype)
		return ents, inodeErr(ip.ino, err)
	}
	exts, err := f.extents(ip)
	if err != nil {
		return nil, err
	}
	sb := f.sb
	dirFsbs := uint64(1) << sb.dirBlkLog
	leafStart := uint64(dirLeafOffset) >> sb.blockLog
	seen := make(map[uint64]bool) // data device blocks already read for this directory
	var out []dirEntry
	var buf []byte
	lastDB := ^uint64(0)
	for _, e := range exts {
		if e.off >= leafStart {
			break
		}
		end := min(e.off+e.count, leafStart)
		for fb := e.off &^ (dirFsbs - 1); fb < end; fb += dirFsbs {
			db := fb >> sb.dirBlkLog
			if db == lastDB {
				continue // this directory block started in the previous extent
			}
			lastDB = db
			// Each data device block may back one directory block only, so
			// that the work stays bounded by the image size.
			var first uint64
			for k := uint64(0); k < dirFsbs; k++ {
				lin, ok := mapBlock(exts, fb+k)
				if !ok {
					return nil, inodeErr(ip.ino, corruptf("directory block %d: file block %d is not mapped", db, fb+k))
				}
				if seen[lin] {
					return nil, inodeErr(ip.ino, corruptf("directory block %d: data device block %d is used twice", db, lin))
				}
				seen[lin] = true
				if k == 0 {
					first = lin
				}
			}
			if buf == nil {
				buf = make([]byte, sb.dirBlkSize())
			}
			if err := f.readMapped(exts, buf, int64(fb)<<sb.blockLog, true); err != nil {
				return nil, inodeErr(ip.ino, withContext(err, "directory block %d", db))
			}
			if err := f.checkDirBlock(buf, first, ip.ino); err != nil {
				return nil, inodeErr(ip.ino, withContext(err, "directory block %d", db))
			}
			if out, err = parseDataBlock(buf, sb.v5, sb.ftype, out); err != nil {
				return nil, inodeErr(ip.ino, withContext(err, "directory block %d", db))
			}
		}
	}
	return out, nil
}

// mapBlock returns the data device block behind file block fb, if it is
// mapped and written.
func mapBlock(exts []extent, fb uint64) (uint64, bool) {
	i := findExtent(exts, fb)
	if i == len(exts) || exts[i].off > fb || exts[i].unwritten {
		return 0, false
	}
	return exts[i].block + (fb - exts[i].off), true
}
