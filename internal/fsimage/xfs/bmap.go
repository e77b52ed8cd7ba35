package xfs

import (
	"bytes"
	"encoding/binary"
	"sort"
)

// Extent records and bmap B+tree blocks (xfs_format.h).
const (
	bmbtRecLen       = 16
	bmbtKeyPtrLen    = 16         // one key (startoff) plus one pointer, both 64 bits
	bmdrHdrLen       = 4          // root in the inode: level, numrecs
	bmbtMagicV5      = 0x424d4133 // "BMA3"
	bmbtMagicV4      = 0x424d4150 // "BMAP"
	bmbtHdrLenV4     = 24
	bmbtHdrLenV5     = 72
	bmbtOffLevel     = 4
	bmbtOffNumrecs   = 6
	bmbtOffBlkno     = 24
	bmbtOffUUID      = 40
	bmbtOffOwner     = 56
	bmbtCRCOffset    = 64
	maxFileOffBlocks = 1<<54 - 1 // startoff is 54 bits
)

// extent maps count file blocks from file block off to the data device
// blocks from block (a linear index: AG number times AG size plus AG block).
type extent struct {
	off       uint64
	block     uint64
	count     uint64
	unwritten bool
}

// decodeExtent unpacks one 128-bit extent record: 1 bit unwritten flag, 54
// bits file offset, 52 bits start block (encoded, AG-relative), 21 bits
// length.
func decodeExtent(rec []byte) (off, fsb, count uint64, unwritten bool) {
	l0 := binary.BigEndian.Uint64(rec)
	l1 := binary.BigEndian.Uint64(rec[8:])
	unwritten = l0>>63 != 0
	off = (l0 >> 9) & maxFileOffBlocks
	fsb = (l0&0x1ff)<<43 | l1>>21
	count = l1 & (1<<21 - 1)
	return
}

// appendExtents decodes n records from recs and appends them to out,
// checking each one on its own; the order is checked by checkExtentOrder.
func (sb *superblock) appendExtents(out []extent, recs []byte, n int) ([]extent, error) {
	if n < 0 || n > len(recs)/bmbtRecLen {
		return out, corruptf("%d extent records in %d bytes", n, len(recs))
	}
	for i := 0; i < n; i++ {
		off, fsb, count, unwritten := decodeExtent(recs[i*bmbtRecLen:])
		if count == 0 {
			return out, corruptf("extent record %d: zero length", i)
		}
		if off+count > maxFileOffBlocks {
			return out, corruptf("extent record %d: file blocks %d+%d beyond the largest offset", i, off, count)
		}
		lin, err := sb.fsbToLinear(fsb, count)
		if err != nil {
			return out, corruptf("extent record %d: %v", i, err)
		}
		out = append(out, extent{off: off, block: lin, count: count, unwritten: unwritten})
	}
	return out, nil
}

// checkExtentOrder verifies that extents are sorted by file offset and do
// not overlap, which every lookup relies on.
func checkExtentOrder(exts []extent) error {
	for i := 1; i < len(exts); i++ {
		if exts[i].off < exts[i-1].off+exts[i-1].count {
			return corruptf("extent at file block %d overlaps or precedes the one at %d+%d",
				exts[i].off, exts[i-1].off, exts[i-1].count)
		}
	}
	return nil
}

// findExtent returns the index of the first extent that ends after file
// block fb (len(exts) if none does).
func findExtent(exts []extent, fb uint64) int {
	return sort.Search(len(exts), func(i int) bool { return exts[i].off+exts[i].count > fb })
}

// extents returns the data fork mapping of an inode in extents or B+tree
// format, sorted by file offset and checked.
func (f *FS) extents(ip *inode) ([]extent, error) {
	var exts []extent
	var err error
	switch ip.format {
	case fmtExtents:
		exts, err = f.sb.appendExtents(nil, ip.dfork, int(ip.nextents))
	case fmtBtree:
		exts, err = f.walkBmbt(ip)
	default:
		return nil, corruptf("inode %d: data fork format %d has no extents", ip.ino, ip.format)
	}
	if err != nil {
		return nil, inodeErr(ip.ino, err)
	}
	if err := checkExtentOrder(exts); err != nil {
		return nil, inodeErr(ip.ino, err)
	}
	return exts, nil
}

// bmbtBlock is a decoded bmap B+tree block: records for a leaf, keys and
// pointers for a node.
type bmbtBlock struct {
	level   uint16
	numrecs int
	recs    []byte // leaf: numrecs 16-byte records
	ptrs    []byte // node: numrecs 64-bit child block numbers
}

