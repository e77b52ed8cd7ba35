package xfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
)

// FS is an XFS file system read from an image. It implements fsimage.FS.
type FS struct {
	r        io.ReaderAt
	size     int64
	sb       *superblock
	checkCRC bool

	mu     sync.Mutex
	dirs   []cachedDir // most recently used first
	iblock blockCache  // file system blocks holding inodes
}

var _ fsimage.FS = (*FS)(nil)

// cachedDir is one directory's entries, sorted by name.
type cachedDir struct {
	ino     uint64
	entries []dirEntry
}

const (
	dirCacheDirs    = 8
	dirCacheEntries = 1 << 17 // a directory with more entries is not kept (each lookup in it reads it again)
)

// Probe reports whether r starts with an XFS superblock magic.
func Probe(r io.ReaderAt) bool {
	var b [4]byte
	if _, err := r.ReadAt(b[:], 0); err != nil && !errors.Is(err, io.EOF) {
		return false
	}
	return binary.BigEndian.Uint32(b[:]) == sbMagic
}

// Open reads the superblock of the XFS file system in r, which is size bytes
// long, and checks that this reader supports it. Errors are
// core.KindInvalid for an image that is not XFS, wrap ErrUnsupported for
// features this reader does not implement, and are core.KindCorrupt for a
// damaged or truncated image.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	return open(r, size, true)
}

func open(r io.ReaderAt, size int64, checkCRC bool) (*FS, error) {
	f := &FS{r: r, size: size, checkCRC: checkCRC}
	if size < sbMinLen {
		return nil, withContext(invalidf("image of %d bytes is too small for a superblock", size), "xfs")
	}
	b, err := f.readAt(0, sbMinLen)
	if err != nil {
		return nil, withContext(err, "xfs: superblock")
	}
	sb, err := parseSuperblock(b)
	if err != nil {
		return nil, withContext(err, "xfs")
	}
	if sb.v5 && checkCRC {
		sect, err := f.readAt(0, int(sb.sectSize))
		if err != nil {
			return nil, withContext(err, "xfs: superblock")
		}
		if !crcOK(sect, sbCRCOffset) {
			return nil, withContext(corruptf("superblock: CRC mismatch"), "xfs")
		}
	}
	if need := int64(sb.dblocks << sb.blockLog); need > size {
		return nil, withContext(corruptf("image of %d bytes is smaller than the file system's %d bytes (truncated?)", size, need), "xfs")
	}
	f.sb = sb
	root, err := f.readInode(sb.rootIno)
	if err != nil {
		return nil, withContext(err, "xfs: root directory")
	}
	if !root.isDir() {
		return nil, withContext(corruptf("root inode %d is not a directory (mode 0%o)", sb.rootIno, root.mode), "xfs")
	}
	return f, nil
}

// Type returns "xfs".
func (f *FS) Type() string { return "xfs" }

