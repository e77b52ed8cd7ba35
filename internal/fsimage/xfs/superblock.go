package xfs

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"strings"
)

// Superblock layout (struct xfs_dsb, big endian).
const (
	sbMagic         = 0x58465342 // "XFSB"
	sbMinLen        = 264        // up to and including sb_meta_uuid
	sbCRCOffset     = 224
	sbVersionMask   = 0x000f
	sbVersion4      = 4
	sbVersion5      = 5
	sbVersionDirV2  = 0x2000
	sbVersionMore   = 0x8000
	sbVersionShared = 0x0200

	// sb_features2 bits a version 4 file system may carry.
	sbF2LazySBCount = 0x0002
	sbF2Attr2       = 0x0008
	sbF2Parent      = 0x0010
	sbF2ProjID32    = 0x0080
	sbF2CRC         = 0x0100
	sbF2FType       = 0x0200
	sbF2Known       = sbF2LazySBCount | sbF2Attr2 | sbF2ProjID32 | sbF2FType
)

// Version 5 incompatible feature bits (sb_features_incompat).
const (
	incompatFType       = 1 << 0
	incompatSpinodes    = 1 << 1
	incompatMetaUUID    = 1 << 2
	incompatBigtime     = 1 << 3
	incompatNeedsRepair = 1 << 4
	incompatNrext64     = 1 << 5
	incompatExchRange   = 1 << 6
	incompatParent      = 1 << 7
	incompatMetadir     = 1 << 8
	incompatZoned       = 1 << 9
	incompatZoneGaps    = 1 << 10

	// incompatReadable are the features that change nothing for this
	// reader or that it decodes.
	incompatReadable = incompatFType | incompatSpinodes | incompatMetaUUID |
		incompatBigtime | incompatNrext64 | incompatExchRange | incompatParent
)

var incompatNames = []struct {
	bit  uint32
	name string
}{
	{incompatFType, "ftype"},
	{incompatSpinodes, "sparse inodes"},
	{incompatMetaUUID, "meta_uuid"},
	{incompatBigtime, "bigtime"},
	{incompatNeedsRepair, "needsrepair"},
	{incompatNrext64, "nrext64"},
	{incompatExchRange, "exchange-range"},
	{incompatParent, "parent pointers"},
	{incompatMetadir, "metadir"},
	{incompatZoned, "zoned"},
	{incompatZoneGaps, "zone gaps"},
}

// describeIncompat names the bits of an incompatible feature mask, for error
// messages: "0x100 (metadir)".
func describeIncompat(mask uint32) string {
	var names []string
	for _, f := range incompatNames {
		if mask&f.bit != 0 {
			names = append(names, f.name)
			mask &^= f.bit
		}
	}
	if mask != 0 {
		names = append(names, fmt.Sprintf("unknown 0x%x", mask))
	}
	return strings.Join(names, ", ")
}

// Geometry limits (xfs_format.h), checked before any of these numbers is
// used as a shift, a size or a divisor.
const (
	minBlockLog  = 9  // 512 B
	maxBlockLog  = 16 // 64 KiB
	minSectLog   = 9
	maxSectLog   = 15 // 32 KiB
	minInodeLog  = 8  // 256 B
	maxInodeLog  = 11 // 2 KiB
	maxDirLog    = 16 // directory blocks up to 64 KiB
	minAGBlocks  = 64
	maxAGBlklog  = 31
	maxBtreeLvls = 16 // above the deepest bmap B+tree of any geometry (11 with nrext64 and 1 KiB blocks)
)

// superblock is what the reader keeps of the primary superblock.
type superblock struct {
	blockSize  uint32
	blockLog   uint
	dblocks    uint64
	rblocks    uint64
	sectSize   uint32
	inodeSize  uint32
	inodeLog   uint
	inopbLog   uint
	agBlocks   uint32
	agBlkLog   uint
	agCount    uint32
	rootIno    uint64
	dirBlkLog  uint // log2 of directory block size in file system blocks
	v5         bool
	ftype      bool
	incompat   uint32
	roCompat   uint32
	uuid       [16]byte // the UUID metadata blocks carry (sb_meta_uuid with meta_uuid)
	versionNum uint16
	features2  uint32
}

