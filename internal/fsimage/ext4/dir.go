package ext4

import (
	"sort"

	"github.com/cairn-backup/cairn/internal/fsimage"
)

// dirent is one directory entry.
type dirent struct {
	name string
	ino  uint64
}

// dirList is a parsed directory: its entries sorted by name (without "."
// and ".."), and an index by name for lookups.
type dirList struct {
	entries []dirent
	index   map[string]uint64
}

// Directory entry tail of metadata_csum leaf blocks: a fake entry of 12
// bytes with file type 0xDE holding the block's checksum.
const (
	dirTailSize = 12
	dirTailType = 0xDE
)

// readDir returns the parsed entries of directory in. Blocks are read in
// logical order, which reads the leaves of an htree directory too (its
// index blocks look like blocks of deleted entries).
func (f *FS) readDir(in *inode) (*dirList, error) {
	if l := f.dirs.get(in.ino); l != nil {
		return l, nil
	}
	if in.flags&flagEncrypt != 0 {
		return nil, unsupported("directory inode %d is encrypted (fscrypt); its names cannot be read without the key", in.ino)
	}
	var entries []dirent
	if in.flags&flagInlineData != 0 {
		c, err := f.openContent(in)
		if err != nil {
			return nil, err
		}
		// i_block: the parent's inode number, then entries in 56 bytes;
		// system.data: more entries.
		if entries, err = f.parseDirBlock(in, c.inline[4:iBlockLen], entries, false); err != nil {
			return nil, err
		}
		if len(c.inline) > iBlockLen {
			if entries, err = f.parseDirBlock(in, c.inline[iBlockLen:], entries, false); err != nil {
				return nil, err
			}
		}
	} else {
		if in.size > uint64(f.size) || in.size%uint64(f.blockSize) != 0 {
			return nil, corrupt("directory inode %d: size %d is not a whole number of %d-byte blocks inside the image",
				in.ino, in.size, f.blockSize)
		}
		c, err := f.openContent(in)
		if err != nil {
			return nil, err
		}
		n := in.size / uint64(f.blockSize)
		for lb := uint64(0); lb < n; {
			r, err := c.mapper.mapBlock(lb)
			if err != nil {
				return nil, err
			}
			count := min(r.count, n-lb)
			if !r.zero {
				for i := range count {
					blk, err := f.readBlock(r.phys + i)
					if err != nil {
						return nil, err
					}
					if entries, err = f.parseDirBlock(in, blk, entries, true); err != nil {
						return nil, err
					}
				}
			}
			lb += count
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	l := &dirList{entries: entries, index: make(map[string]uint64, len(entries))}
	for _, e := range entries {
		if _, dup := l.index[e.name]; dup {
			return nil, corrupt("directory inode %d: two entries named %q", in.ino, e.name)
		}
		l.index[e.name] = e.ino
	}
	f.dirs.put(in.ino, l)
	return l, nil
}

// parseDirBlock appends the live entries of one directory block (or inline
// area) to out. Every record must lie inside the block, be at least 12
// bytes, a multiple of 4, and hold its name.
func (f *FS) parseDirBlock(in *inode, b []byte, out []dirent, isBlock bool) ([]dirent, error) {
	if isBlock && f.metadataCsum && f.verify && len(b) >= dirTailSize {
		t := b[len(b)-dirTailSize:]
		if le32(t, 0) == 0 && le16(t, 4) == dirTailSize && t[6] == 0 && t[7] == dirTailType {
			if want, got := le32(t, 8), crc32c(in.csumSeed, b[:len(b)-dirTailSize]); want != got {
				return nil, corrupt("directory inode %d: block checksum 0x%08x does not match its contents (0x%08x)", in.ino, want, got)
			}
		}
	}
	for off := 0; off < len(b); {
		if off+8 > len(b) {
			return nil, corrupt("directory inode %d: entry at offset %d runs past its block", in.ino, off)
		}
		ino := uint64(le32(b, off))
		recLen := f.recLen(le16(b, off+4))
		var nameLen int
		if f.incompat&incompatFiletype != 0 {
			nameLen = int(b[off+6])
		} else {
			nameLen = int(le16(b, off+6))
		}
		if recLen < 12 || recLen%4 != 0 || off+recLen > len(b) || 8+nameLen > recLen {
			return nil, corrupt("directory inode %d: entry at offset %d: record length %d (name of %d bytes) does not fit its block of %d",
				in.ino, off, recLen, nameLen, len(b))
		}
		if ino != 0 {
			name := string(b[off+8 : off+8+nameLen])
			switch {
			case name == "." || name == "..":
			case !fsimage.ValidName(name):
				return nil, corrupt("directory inode %d: entry %q is not a valid file name", in.ino, name)
			case ino > f.inodes:
				return nil, corrupt("directory inode %d: entry %q names inode %d, beyond the %d inodes", in.ino, name, ino, f.inodes)
			default:
				out = append(out, dirent{name: name, ino: ino})
			}
		}
		off += recLen
	}
	return out, nil
}

// recLen decodes rec_len: blocks of 64 KiB store 65536 as 65535 (or 0) and
// larger lengths with their low two bits moved up.
func (f *FS) recLen(v uint16) int {
	if f.blockSize < 65536 {
		return int(v)
	}
	if v == 65535 || v == 0 {
		return int(f.blockSize)
	}
	return int(v&65532) | int(v&3)<<16
}