// readAt reads n bytes at off, which must lie inside the image.
func (f *FS) readAt(off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 || off > f.size || int64(n) > f.size-off {
		return nil, corruptf("%d bytes at offset %d beyond the end of the %d-byte image", n, off, f.size)
	}
	b := make([]byte, n)
	if err := readFull(f.r, b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// readFull reads len(b) bytes at off; a ReaderAt may return io.EOF with a
// full read, which is not an error here, while a short read is.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return withContext(err, "reading %d bytes at offset %d", len(b), off)
}

// readBlocks reads count file system blocks (64 KiB at most: one metadata
// buffer) from linear block lin.
func (f *FS) readBlocks(lin, count uint64) ([]byte, error) {
	if count == 0 || count > 1<<maxDirLog>>f.sb.blockLog || lin > uint64(f.size)>>f.sb.blockLog {
		return nil, corruptf("blocks %d+%d: outside the image or larger than a metadata buffer", lin, count)
	}
	return f.readAt(int64(lin<<f.sb.blockLog), int(count<<f.sb.blockLog))
}

// daddr is the 512-byte sector address of linear block lin, as version 5
// headers record it.
func (f *FS) daddr(lin uint64) uint64 { return lin << (f.sb.blockLog - 9) }

// readInode reads and decodes inode ino. The block that holds it is kept
// in a small cache: a directory's inodes usually share a few blocks.
func (f *FS) readInode(ino uint64) (*inode, error) {
	off, _, err := f.sb.inodeLocation(ino)
	if err != nil {
		return nil, corruptf("inode %d: %v", ino, err)
	}
	lin := uint64(off) >> f.sb.blockLog
	f.mu.Lock()
	blk := f.iblock.get(lin)
	f.mu.Unlock()
	if blk == nil {
		if blk, err = f.readBlocks(lin, 1); err != nil {
			return nil, inodeErr(ino, err)
		}
		f.mu.Lock()
		f.iblock.put(lin, blk)
		f.mu.Unlock()
	}
	in := int(uint64(off) & uint64(f.sb.blockSize-1))
	// parseInode keeps slices of the inode (its data fork): give it a copy,
	// not the cached block.
	b := append([]byte(nil), blk[in:in+int(f.sb.inodeSize)]...)
	return parseInode(f.sb, b, ino, f.checkCRC)
}

// blockCache keeps the last few blocks read, by linear block number.
type blockCache struct {
	blocks map[uint64][]byte
	order  []uint64 // oldest first
}

const blockCacheLen = 64

func (c *blockCache) get(lin uint64) []byte { return c.blocks[lin] }

func (c *blockCache) put(lin uint64, b []byte) {
	if c.blocks == nil {
		c.blocks = make(map[uint64][]byte)
	}
	if _, ok := c.blocks[lin]; ok {
		return
	}
	if len(c.order) == blockCacheLen {
		delete(c.blocks, c.order[0])
		c.order = c.order[1:]
	}
	c.blocks[lin] = b
	c.order = append(c.order, lin)
}

// lookup resolves an absolute path to its inode without following symbolic
// links, returning the cleaned path for messages.
func (f *FS) lookup(p string) (*inode, string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, p, invalidf("xfs %q: path is not absolute", p)
	}
	p = path.Clean(p)
	ip, err := f.readInode(f.sb.rootIno)
	if err != nil {
		return nil, p, withContext(err, "xfs %s: root directory", p)
	}
	if p == "/" {
		return ip, p, nil
	}
	walked := ""
	for _, name := range strings.Split(p[1:], "/") {
		if !ip.isDir() {
			return nil, p, wrongType(walked, "a directory", ip.fileMode())
		}
		walked += "/" + name
		ents, err := f.dirEntries(ip)
		if err != nil {
			return nil, p, withContext(err, "xfs %s: directory %s", p, path.Dir(walked))
		}
		i := sort.Search(len(ents), func(i int) bool { return ents[i].name >= name })
		if i == len(ents) || ents[i].name != name {
			return nil, p, notFound(walked)
		}
		if ip, err = f.readInode(ents[i].ino); err != nil {
			return nil, p, withContext(err, "xfs %s", walked)
		}
	}
	return ip, p, nil
}

// dirEntries returns a directory's entries sorted by name, from the cache
// when it was listed recently.
func (f *FS) dirEntries(ip *inode) ([]dirEntry, error) {
	f.mu.Lock()
	for i, d := range f.dirs {
		if d.ino == ip.ino {
			copy(f.dirs[1:i+1], f.dirs[:i])
			f.dirs[0] = d
			f.mu.Unlock()
			return d.entries, nil
		}
	}
	f.mu.Unlock()

	ents, err := f.readDir(ip)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
	if len(ents) <= dirCacheEntries {
		f.mu.Lock()
		f.dirs = append([]cachedDir{{ino: ip.ino, entries: ents}}, f.dirs...)
		if len(f.dirs) > dirCacheDirs {
			f.dirs = f.dirs[:dirCacheDirs]
		}
		f.mu.Unlock()
	}
	return ents, nil
}

func (f *FS) info(name string, ip *inode) fsimage.FileInfo {
	return fsimage.FileInfo{
		Name:    name,
		Mode:    ip.fileMode(),
		Size:    ip.size,
		UID:     ip.uid,
		GID:     ip.gid,
		ModTime: ip.mtime,
		Inode:   ip.ino,
		Nlink:   ip.nlink,
		Rdev:    ip.rdev(),
	}
}

// Lstat describes path, without following a symbolic link.
func (f *FS) Lstat(p string) (fsimage.FileInfo, error) {
	ip, clean, err := f.lookup(p)
	if err != nil {
		return fsimage.FileInfo{}, err
	}
	name := path.Base(clean)
	if clean == "/" {
		name = ""
	}
	return f.info(name, ip), nil
}

// ReadDir lists a directory, without "." and "..", sorted by name.
func (f *FS) ReadDir(p string) ([]fsimage.FileInfo, error) {
	ip, clean, err := f.lookup(p)
	if err != nil {
		return nil, err
	}
	if !ip.isDir() {
		return nil, wrongType(clean, "a directory", ip.fileMode())
	}
	ents, err := f.dirEntries(ip)
	if err != nil {
		return nil, withContext(err, "xfs %s", clean)
	}
	out := make([]fsimage.FileInfo, 0, len(ents))
	for _, e := range ents {
		child, err := f.readInode(e.ino)
		if err != nil {
			return nil, withContext(err, "xfs %s", path.Join(clean, e.name))
		}
		out = append(out, f.info(e.name, child))
	}
	return out, nil
}