func (sb *superblock) dirBlkSize() uint32 { return sb.blockSize << sb.dirBlkLog }

func (sb *superblock) version() int {
	if sb.v5 {
		return 5
	}
	return 4
}

// parseSuperblock decodes and checks the primary superblock in b (at least
// sbMinLen bytes; the CRC, over one sector, is checked by the caller).
func parseSuperblock(b []byte) (*superblock, error) {
	if len(b) < sbMinLen {
		return nil, corruptf("superblock: %d bytes, need %d", len(b), sbMinLen)
	}
	be := binary.BigEndian
	if be.Uint32(b[0:]) != sbMagic {
		return nil, invalidf("not an XFS file system (no XFSB magic at offset 0)")
	}
	sb := &superblock{
		blockSize:  be.Uint32(b[4:]),
		dblocks:    be.Uint64(b[8:]),
		rblocks:    be.Uint64(b[16:]),
		rootIno:    be.Uint64(b[56:]),
		agBlocks:   be.Uint32(b[84:]),
		agCount:    be.Uint32(b[88:]),
		versionNum: be.Uint16(b[100:]),
		sectSize:   uint32(be.Uint16(b[102:])),
		inodeSize:  uint32(be.Uint16(b[104:])),
		blockLog:   uint(b[120]),
		inodeLog:   uint(b[122]),
		inopbLog:   uint(b[123]),
		agBlkLog:   uint(b[124]),
		dirBlkLog:  uint(b[192]),
		features2:  be.Uint32(b[200:]) | be.Uint32(b[204:]), // old kernels wrote sb_bad_features2
	}
	sectLog := uint(b[121])
	inopblock := uint32(be.Uint16(b[106:]))
	inProgress := b[126]
	copy(sb.uuid[:], b[32:48])

	switch sb.versionNum & sbVersionMask {
	case sbVersion5:
		sb.v5 = true
		sb.incompat = be.Uint32(b[216:])
		sb.roCompat = be.Uint32(b[212:])
		if unknown := sb.incompat &^ incompatReadable; unknown != 0 {
			hint := ""
			if unknown&incompatNeedsRepair != 0 {
				hint = "; run xfs_repair on a copy of the image first"
			}
			return nil, unsupportedf("incompatible features 0x%x (%s)%s", unknown, describeIncompat(unknown), hint)
		}
		sb.ftype = sb.incompat&incompatFType != 0
		if sb.incompat&incompatMetaUUID != 0 {
			copy(sb.uuid[:], b[248:264])
		}
	case sbVersion4:
		if sb.versionNum&sbVersionDirV2 == 0 {
			return nil, unsupportedf("version 4 superblock without V2 directories (versionnum 0x%04x)", sb.versionNum)
		}
		if sb.versionNum&sbVersionShared != 0 {
			return nil, unsupportedf("version 4 superblock with the shared bit (versionnum 0x%04x)", sb.versionNum)
		}
		if sb.versionNum&sbVersionMore == 0 {
			sb.features2 = 0
		}
		if unknown := sb.features2 &^ sbF2Known; unknown != 0 {
			return nil, unsupportedf("version 4 features2 bits 0x%x", unknown)
		}
		sb.ftype = sb.features2&sbF2FType != 0
	default:
		return nil, unsupportedf("superblock version %d (only 4 and 5 are read)", sb.versionNum&sbVersionMask)
	}
	if inProgress != 0 {
		return nil, unsupportedf("file system marked in progress: mkfs.xfs did not finish")
	}

	// Geometry: every log must match its size, within the format's limits.
	if sb.blockLog < minBlockLog || sb.blockLog > maxBlockLog || sb.blockSize != 1<<sb.blockLog {
		return nil, corruptf("superblock: block size %d, log %d", sb.blockSize, sb.blockLog)
	}
	if sectLog < minSectLog || sectLog > maxSectLog || sb.sectSize != 1<<sectLog || sb.sectSize > sb.blockSize {
		return nil, corruptf("superblock: sector size %d, log %d", sb.sectSize, sectLog)
	}
	if sb.inodeLog < minInodeLog || sb.inodeLog > maxInodeLog || sb.inodeSize != 1<<sb.inodeLog || sb.inodeLog > sb.blockLog {
		return nil, corruptf("superblock: inode size %d, log %d", sb.inodeSize, sb.inodeLog)
	}
	if sb.v5 && sb.inodeSize < 512 {
		return nil, corruptf("superblock: inode size %d on a version 5 file system", sb.inodeSize)
	}
	if sb.inopbLog != sb.blockLog-sb.inodeLog || inopblock != 1<<sb.inopbLog {
		return nil, corruptf("superblock: %d inodes per block, log %d", inopblock, sb.inopbLog)
	}
	if sb.agBlocks < minAGBlocks || sb.agBlkLog > maxAGBlklog || uint(bits.Len32(sb.agBlocks-1)) != sb.agBlkLog {
		return nil, corruptf("superblock: AG size %d blocks, log %d", sb.agBlocks, sb.agBlkLog)
	}
	if sb.agCount == 0 {
		return nil, corruptf("superblock: no allocation groups")
	}
	full := uint64(sb.agCount) * uint64(sb.agBlocks)
	if sb.dblocks == 0 || sb.dblocks > full || sb.dblocks <= full-uint64(sb.agBlocks) {
		return nil, corruptf("superblock: %d data blocks do not fit %d AGs of %d blocks", sb.dblocks, sb.agCount, sb.agBlocks)
	}
	if sb.dblocks > (1<<63-1)>>sb.blockLog {
		return nil, corruptf("superblock: %d data blocks of %d bytes overflow", sb.dblocks, sb.blockSize)
	}
	if sb.blockLog+sb.dirBlkLog > maxDirLog {
		return nil, corruptf("superblock: directory block log %d with block log %d", sb.dirBlkLog, sb.blockLog)
	}
	if sb.agBlkLog+sb.inopbLog+uint(bits.Len32(sb.agCount-1)) > 64 {
		return nil, corruptf("superblock: inode numbers do not fit 64 bits")
	}
	if _, _, err := sb.inodeLocation(sb.rootIno); err != nil {
		return nil, corruptf("superblock: root inode %d: %v", sb.rootIno, err)
	}
	return sb, nil
}

