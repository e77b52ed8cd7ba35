package xfs

import (
	"encoding/binary"
)

// Remote symbolic link blocks (struct xfs_dsymlink_hdr), version 5 only.
const (
	symlinkMagic     = 0x58534c4d // "XSLM"
	symlinkHdrLen    = 56
	symlinkOffOffset = 4
	symlinkOffBytes  = 8
	symlinkCRCOffset = 12
	symlinkOffUUID   = 16
	symlinkOffOwner  = 32
	symlinkOffBlkno  = 40
)

// readSymlink returns the target of a symbolic link inode.
func (f *FS) readSymlink(ip *inode) (string, error) {
	if ip.size <= 0 || ip.size > symlinkMaxLen {
		return "", corruptf("inode %d: symbolic link of %d bytes", ip.ino, ip.size)
	}
	if ip.format == fmtLocal {
		return string(ip.dfork[:ip.size]), nil
	}
	exts, err := f.extents(ip)
	if err != nil {
		return "", err
	}
	target, err := f.readRemoteSymlink(ip, exts)
	return target, inodeErr(ip.ino, err)
}

// readRemoteSymlink reads a target stored in blocks. Like the kernel, it
// maps the blocks the target needs (on version 5 counting a header per
// block) and reads each mapping as one buffer; on version 5 each buffer
// starts with a header that gives the offset and length of the part of the
// target it holds, and its CRC covers the buffer.
func (f *FS) readRemoteSymlink(ip *inode, exts []extent) (string, error) {
	sb := f.sb
	pathlen := int(ip.size)
	space := int(sb.blockSize)
	if sb.v5 {
		space -= symlinkHdrLen
	}
	fsblocks := uint64((pathlen + space - 1) / space)
	target := make([]byte, 0, pathlen)
	for fb := uint64(0); fb < fsblocks && len(target) < pathlen; {
		i := findExtent(exts, fb)
		if i == len(exts) || exts[i].off > fb || exts[i].unwritten {
			return "", corruptf("remote symbolic link: file block %d is not mapped", fb)
		}
		e := exts[i]
		count := min(e.off+e.count, fsblocks) - fb
		lin := e.block + (fb - e.off)
		b, err := f.readBlocks(lin, count)
		if err != nil {
			return "", err
		}
		left := pathlen - len(target)
		var chunk []byte
		if sb.v5 {
			chunk, err = parseSymlinkBlock(b, sb.uuid[:], f.daddr(lin), ip.ino, len(target), left, f.checkCRC)
			if err != nil {
				return "", withContext(err, "remote symbolic link block %d", fb)
			}
		} else {
			chunk = b[:min(len(b), left)]
		}
		target = append(target, chunk...)
		fb += count
	}
	if len(target) != pathlen {
		return "", corruptf("remote symbolic link: %d of %d bytes mapped", len(target), pathlen)
	}
	return string(target), nil
}

// parseSymlinkBlock checks a version 5 remote symbolic link header and
// returns the bytes it holds.
func parseSymlinkBlock(b, uuid []byte, daddr, ino uint64, offset, left int, checkCRC bool) ([]byte, error) {
	be := binary.BigEndian
	if len(b) < symlinkHdrLen+1 {
		return nil, corruptf("block of %d bytes", len(b))
	}
	if got := be.Uint32(b); got != symlinkMagic {
		return nil, corruptf("bad magic 0x%08x", got)
	}
	if checkCRC && !crcOK(b, symlinkCRCOffset) {
		return nil, corruptf("CRC mismatch")
	}
	if got := be.Uint64(b[symlinkOffOwner:]); got != ino {
		return nil, corruptf("owned by inode %d", got)
	}
	if got := be.Uint64(b[symlinkOffBlkno:]); got != daddr {
		return nil, corruptf("records disk address %d, read from %d", got, daddr)
	}
	if string(b[symlinkOffUUID:symlinkOffUUID+16]) != string(uuid) {
		return nil, corruptf("UUID does not match the file system")
	}
	off := int(be.Uint32(b[symlinkOffOffset:]))
	n := int(be.Uint32(b[symlinkOffBytes:]))
	want := min(left, len(b)-symlinkHdrLen)
	if off != offset || n != want {
		return nil, corruptf("header holds bytes %d+%d, want %d+%d", off, n, offset, want)
	}
	return b[symlinkHdrLen : symlinkHdrLen+n], nil
}
