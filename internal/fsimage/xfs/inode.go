package xfs

import (
	"bytes"
	"encoding/binary"
	"io/fs"
	"time"
)

// Inode layout (struct xfs_dinode, big endian).
const (
	inodeMagic      = 0x494e // "IN"
	inodeCoreV2     = 100    // v1 and v2 cores end at di_next_unlinked's end
	inodeCoreV3     = 176
	inodeCRCOffset  = 100
	inodeOffOnlink  = 6
	inodeOffNlink   = 16
	inodeOffBigNext = 24
	inodeOffAtime   = 32
	inodeOffMtime   = 40
	inodeOffSize    = 56
	inodeOffNext    = 76
	inodeOffForkoff = 82
	inodeOffFlags   = 90
	inodeOffFlags2  = 120
	inodeOffIno     = 152
	inodeOffUUID    = 160

	diflagRealtime  = 1 << 0
	diflag2Bigtime  = 1 << 3
	diflag2Nrext64  = 1 << 4
	bigtimeEpochOff = 1 << 31 // bigtime counts nanoseconds from 1901-12-13T20:45:52Z

	// Data fork formats (di_format).
	fmtDev     = 0
	fmtLocal   = 1
	fmtExtents = 2
	fmtBtree   = 3

	symlinkMaxLen = 1024
)

// File types in di_mode.
const (
	sIFMT   = 0xf000
	sIFIFO  = 0x1000
	sIFCHR  = 0x2000
	sIFDIR  = 0x4000
	sIFBLK  = 0x6000
	sIFREG  = 0x8000
	sIFLNK  = 0xa000
	sIFSOCK = 0xc000
)

// inode is what the reader keeps of an on-disk inode.
type inode struct {
	ino      uint64
	mode     uint16
	format   uint8
	uid, gid uint32
	nlink    uint32
	size     int64
	mtime    time.Time
	nextents uint64
	flags    uint16
	dfork    []byte // the data fork: extent records, a B+tree root or local data
}

func (ip *inode) fileMode() fs.FileMode { return fileMode(ip.mode) }
func (ip *inode) isDir() bool           { return ip.mode&sIFMT == sIFDIR }

// fileMode turns an XFS di_mode into an fs.FileMode.
func fileMode(m uint16) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & sIFMT {
	case sIFDIR:
		mode |= fs.ModeDir
	case sIFLNK:
		mode |= fs.ModeSymlink
	case sIFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		mode |= fs.ModeDevice
	case sIFIFO:
		mode |= fs.ModeNamedPipe
	case sIFSOCK:
		mode |= fs.ModeSocket
	}
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// decodeTime decodes an 8-byte XFS timestamp: legacy (signed seconds, then
// nanoseconds, both 32 bits) or bigtime (nanoseconds since 1901-12-13).
func decodeTime(b []byte, bigtime bool) time.Time {
	v := binary.BigEndian.Uint64(b)
	if bigtime {
		sec := int64(v/1e9) - bigtimeEpochOff
		return time.Unix(sec, int64(v%1e9)).UTC()
	}
	sec := int64(int32(uint32(v >> 32)))
	nsec := int64(uint32(v))
	if nsec >= 1e9 {
		nsec = 0 // not a valid timestamp: keep the seconds
	}
	return time.Unix(sec, nsec).UTC()
}