// inodeLocation turns an inode number into the byte offset of the inode in
// the image (before checking it against the image size) and its AG.
func (sb *superblock) inodeLocation(ino uint64) (off int64, agno uint32, err error) {
	aginoBits := sb.agBlkLog + sb.inopbLog
	ag := ino >> aginoBits
	agino := ino & (1<<aginoBits - 1)
	agbno := agino >> sb.inopbLog
	slot := agino & (1<<sb.inopbLog - 1)
	if ag >= uint64(sb.agCount) {
		return 0, 0, fmt.Errorf("AG %d beyond the %d AGs", ag, sb.agCount)
	}
	if agbno >= uint64(sb.agBlocks) {
		return 0, 0, fmt.Errorf("AG block %d beyond the AG size %d", agbno, sb.agBlocks)
	}
	fsb := ag*uint64(sb.agBlocks) + agbno
	if fsb >= sb.dblocks {
		return 0, 0, fmt.Errorf("block %d beyond the %d data blocks", fsb, sb.dblocks)
	}
	return int64(fsb<<sb.blockLog + slot<<sb.inodeLog), uint32(ag), nil
}

// fsbToLinear turns an encoded file system block number (AG number in the
// high bits, AG block below agblklog) into a block index from the start of
// the data device, checking that count blocks from it stay inside one AG.
func (sb *superblock) fsbToLinear(fsb, count uint64) (uint64, error) {
	ag := fsb >> sb.agBlkLog
	agbno := fsb & (1<<sb.agBlkLog - 1)
	if ag >= uint64(sb.agCount) {
		return 0, fmt.Errorf("block 0x%x: AG %d beyond the %d AGs", fsb, ag, sb.agCount)
	}
	if agbno >= uint64(sb.agBlocks) || count > uint64(sb.agBlocks)-agbno {
		return 0, fmt.Errorf("blocks 0x%x+%d: AG block %d+%d beyond the AG size %d", fsb, count, agbno, count, sb.agBlocks)
	}
	lin := ag*uint64(sb.agBlocks) + agbno
	if lin >= sb.dblocks || count > sb.dblocks-lin {
		return 0, fmt.Errorf("blocks 0x%x+%d beyond the %d data blocks", fsb, count, sb.dblocks)
	}
	return lin, nil
}
