package ext4

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
)

const (
	superOffset = 1024
	superSize   = 1024
	superMagic  = 0xEF53
	magicOffset = superOffset + 0x38

	rootIno = 2
)

// Feature bits of the superblock.
const (
	compatHasJournal   = 0x4
	compatSparseSuper2 = 0x200

	incompatCompression = 0x1
	incompatFiletype    = 0x2
	incompatRecover     = 0x4
	incompatJournalDev  = 0x8
	incompatMetaBG      = 0x10
	incompatExtents     = 0x40
	incompat64Bit       = 0x80
	incompatMMP         = 0x100
	incompatFlexBG      = 0x200
	incompatEAInode     = 0x400
	incompatDirData     = 0x1000
	incompatCsumSeed    = 0x2000
	incompatLargeDir    = 0x4000
	incompatInlineData  = 0x8000
	incompatEncrypt     = 0x10000
	incompatCasefold    = 0x20000

	rocompatSparseSuper  = 0x1
	rocompatGdtCsum      = 0x10
	rocompatMetadataCsum = 0x400

	// incompatHandled are the incompatible features this reader reads.
	// Encryption and casefolding are refused per file (see doc.go).
	incompatHandled = incompatFiletype | incompatRecover | incompatMetaBG | incompatExtents |
		incompat64Bit | incompatMMP | incompatFlexBG | incompatEAInode | incompatCsumSeed |
		incompatLargeDir | incompatInlineData | incompatEncrypt | incompatCasefold
)

var incompatNames = map[uint32]string{
	incompatCompression: "compression",
	incompatJournalDev:  "journal_dev (this is an external journal, not a file system)",
	incompatDirData:     "dirdata",
}

// FS is an ext2, ext3 or ext4 file system inside an image. It implements
// fsimage.FS and is safe for concurrent use.
type FS struct {
	dev  io.ReaderAt // the image, with replayed journal blocks laid over it
	size int64       // bytes of the image

	blockSize      int64
	blocks         uint64 // s_blocks_count
	firstDataBlock uint64
	blocksPerGroup uint64
	groups         uint64
	inodesPerGroup uint64
	inodes         uint64 // s_inodes_count
	inodeSize      int64
	descSize       int64
	firstMetaBG    uint64
	backupBGs      [2]uint64
	compat         uint32
	incompat       uint32
	rocompat       uint32
	uuid           [16]byte

	metadataCsum bool   // crc32c checksums on metadata (metadata_csum)
	gdtCsum      bool   // crc16 group descriptor checksums (gdt_csum / uninit_bg)
	csumSeed     uint32 // crc32c seed of every metadata checksum
	verify       bool   // check metadata checksums (tests of the parser turn it off)

	journalIno uint64

	cache *blockCache
	dirs  *dirCache
}

// Open reads the superblock of an ext2, ext3 or ext4 file system that
// occupies [0, size) of r. It checks the superblock (and its checksum) and
// the features, and replays a journal that needs recovery in memory; inodes,
// group descriptors and everything else are read when used. Errors are a
// core.KindInvalid error for an image that is not ext2/3/4, one wrapping
// fsimage.ErrUnsupported for a feature this reader does not handle, and
// core.KindCorrupt for a damaged superblock or journal.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	return open(r, size, true)
}

// Probe reports whether the image holds the ext2/3/4 magic number.
func Probe(r io.ReaderAt, size int64) bool {
	if size < superOffset+superSize {
		return false
	}
	var m [2]byte
	if _, err := r.ReadAt(m[:], magicOffset); err != nil {
		return false
	}
	return m[0] == superMagic&0xff && m[1] == superMagic>>8
}

func corrupt(format string, args ...any) error {
	return fsimage.Corrupt("ext4", format, args...)
}

func unsupported(format string, args ...any) error {
	return fsimage.Unsupported("ext4", format, args...)
}