// parseInode decodes the inode ino from b, one inode's bytes. checkCRC
// enables the version 3 checksum test (the owner and UUID are always
// checked).
func parseInode(sb *superblock, b []byte, ino uint64, checkCRC bool) (*inode, error) {
	be := binary.BigEndian
	if len(b) != int(sb.inodeSize) {
		return nil, corruptf("inode %d: %d bytes, want %d", ino, len(b), sb.inodeSize)
	}
	if be.Uint16(b) != inodeMagic {
		return nil, corruptf("inode %d: bad magic 0x%04x", ino, be.Uint16(b))
	}
	version := b[4]
	core := inodeCoreV2
	switch {
	case sb.v5 && version == 3:
		core = inodeCoreV3
		if checkCRC && !crcOK(b, inodeCRCOffset) {
			return nil, corruptf("inode %d: CRC mismatch", ino)
		}
		if got := be.Uint64(b[inodeOffIno:]); got != ino {
			return nil, corruptf("inode %d: records inode number %d", ino, got)
		}
		if !bytes.Equal(b[inodeOffUUID:inodeOffUUID+16], sb.uuid[:]) {
			return nil, corruptf("inode %d: UUID does not match the file system", ino)
		}
	case !sb.v5 && (version == 1 || version == 2):
	default:
		return nil, corruptf("inode %d: version %d on a version %d file system", ino, version, sb.version())
	}
	ip := &inode{
		ino:    ino,
		mode:   be.Uint16(b[2:]),
		format: b[5],
		uid:    be.Uint32(b[8:]),
		gid:    be.Uint32(b[12:]),
		nlink:  be.Uint32(b[inodeOffNlink:]),
		size:   int64(be.Uint64(b[inodeOffSize:])),
		flags:  be.Uint16(b[inodeOffFlags:]),
	}
	var flags2 uint64
	if version == 3 {
		flags2 = be.Uint64(b[inodeOffFlags2:])
	}
	if version == 1 {
		ip.nlink = uint32(be.Uint16(b[inodeOffOnlink:]))
	}
	if flags2&diflag2Nrext64 != 0 {
		ip.nextents = be.Uint64(b[inodeOffBigNext:])
	} else {
		ip.nextents = uint64(be.Uint32(b[inodeOffNext:]))
	}
	ip.mtime = decodeTime(b[inodeOffMtime:], flags2&diflag2Bigtime != 0)
	if ip.size < 0 {
		return nil, corruptf("inode %d: negative size %d", ino, ip.size)
	}

	litino := len(b) - core
	dsize := litino
	if forkoff := int(b[inodeOffForkoff]) * 8; forkoff != 0 {
		if forkoff > litino {
			return nil, corruptf("inode %d: attribute fork offset %d beyond the %d-byte literal area", ino, forkoff, litino)
		}
		dsize = forkoff
	}
	ip.dfork = b[core : core+dsize]

	// The data fork format must fit the file type (xfs_dinode_verify).
	ok := false
	switch ip.mode & sIFMT {
	case sIFREG:
		ok = ip.format == fmtExtents || ip.format == fmtBtree
	case sIFDIR, sIFLNK:
		ok = ip.format == fmtLocal || ip.format == fmtExtents || ip.format == fmtBtree
	case sIFCHR, sIFBLK, sIFIFO, sIFSOCK:
		ok = ip.format == fmtDev
	default:
		return nil, corruptf("inode %d: unknown file type in mode 0%o", ino, ip.mode)
	}
	if !ok {
		return nil, corruptf("inode %d: data fork format %d for mode 0%o", ino, ip.format, ip.mode)
	}
	switch ip.format {
	case fmtLocal:
		if ip.size > int64(dsize) {
			return nil, corruptf("inode %d: %d bytes of local data in a %d-byte fork", ino, ip.size, dsize)
		}
	case fmtExtents:
		if ip.nextents > uint64(dsize/bmbtRecLen) {
			return nil, corruptf("inode %d: %d extents in a %d-byte fork", ino, ip.nextents, dsize)
		}
	case fmtDev:
		if dsize < 4 {
			return nil, corruptf("inode %d: %d-byte data fork cannot hold a device number", ino, dsize)
		}
	}
	return ip, nil
}

// rdev returns a device inode's number in the Linux encoding of st_rdev
// (glibc's makedev). XFS stores the old 32-bit form: 14 bits of major and
// 18 bits of minor.
func (ip *inode) rdev() uint64 {
	t := ip.mode & sIFMT
	if ip.format != fmtDev || (t != sIFCHR && t != sIFBLK) {
		return 0
	}
	d := binary.BigEndian.Uint32(ip.dfork)
	major := uint64(d>>18) & 0x3fff
	minor := uint64(d) & 0x3ffff
	return (major&0xfffff000)<<32 | (major&0xfff)<<8 | (minor&0xffffff00)<<12 | minor&0xff
}
