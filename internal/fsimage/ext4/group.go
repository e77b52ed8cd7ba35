package ext4

import "encoding/binary"

// bgInodeUninit is the group descriptor flag of a group whose inode table
// was never initialised (uninit_bg and metadata_csum file systems).
const bgInodeUninit = 0x1

// groupDesc is what the reader needs of one block group descriptor.
type groupDesc struct {
	inodeTable uint64
	flags      uint16
}

// hasSuper reports whether group g holds a copy of the superblock (and of
// the group descriptors, without meta_bg).
func (f *FS) hasSuper(g uint64) bool {
	if g == 0 {
		return true
	}
	if f.compat&compatSparseSuper2 != 0 {
		return g == f.backupBGs[0] || g == f.backupBGs[1]
	}
	if g == 1 || f.rocompat&rocompatSparseSuper == 0 {
		return true
	}
	if g%2 == 0 {
		return false
	}
	for _, base := range []uint64{3, 5, 7} {
		n := base
		for n < g {
			n *= base
		}
		if n == g {
			return true
		}
	}
	return false
}

// descBlock returns the block holding the idx-th block of group
// descriptors: after the superblock, or with meta_bg (from s_first_meta_bg
// on) in the first group of its meta group, after that group's superblock
// copy if it has one.
func (f *FS) descBlock(idx uint64) uint64 {
	sbBlock := uint64(0)
	if f.blockSize == 1024 {
		sbBlock = 1
	}
	if f.incompat&incompatMetaBG == 0 || idx < f.firstMetaBG {
		return sbBlock + 1 + idx
	}
	perBlock := uint64(f.blockSize / f.descSize)
	g := idx * perBlock
	b := g*f.blocksPerGroup + f.firstDataBlock
	if f.hasSuper(g) {
		b++
	}
	if f.blockSize == 1024 && idx == 0 && f.firstDataBlock == 0 {
		b++
	}
	return b
}

// group reads and checks the descriptor of group g.
func (f *FS) group(g uint64) (groupDesc, error) {
	if g >= f.groups {
		return groupDesc{}, corrupt("group %d does not exist (%d groups)", g, f.groups)
	}
	perBlock := uint64(f.blockSize / f.descSize)
	blk := f.descBlock(g / perBlock)
	buf, err := f.readBlock(blk)
	if err != nil {
		return groupDesc{}, err
	}
	off := int64(g%perBlock) * f.descSize
	d := buf[off : off+f.descSize]
	if f.verify && (f.metadataCsum || f.gdtCsum) {
		if want, got := le16(d, 0x1E), f.descChecksum(g, d); want != got {
			return groupDesc{}, corrupt("group %d: descriptor checksum 0x%04x does not match its contents (0x%04x)", g, want, got)
		}
	}
	gd := groupDesc{inodeTable: uint64(le32(d, 0x8)), flags: le16(d, 0x12)}
	if f.descSize >= 64 {
		gd.inodeTable |= uint64(le32(d, 0x28)) << 32
	}
	tableBlocks := (f.inodesPerGroup*uint64(f.inodeSize) + uint64(f.blockSize) - 1) / uint64(f.blockSize)
	if !f.checkBlocks(gd.inodeTable, tableBlocks) {
		return groupDesc{}, corrupt("group %d: inode table at block %d (%d blocks) is outside the file system (%d blocks)",
			g, gd.inodeTable, tableBlocks, f.blocks)
	}
	return gd, nil
}

// descChecksum computes a group descriptor's checksum: the low 16 bits of
// crc32c with metadata_csum, crc16 with gdt_csum; the checksum field itself
// (offset 0x1E) counts as zero.
func (f *FS) descChecksum(g uint64, d []byte) uint16 {
	var le [4]byte
	binary.LittleEndian.PutUint32(le[:], uint32(g))
	if f.metadataCsum {
		c := crc32c(f.csumSeed, le[:])
		c = crc32c(c, d[:0x1E])
		c = crc32c(c, []byte{0, 0})
		c = crc32c(c, d[0x20:])
		return uint16(c)
	}
	c := crc16(0xFFFF, f.uuid[:])
	c = crc16(c, le[:])
	c = crc16(c, d[:0x1E])
	if len(d) > 0x20 {
		c = crc16(c, d[0x20:])
	}
	return c
}