func open(r io.ReaderAt, size int64, verify bool) (*FS, error) {
	f, err := parse(r, size, verify)
	if err != nil || f.incompat&incompatRecover == 0 {
		return f, err
	}
	if f.compat&compatHasJournal == 0 {
		return nil, corrupt("superblock: needs journal recovery but has no journal")
	}
	if f.journalIno == 0 {
		return nil, unsupported("journal recovery from an external journal device")
	}
	if err := f.replayJournal(f.journalIno); err != nil {
		return nil, fmt.Errorf("ext4: replaying the journal: %w", err)
	}
	if f.dev == r {
		return f, nil // the journal held no committed transaction
	}
	// The superblock and group descriptors as the journal left them.
	g, err := parse(f.dev, size, verify)
	if err != nil {
		return nil, fmt.Errorf("ext4: after replaying the journal: %w", err)
	}
	return g, nil
}

// parse reads and checks the superblock of the file system in r.
func parse(r io.ReaderAt, size int64, verify bool) (*FS, error) {
	if size < superOffset+superSize {
		return nil, core.Invalid("ext4: image of %d bytes is too small to hold a file system", size)
	}
	sb := make([]byte, superSize)
	if err := readFull(r, sb, superOffset); err != nil {
		return nil, err
	}
	if le16(sb, 0x38) != superMagic {
		return nil, core.Invalid("ext4: not an ext2/ext3/ext4 file system (no 0xEF53 magic at offset 1080)")
	}
	f := &FS{dev: r, size: size, verify: verify}
	rev := le32(sb, 0x4C)
	if rev > 1 {
		return nil, unsupported("superblock revision %d (only 0 and 1 exist)", rev)
	}
	logBlock := le32(sb, 0x18)
	if logBlock > 6 {
		return nil, corrupt("superblock: block size 2^(10+%d) is beyond 64 KiB", logBlock)
	}
	f.blockSize = 1024 << logBlock
	f.inodeSize = 128
	if rev >= 1 {
		f.compat = le32(sb, 0x5C)
		f.incompat = le32(sb, 0x60)
		f.rocompat = le32(sb, 0x64)
		f.inodeSize = int64(le16(sb, 0x58))
	}
	if f.inodeSize < 128 || f.inodeSize > f.blockSize || f.inodeSize&(f.inodeSize-1) != 0 {
		return nil, corrupt("superblock: inode size %d (want a power of 2 from 128 to the block size %d)", f.inodeSize, f.blockSize)
	}
	if err := f.checkFeatures(); err != nil {
		return nil, err
	}
	copy(f.uuid[:], sb[0x68:0x78])

	f.blocks = uint64(le32(sb, 0x4))
	f.descSize = 32
	if f.incompat&incompat64Bit != 0 {
		f.blocks |= uint64(le32(sb, 0x150)) << 32
		f.descSize = int64(le16(sb, 0xFE))
		if f.descSize < 64 || f.descSize > 1024 || f.descSize&(f.descSize-1) != 0 {
			return nil, corrupt("superblock: group descriptor size %d (want a power of 2 from 64 to 1024)", f.descSize)
		}
	}
	if f.descSize > f.blockSize {
		return nil, corrupt("superblock: group descriptor size %d exceeds the block size %d", f.descSize, f.blockSize)
	}
	f.firstDataBlock = uint64(le32(sb, 0x14))
	f.blocksPerGroup = uint64(le32(sb, 0x20))
	f.inodesPerGroup = uint64(le32(sb, 0x28))
	f.inodes = uint64(le32(sb, 0x0))
	if f.blocks == 0 || f.firstDataBlock > 1 || f.firstDataBlock >= f.blocks {
		return nil, corrupt("superblock: %d blocks, first data block %d", f.blocks, f.firstDataBlock)
	}
	if need := f.blocks * uint64(f.blockSize); f.blocks > uint64(size)/uint64(f.blockSize) {
		return nil, corrupt("the file system has %d blocks of %d bytes (%d bytes) but the image holds only %d bytes: truncated image?",
			f.blocks, f.blockSize, need, size)
	}
	if f.blocksPerGroup < 8 || f.blocksPerGroup > 1<<31 || f.blocksPerGroup%8 != 0 {
		return nil, corrupt("superblock: %d blocks per group", f.blocksPerGroup)
	}
	f.groups = (f.blocks - f.firstDataBlock + f.blocksPerGroup - 1) / f.blocksPerGroup
	if f.inodesPerGroup == 0 || f.inodesPerGroup > uint64(8*f.blockSize) {
		return nil, corrupt("superblock: %d inodes per group (at most %d fit a bitmap)", f.inodesPerGroup, 8*f.blockSize)
	}
	if f.inodes < rootIno || (f.inodes+f.inodesPerGroup-1)/f.inodesPerGroup > f.groups {
		return nil, corrupt("superblock: %d inodes for %d groups of %d", f.inodes, f.groups, f.inodesPerGroup)
	}
	f.firstMetaBG = uint64(le32(sb, 0x104))
	f.backupBGs = [2]uint64{uint64(le32(sb, 0x24C)), uint64(le32(sb, 0x250))}

	f.metadataCsum = f.rocompat&rocompatMetadataCsum != 0
	f.gdtCsum = !f.metadataCsum && f.rocompat&rocompatGdtCsum != 0
	if f.metadataCsum {
		if t := sb[0x175]; t != 1 {
			return nil, unsupported("metadata checksum type %d (only 1, crc32c, exists)", t)
		}
		if verify {
			if want, got := le32(sb, 0x3FC), crc32c(^uint32(0), sb[:0x3FC]); want != got {
				return nil, corrupt("superblock checksum 0x%08x does not match its contents (0x%08x)", want, got)
			}
		}
		if f.incompat&incompatCsumSeed != 0 {
			f.csumSeed = le32(sb, 0x270)
		} else {
			f.csumSeed = crc32c(^uint32(0), f.uuid[:])
		}
	}
	f.cache = newBlockCache(f.blockSize)
	f.dirs = newDirCache()

	f.journalIno = uint64(le32(sb, 0xE0))
	return f, nil
}

