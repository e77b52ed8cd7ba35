package ext4

import (
	"io/fs"
	"time"

	"github.com/cairn-backup/cairn/internal/fsimage"
)

// Inode flags (i_flags) the reader looks at.
const (
	flagEncrypt    = 0x800
	flagIndex      = 0x1000
	flagHugeFile   = 0x40000
	flagExtents    = 0x80000
	flagVerity     = 0x100000
	flagInlineData = 0x10000000
	flagCasefold   = 0x40000000
)

// File types of i_mode.
const (
	modeFifo    = 0x1000
	modeChar    = 0x2000
	modeDir     = 0x4000
	modeBlock   = 0x6000
	modeRegular = 0x8000
	modeSymlink = 0xA000
	modeSocket  = 0xC000
	modeTypes   = 0xF000
)

const (
	iBlockOffset = 0x28
	iBlockLen    = 60
	oldInodeSize = 128
)

// inode is one decoded inode. raw keeps the whole on-disk inode for the
// extended attributes stored in its body.
type inode struct {
	ino        uint64
	mode       uint16
	uid, gid   uint32
	size       uint64
	links      uint16
	flags      uint32
	generation uint32
	atime      time.Time
	mtime      time.Time
	block      []byte // i_block, 60 bytes
	raw        []byte
	extra      int // i_extra_isize
	csumSeed   uint32
}

func (in *inode) isDir() bool     { return in.mode&modeTypes == modeDir }
func (in *inode) isRegular() bool { return in.mode&modeTypes == modeRegular }
func (in *inode) isSymlink() bool { return in.mode&modeTypes == modeSymlink }

// readInode reads and checks inode ino.
func (f *FS) readInode(ino uint64) (*inode, error) {
	if ino < 1 || ino > f.inodes {
		return nil, corrupt("inode %d does not exist (%d inodes)", ino, f.inodes)
	}
	g := (ino - 1) / f.inodesPerGroup
	idx := (ino - 1) % f.inodesPerGroup
	gd, err := f.group(g)
	if err != nil {
		return nil, err
	}
	if (f.metadataCsum || f.gdtCsum) && gd.flags&bgInodeUninit != 0 {
		return nil, corrupt("inode %d is in group %d, whose inode table is not initialised", ino, g)
	}
	off := int64(gd.inodeTable)*f.blockSize + int64(idx)*f.inodeSize
	blk, err := f.readBlock(uint64(off / f.blockSize))
	if err != nil {
		return nil, err
	}
	within := off % f.blockSize
	raw := make([]byte, f.inodeSize)
	copy(raw, blk[within:within+f.inodeSize])
	return f.parseInode(ino, raw)
}

func (f *FS) parseInode(ino uint64, raw []byte) (*inode, error) {
	in := &inode{
		ino:        ino,
		mode:       le16(raw, 0x0),
		uid:        uint32(le16(raw, 0x2)) | uint32(le16(raw, 0x78))<<16,
		gid:        uint32(le16(raw, 0x18)) | uint32(le16(raw, 0x7A))<<16,
		links:      le16(raw, 0x1A),
		flags:      le32(raw, 0x20),
		generation: le32(raw, 0x64),
		block:      raw[iBlockOffset : iBlockOffset+iBlockLen],
		raw:        raw,
	}
	if len(raw) > oldInodeSize {
		in.extra = int(le16(raw, 0x80))
		if in.extra%4 != 0 || oldInodeSize+in.extra > len(raw) {
			return nil, corrupt("inode %d: extra size %d does not fit an inode of %d bytes", ino, in.extra, len(raw))
		}
	}
	if f.metadataCsum {
		in.csumSeed = crc32cU32(crc32cU32(f.csumSeed, uint32(ino)), in.generation)
		if f.verify {
			if err := in.verifyChecksum(); err != nil {
				return nil, err
			}
		}
	}
	if in.mode == 0 || in.links == 0 {
		return nil, corrupt("inode %d is not in use (mode 0%o, %d links) but a directory names it", ino, in.mode, in.links)
	}
	in.size = uint64(le32(raw, 0x4))
	if in.isRegular() || f.incompat&incompatLargeDir != 0 {
		in.size |= uint64(le32(raw, 0x6C)) << 32
	}
	if in.size > 1<<62 {
		return nil, corrupt("inode %d: size %d", ino, in.size)
	}
	in.atime = in.timestamp(0x8, 0x8C)
	in.mtime = in.timestamp(0x10, 0x88)
	switch in.mode & modeTypes {
	case modeFifo, modeChar, modeDir, modeBlock, modeRegular, modeSymlink, modeSocket:
	default:
		return nil, corrupt("inode %d: invalid file type in mode 0%o", ino, in.mode)
	}
	return in, nil
}