// Readlink returns a symbolic link's target.
func (f *FS) Readlink(p string) (string, error) {
	ip, clean, err := f.lookup(p)
	if err != nil {
		return "", err
	}
	if ip.mode&sIFMT != sIFLNK {
		return "", wrongType(clean, "a symbolic link", ip.fileMode())
	}
	target, err := f.readSymlink(ip)
	if err != nil {
		return "", withContext(err, "xfs %s", clean)
	}
	return target, nil
}

// Open opens a regular file for reading. The file's extent map is read
// now; the returned File may be used concurrently.
func (f *FS) Open(p string) (fsimage.File, error) {
	ip, clean, err := f.lookup(p)
	if err != nil {
		return nil, err
	}
	if ip.mode&sIFMT != sIFREG {
		return nil, wrongType(clean, "a regular file", ip.fileMode())
	}
	if ip.flags&diflagRealtime != 0 {
		return nil, withContext(unsupportedf("inode %d: data on the realtime device", ip.ino), "xfs %s", clean)
	}
	exts, err := f.extents(ip)
	if err != nil {
		return nil, withContext(err, "xfs %s", clean)
	}
	return &file{fs: f, ino: ip.ino, size: ip.size, exts: exts}, nil
}

// file is an open regular file.
type file struct {
	fs   *FS
	ino  uint64
	size int64
	exts []extent
}

func (fl *file) Size() int64 { return fl.size }

// ReadAt reads from the file; holes and unwritten extents read as zeros and
// reads past the end return io.EOF.
func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, core.Invalid("xfs inode %d: negative read offset %d", fl.ino, off)
	}
	if off >= fl.size {
		return 0, io.EOF
	}
	n := len(p)
	var eof error
	if int64(n) > fl.size-off {
		n = int(fl.size - off)
		eof = io.EOF
	}
	if err := fl.fs.readMapped(fl.exts, p[:n], off, false); err != nil {
		return 0, inodeErr(fl.ino, err)
	}
	return n, eof
}

// readMapped fills p with the bytes of the file at byte offset off through
// the extent map exts. Holes and unwritten extents give zeros, unless
// strict (directory and symlink blocks), where they are an error.
func (f *FS) readMapped(exts []extent, p []byte, off int64, strict bool) error {
	bs := int64(f.sb.blockSize)
	for len(p) > 0 {
		fb := uint64(off / bs)
		inBlock := off % bs
		i := findExtent(exts, fb)
		if i == len(exts) || exts[i].off > fb {
			// A hole up to the next extent (or the end of the read).
			if strict {
				return corruptf("file block %d is not mapped", fb)
			}
			n := int64(len(p))
			if i < len(exts) {
				n = spanBytes(exts[i].off-fb, bs, inBlock, n)
			}
			clear(p[:n])
			p, off = p[n:], off+n
			continue
		}
		e := exts[i]
		n := spanBytes(e.off+e.count-fb, bs, inBlock, int64(len(p)))
		if e.unwritten {
			if strict {
				return corruptf("file block %d is in an unwritten extent", fb)
			}
			clear(p[:n])
		} else {
			phys := int64(e.block+(fb-e.off))*bs + inBlock
			if phys < 0 || phys > f.size || n > f.size-phys {
				return corruptf("file block %d maps to byte %d, beyond the %d-byte image", fb, phys, f.size)
			}
			if err := readFull(f.r, p[:n], phys); err != nil {
				return withContext(err, "file block %d", fb)
			}
		}
		p, off = p[n:], off+n
	}
	return nil
}

// spanBytes returns how many bytes of a read of want bytes, starting
// inBlock bytes into a block, lie within the next blocks blocks: at most
// want, computed without overflow for any block count.
func spanBytes(blocks uint64, bs, inBlock, want int64) int64 {
	if blocks > uint64(want/bs)+1 {
		return want
	}
	return min(want, int64(blocks)*bs-inBlock)
}

// String describes the file system in one line, for logs.
func (f *FS) String() string {
	return fmt.Sprintf("xfs v%d, %d-byte blocks, %d AGs of %d blocks, %d-byte inodes", f.sb.version(),
		f.sb.blockSize, f.sb.agCount, f.sb.agBlocks, f.sb.inodeSize)
}

// uuidEqual compares a version 5 header's UUID with the file system's.
func (f *FS) uuidEqual(b []byte) bool { return bytes.Equal(b, f.sb.uuid[:]) }
