package ext4

import (
	"fmt"
	"io"

	"github.com/cairn-backup/cairn/internal/core"
)

// content is the data of one inode: a regular file, a directory or a slow
// symbolic link. It implements fsimage.File and fsimage.SparseFile, and is
// safe for concurrent use.
type content struct {
	f      *FS
	in     *inode
	size   int64
	mapper blockMapper // nil for inline data
	inline []byte      // inline data, len >= size
}

// maxFileSize bounds what a file can address: 2^32 blocks through extents,
// and 12 + n + n^2 + n^3 blocks (n pointers per block) through a block map.
func (f *FS) maxFileSize(extents bool) uint64 {
	bs := uint64(f.blockSize)
	if extents {
		return maxLogical * bs
	}
	n := bs / 4
	return (directBlocks + n + n*n + n*n*n) * bs
}

// openContent prepares the data of in for reading.
func (f *FS) openContent(in *inode) (*content, error) {
	if in.flags&flagEncrypt != 0 {
		return nil, unsupported("inode %d is encrypted (fscrypt); its data cannot be read without the key", in.ino)
	}
	c := &content{f: f, in: in, size: int64(in.size)}
	if in.flags&flagInlineData != 0 {
		if f.incompat&incompatInlineData == 0 {
			return nil, corrupt("inode %d has the inline data flag on a file system without inline_data", in.ino)
		}
		iblock, rest, err := in.inlineData()
		if err != nil {
			return nil, err
		}
		if in.isDir() {
			// Directories keep their two areas apart; see readDir.
			c.inline = append(append([]byte{}, iblock...), rest...)
			return c, nil
		}
		if in.size > uint64(len(iblock)+len(rest)) {
			return nil, corrupt("inode %d: size %d but only %d bytes of inline data", in.ino, in.size, len(iblock)+len(rest))
		}
		c.inline = append(append([]byte{}, iblock...), rest...)
		return c, nil
	}
	extents := in.flags&flagExtents != 0
	if in.size > f.maxFileSize(extents) {
		return nil, corrupt("inode %d: size %d is beyond what its block map can address", in.ino, in.size)
	}
	if extents {
		c.mapper = &extentMapper{f: f, in: in}
	} else {
		c.mapper = &indirectMapper{f: f, in: in}
	}
	return c, nil
}

// Size returns the file's length in bytes.
func (c *content) Size() int64 { return c.size }

// ReadAt reads len(p) bytes at off; holes and unwritten extents read as
// zeros, and a read reaching the end of file returns io.EOF.
func (c *content) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, core.Invalid("ext4: inode %d: negative read offset %d", c.in.ino, off)
	}
	if off >= c.size {
		return 0, io.EOF
	}
	want := int64(len(p))
	if want > c.size-off {
		want = c.size - off
	}
	if c.mapper == nil {
		copy(p, c.inline[off:off+want])
	} else if err := c.readMapped(p[:want], off); err != nil {
		return 0, err
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

func (c *content) readMapped(p []byte, off int64) error {
	bs := c.f.blockSize
	for done := int64(0); done < int64(len(p)); {
		pos := off + done
		r, err := c.mapper.mapBlock(uint64(pos / bs))
		if err != nil {
			return err
		}
		// Runs are at most 2^40 blocks of at most 2^16 bytes: no overflow.
		chunk := min(int64(len(p))-done, int64(r.count)*bs-pos%bs)
		dst := p[done : done+chunk]
		if r.zero {
			clear(dst)
		} else if err := c.f.readAt(dst, int64(r.phys)*bs+pos%bs); err != nil {
			return fmt.Errorf("ext4: inode %d: %w", c.in.ino, err)
		}
		done += chunk
	}
	return nil
}

// maxRunsPerRange bounds the work of one NextData call: a range ends after
// this many adjacent runs even if data goes on (the caller asks again).
const maxRunsPerRange = 4096

// NextData returns the first range [start, end) at or after off that holds
// data; holes and unwritten extents are skipped.
func (c *content) NextData(off int64) (start, end int64, err error) {
	if off < 0 {
		off = 0
	}
	if off >= c.size {
		return c.size, c.size, nil
	}
	if c.mapper == nil {
		return off, c.size, nil
	}
	bs := c.f.blockSize
	pos := off
	for pos < c.size {
		lb := pos / bs
		r, err := c.mapper.mapBlock(uint64(lb))
		if err != nil {
			return 0, 0, err
		}
		runEnd := min(c.size, (lb+int64(r.count))*bs)
		if r.zero {
			pos = runEnd
			continue
		}
		start, end = pos, runEnd
		for n := 0; end < c.size && n < maxRunsPerRange; n++ {
			r, err := c.mapper.mapBlock(uint64(end / bs))
			if err != nil {
				return 0, 0, err
			}
			if r.zero {
				break
			}
			end = min(c.size, end/bs*bs+int64(r.count)*bs)
		}
		return start, end, nil
	}
	return c.size, c.size, nil
}