// parseBmbtBlock decodes the header of a bmap B+tree block and locates its
// records or pointers. It checks the magic and the record count; the CRC,
// block number and owner are checked by checkBmbtBlock.
func parseBmbtBlock(b []byte, v5 bool) (*bmbtBlock, error) {
	be := binary.BigEndian
	hdr, magic := bmbtHdrLenV4, uint32(bmbtMagicV4)
	if v5 {
		hdr, magic = bmbtHdrLenV5, bmbtMagicV5
	}
	if len(b) < hdr+bmbtRecLen {
		return nil, corruptf("bmap B+tree block of %d bytes", len(b))
	}
	if got := be.Uint32(b); got != magic {
		return nil, corruptf("bad magic 0x%08x", got)
	}
	blk := &bmbtBlock{level: be.Uint16(b[bmbtOffLevel:]), numrecs: int(be.Uint16(b[bmbtOffNumrecs:]))}
	maxrecs := (len(b) - hdr) / bmbtRecLen
	if blk.numrecs == 0 || blk.numrecs > maxrecs {
		return nil, corruptf("%d records, room for 1..%d", blk.numrecs, maxrecs)
	}
	if blk.level == 0 {
		blk.recs = b[hdr : hdr+blk.numrecs*bmbtRecLen]
	} else {
		ptrs := hdr + maxrecs*8
		blk.ptrs = b[ptrs : ptrs+blk.numrecs*8]
	}
	return blk, nil
}

// checkBmbtBlock verifies the version 5 self-describing fields of a bmap
// B+tree block read from linear block lin for inode ino.
func (f *FS) checkBmbtBlock(b []byte, lin, ino uint64) error {
	if !f.sb.v5 {
		return nil
	}
	be := binary.BigEndian
	if f.checkCRC && !crcOK(b, bmbtCRCOffset) {
		return corruptf("CRC mismatch")
	}
	if got, want := be.Uint64(b[bmbtOffBlkno:]), f.daddr(lin); got != want {
		return corruptf("records disk address %d, read from %d", got, want)
	}
	if got := be.Uint64(b[bmbtOffOwner:]); got != ino {
		return corruptf("owned by inode %d", got)
	}
	if !bytes.Equal(b[bmbtOffUUID:bmbtOffUUID+16], f.sb.uuid[:]) {
		return corruptf("UUID does not match the file system")
	}
	return nil
}

// walkBmbt collects the extent records of a B+tree format data fork, in key
// order. Levels must go down by one at each step and no block may be
// visited twice, so the walk ends on any image; the records it collects
// were each read from the image.
func (f *FS) walkBmbt(ip *inode) ([]extent, error) {
	be := binary.BigEndian
	root := ip.dfork
	if len(root) < bmdrHdrLen+bmbtKeyPtrLen {
		return nil, corruptf("bmap B+tree root in a %d-byte fork", len(root))
	}
	level := be.Uint16(root)
	numrecs := int(be.Uint16(root[2:]))
	maxrecs := (len(root) - bmdrHdrLen) / bmbtKeyPtrLen
	if level == 0 || level > maxBtreeLvls {
		return nil, corruptf("bmap B+tree root: level %d, want 1..%d", level, maxBtreeLvls)
	}
	if numrecs == 0 || numrecs > maxrecs {
		return nil, corruptf("bmap B+tree root: %d pointers, room for 1..%d", numrecs, maxrecs)
	}
	ptrs := root[bmdrHdrLen+maxrecs*8:]
	w := bmbtWalk{f: f, ino: ip.ino, visited: make(map[uint64]bool)}
	for i := 0; i < numrecs; i++ {
		if err := w.visit(be.Uint64(ptrs[i*8:]), level-1); err != nil {
			return nil, err
		}
	}
	if uint64(len(w.out)) != ip.nextents {
		return nil, corruptf("bmap B+tree holds %d extents, the inode counts %d", len(w.out), ip.nextents)
	}
	return w.out, nil
}

type bmbtWalk struct {
	f       *FS
	ino     uint64
	visited map[uint64]bool
	out     []extent
}

// visit reads the block fsb, which must be at level, and descends.
// Recursion depth is bounded by the root level (at most maxBtreeLvls).
func (w *bmbtWalk) visit(fsb uint64, level uint16) error {
	sb := w.f.sb
	lin, err := sb.fsbToLinear(fsb, 1)
	if err != nil {
		return corruptf("bmap B+tree pointer: %v", err)
	}
	if w.visited[lin] {
		return corruptf("bmap B+tree block %d reached twice (a cycle or a shared child)", fsb)
	}
	w.visited[lin] = true
	b, err := w.f.readBlocks(lin, 1)
	if err != nil {
		return err
	}
	blk, err := parseBmbtBlock(b, sb.v5)
	if err != nil {
		return withContext(err, "bmap B+tree block %d", fsb)
	}
	if err := w.f.checkBmbtBlock(b, lin, w.ino); err != nil {
		return withContext(err, "bmap B+tree block %d", fsb)
	}
	if blk.level != level {
		return corruptf("bmap B+tree block %d: level %d, want %d", fsb, blk.level, level)
	}
	if level == 0 {
		w.out, err = sb.appendExtents(w.out, blk.recs, blk.numrecs)
		if err != nil {
			return withContext(err, "bmap B+tree block %d", fsb)
		}
		return nil
	}
	for i := 0; i < blk.numrecs; i++ {
		if err := w.visit(binary.BigEndian.Uint64(blk.ptrs[i*8:]), level-1); err != nil {
			return err
		}
	}
	return nil
}