// checkFeatures refuses incompatible features this reader cannot read.
func (f *FS) checkFeatures() error {
	unknown := f.incompat &^ incompatHandled
	if unknown == 0 {
		return nil
	}
	var names []string
	for bit := uint32(1); bit != 0; bit <<= 1 {
		if unknown&bit == 0 {
			continue
		}
		if n, ok := incompatNames[bit]; ok {
			names = append(names, n)
		} else {
			names = append(names, fmt.Sprintf("unknown 0x%x", bit))
		}
	}
	sort.Strings(names)
	return unsupported("incompatible feature %s", strings.Join(names, ", "))
}

// Type returns "ext4" (for ext2 and ext3 too: one format).
func (f *FS) Type() string { return "ext4" }

// BlockSize returns the file system's block size in bytes.
func (f *FS) BlockSize() int64 { return f.blockSize }

// readFull reads len(p) bytes at off of r; a short read is an error.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return corrupt("image ends inside [%d, %d)", off, off+int64(len(p)))
	}
	return fmt.Errorf("ext4: reading the image at offset %d: %w", off, err)
}

// readAt reads from the file system's device: the image, with replayed
// journal blocks over it.
func (f *FS) readAt(p []byte, off int64) error {
	return readFull(f.dev, p, off)
}

// checkBlocks reports whether [start, start+n) are blocks of the file
// system (block 0, the boot block, is never data).
func (f *FS) checkBlocks(start, n uint64) bool {
	return start >= f.firstDataBlock && start != 0 && n <= f.blocks && start <= f.blocks-n
}

// readBlock returns block b through the cache; the slice is shared and must
// not be changed.
func (f *FS) readBlock(b uint64) ([]byte, error) {
	if b >= f.blocks {
		return nil, corrupt("block %d is beyond the end of the file system (%d blocks)", b, f.blocks)
	}
	if p := f.cache.get(b); p != nil {
		return p, nil
	}
	p := make([]byte, f.blockSize)
	if err := f.readAt(p, int64(b)*f.blockSize); err != nil {
		return nil, err
	}
	f.cache.put(b, p)
	return p, nil
}