// verifyChecksum checks the crc32c of a metadata_csum inode.
func (in *inode) verifyChecksum() error {
	want := uint32(le16(in.raw, 0x7C))
	if in.hasChecksumHi() {
		want |= uint32(le16(in.raw, 0x82)) << 16
	}
	if got := inodeChecksum(in); got != want {
		return corrupt("inode %d: checksum 0x%x does not match its contents (0x%x)", in.ino, want, got)
	}
	return nil
}

// hasChecksumHi reports whether the inode has room for i_checksum_hi.
func (in *inode) hasChecksumHi() bool { return len(in.raw) > oldInodeSize && in.extra >= 4 }

// inodeChecksum computes the checksum of a metadata_csum inode: crc32c over
// the inode number, the generation and the whole inode with the checksum
// fields as zeros. Inodes without room for i_checksum_hi keep only the low
// 16 bits.
func inodeChecksum(in *inode) uint32 {
	c := crc32c(in.csumSeed, in.raw[:0x7C])
	c = crc32c(c, []byte{0, 0})
	if !in.hasChecksumHi() {
		return crc32c(c, in.raw[0x7E:]) & 0xFFFF
	}
	c = crc32c(c, in.raw[0x7E:0x82])
	c = crc32c(c, []byte{0, 0})
	return crc32c(c, in.raw[0x84:])
}

// timestamp decodes a time: signed seconds at off, and when the inode is
// large enough the extra field at extraOff (two more bits of seconds,
// 30 bits of nanoseconds).
func (in *inode) timestamp(off, extraOff int) time.Time {
	sec := int64(int32(le32(in.raw, off)))
	var nsec int64
	if extraOff+4 <= oldInodeSize+in.extra {
		x := le32(in.raw, extraOff)
		sec += int64(x&3) << 32
		nsec = int64(x >> 2)
		if nsec > 999999999 {
			nsec = 999999999
		}
	}
	return time.Unix(sec, nsec)
}

// fileMode converts i_mode to an fs.FileMode.
func (in *inode) fileMode() fs.FileMode {
	m := fs.FileMode(in.mode & 0o777)
	if in.mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if in.mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if in.mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch in.mode & modeTypes {
	case modeFifo:
		m |= fs.ModeNamedPipe
	case modeChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case modeDir:
		m |= fs.ModeDir
	case modeBlock:
		m |= fs.ModeDevice
	case modeSymlink:
		m |= fs.ModeSymlink
	case modeSocket:
		m |= fs.ModeSocket
	}
	return m
}

// rdev decodes the device number of a device inode: the old 8:8 encoding
// in i_block[0], or the new one (12 bits of major, 20 of minor) in
// i_block[1].
func (in *inode) rdev() uint64 {
	t := in.mode & modeTypes
	if t != modeChar && t != modeBlock {
		return 0
	}
	if old := le32(in.block, 0); old != 0 {
		return fsimage.Mkdev(old>>8&0xff, old&0xff)
	}
	v := le32(in.block, 4)
	return fsimage.Mkdev(v&0xfff00>>8, v&0xff|v>>12&0xfff00)
}

// info builds the FileInfo of the inode under name.
func (in *inode) info(name string) fsimage.FileInfo {
	fi := fsimage.FileInfo{
		Name:    name,
		Mode:    in.fileMode(),
		UID:     in.uid,
		GID:     in.gid,
		ModTime: in.mtime,
		Inode:   in.ino,
		Nlink:   uint32(in.links),
		Rdev:    in.rdev(),
	}
	switch in.mode & modeTypes {
	case modeRegular, modeDir, modeSymlink:
		fi.Size = int64(in.size)
	}
	return fi
}
