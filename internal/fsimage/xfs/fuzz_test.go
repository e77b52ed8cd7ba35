package xfs

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"testing"
)

// A FuzzXFS input patches one of the committed images (fixture_test.go):
//
//	byte 0      bit 0 picks the image (0 version 5, 1 version 4); bit 1
//	            turns CRC checks on (off by default, so that patches reach
//	            the decoders behind the checksums)
//	then        patches: u16 index into the image's stored blocks, u16
//	            offset in the block, u8 length, the bytes (all little endian)
//
// and the tree is then read (fuzzWalk, bounded). Whatever the bytes,
// it must end without a panic; errors are expected.
func FuzzXFS(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{1})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, data []byte) {
		img, checkCRC := patchedFixture(t, data)
		fsys, err := openSparse(img, checkCRC)
		if err != nil {
			return
		}
		fuzzWalk(fsys, "/", 0, new(int))
	})
}

// fuzzWalk is a lighter walkTree for FuzzXFS: every directory is listed,
// but only its first 50 entries are visited further (ReadDir already reads
// every entry's inode), and files are read at their start and end.
func fuzzWalk(fsys *FS, dir string, depth int, budget *int) {
	if depth > 16 || *budget > 400 {
		return
	}
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return
	}
	buf := make([]byte, 4096)
	for i, e := range ents {
		if i == 50 {
			break
		}
		*budget++
		p := path.Join(dir, e.Name)
		switch {
		case e.Mode.IsDir():
			fuzzWalk(fsys, p, depth+1, budget)
		case e.Mode&fs.ModeSymlink != 0:
			fsys.Readlink(p)
		case e.Mode.IsRegular():
			f, err := fsys.Open(p)
			if err != nil {
				continue
			}
			f.ReadAt(buf, 0)
			f.ReadAt(buf, f.Size()-int64(len(buf)/2))
		default:
			fsys.Lstat(p)
		}
	}
}

var fuzzImages = []string{"v5.xfsz", "v4.xfsz"}

// patchedFixture applies a FuzzXFS input to a copy of its image.
func patchedFixture(t testing.TB, data []byte) (*sparseImage, bool) {
	if len(data) == 0 {
		data = []byte{0}
	}
	base := loadFixture(t, fuzzImages[data[0]&1])
	img := base.clone()
	p := data[1:]
	for len(p) >= 5 {
		idx := int(binary.LittleEndian.Uint16(p)) % len(img.index)
		in := int(binary.LittleEndian.Uint16(p[2:])) % img.bs
		n := min(int(p[4]), len(p)-5)
		img.writeAt(p[5:5+n], img.index[idx]*int64(img.bs)+int64(in))
		p = p[5+n:]
	}
	return img, data[0]&2 != 0
}

// patch encodes one FuzzXFS patch at byte offset off of img.
func patch(img *sparseImage, off int64, b []byte) []byte {
	bi := off / int64(img.bs)
	idx := -1
	for i, x := range img.index {
		if x == bi {
			idx = i
		}
	}
	if idx < 0 {
		panic(fmt.Sprintf("block %d is not stored", bi))
	}
	out := binary.LittleEndian.AppendUint16(nil, uint16(idx))
	out = binary.LittleEndian.AppendUint16(out, uint16(off%int64(img.bs)))
	out = append(out, byte(len(b)))
	return append(out, b...)
}

// FuzzXFSDecoders feeds each on-disk structure's decoder directly: byte 0
// picks the decoder, the rest is the structure.
func FuzzXFSDecoders(f *testing.F) {
	for i := 0; i < decoderCount; i++ {
		f.Add([]byte{byte(i)})
	}
	v5 := mustSuperblock(f, "v5.xfsz")
	v4 := mustSuperblock(f, "v4.xfsz")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		runDecoder(v5, v4, data[0], data[1:])
	})
}

const decoderCount = 9

func mustSuperblock(tb testing.TB, fixture string) *superblock {
	img := loadFixture(tb, fixture)
	sb, err := parseSuperblock(img.read(0, sbMinLen))
	if err != nil {
		tb.Fatal(err)
	}
	return sb
}

// runDecoder runs decoder sel on b, and whatever can follow from its
// result. Errors are expected; panics are bugs.
func runDecoder(v5, v4 *superblock, sel byte, b []byte) {
	sb := v5
	if sel&0x80 != 0 {
		sb = v4
	}
	switch int(sel&0x7f) % decoderCount {
	case 0:
		if s, err := parseSuperblock(b); err == nil {
			for _, ino := range []uint64{0, s.rootIno, 1 << 40, ^uint64(0)} {
				s.inodeLocation(ino)
			}
			s.fsbToLinear(^uint64(0), 1)
			s.fsbToLinear(1, 1<<21)
		}
	case 1:
		in := make([]byte, sb.inodeSize)
		copy(in, b)
		ip, err := parseInode(sb, in, 131, false)
		if err != nil {
			return
		}
		ip.rdev()
		ip.fileMode()
		switch {
		case ip.format == fmtExtents:
			exts, err := sb.appendExtents(nil, ip.dfork, int(ip.nextents))
			if err == nil {
				checkExtentOrder(exts)
			}
		case ip.format == fmtLocal && ip.isDir():
			parseShortform(ip.dfork[:ip.size], sb.ftype)
		}
	case 2:
		parseShortform(b, sel&0x40 != 0)
	case 3:
		if len(b) > 0 {
			// A directory block of a real size: 4 KiB, or what the input says.
			size := 4096
			if b[0]&1 != 0 {
				size = 1024
			}
			blk := make([]byte, size)
			copy(blk, b[1:])
			parseDataBlock(blk, sb.v5, sel&0x40 != 0, nil)
			parseDataBlock(b[1:], sb.v5, sel&0x40 != 0, nil)
		}
	case 4:
		blk := make([]byte, sb.blockSize)
		copy(blk, b)
		if bb, err := parseBmbtBlock(blk, sb.v5); err == nil && bb.level == 0 {
			exts, err := sb.appendExtents(nil, bb.recs, bb.numrecs)
			if err == nil {
				checkExtentOrder(exts)
			}
		}
		parseBmbtBlock(b, sb.v5)
	case 5:
		// Take the length, owner and address the header claims, so that the
		// checks can pass and the fuzzer gets past them.
		if len(b) >= symlinkHdrLen {
			be := binary.BigEndian
			left := int(be.Uint32(b[symlinkOffBytes:]) % 2048)
			parseSymlinkBlock(b, sb.uuid[:], be.Uint64(b[symlinkOffBlkno:]), be.Uint64(b[symlinkOffOwner:]), 0, left, sel&0x40 != 0)
		}
		parseSymlinkBlock(b, sb.uuid[:], 16, 131, 0, 900, false)
	case 6:
		exts, err := sb.appendExtents(nil, b, len(b)/bmbtRecLen)
		if err != nil || checkExtentOrder(exts) != nil {
			return
		}
		// Read through the mapping, over an image of zeros.
		fsys := &FS{r: zeroReader{}, size: int64(sb.dblocks) << sb.blockLog, sb: sb}
		buf := make([]byte, 3*sb.blockSize+5)
		for _, off := range []int64{0, 1, int64(sb.blockSize) - 1, 1 << 32, 1<<62 + 7} {
			fsys.readMapped(exts, buf, off, false)
			fsys.readMapped(exts, buf, off, true)
		}
	case 7:
		if len(b) >= 8 {
			decodeTime(b, true)
			decodeTime(b, false)
		}
	case 8:
		if len(b) >= 16 {
			decodeExtent(b)
		}
	}
}

type zeroReader struct{}

func (zeroReader) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

// structure is a piece of a fixture image worth fuzzing.
type structure struct {
	name    string
	off     int64
	bytes   []byte
	decoder int // FuzzXFSDecoders selector, -1 for none
}

// locateStructures finds, with the reader itself, the superblock, inodes
// of every data fork format, directory blocks, bmap B+tree blocks and the
// remote symlink block of a fixture.
func locateStructures(t testing.TB, fsys *FS) []structure {
	sb := fsys.sb
	img := fsys.r.(*sparseImage)
	var out []structure
	out = append(out, structure{name: "superblock", off: 0, bytes: img.read(0, int(sb.sectSize)), decoder: 0})
	inodeAt := func(p string) (*inode, int64) {
		ip, _, err := fsys.lookup(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		off, _, _ := sb.inodeLocation(ip.ino)
		return ip, off
	}
	for _, p := range []string{"/d5", "/d50", "/d600", "/frag", "/small", "/dev/wide", "/links/short", "/links/long"} {
		ip, off := inodeAt(p)
		name := "inode" + filepath.Base(p)
		out = append(out, structure{name: name, off: off, bytes: img.read(off, int(sb.inodeSize)), decoder: 1})
		if ip.format == fmtLocal && ip.isDir() {
			core := int64(inodeCoreV2)
			if sb.v5 {
				core = inodeCoreV3
			}
			out = append(out, structure{name: "shortform", off: off + core,
				bytes: append([]byte(nil), ip.dfork[:ip.size]...), decoder: 2})
		}
	}
	// Directory blocks: the block form of /d50, a data block of /d600.
	for _, p := range []string{"/d50", "/d600"} {
		ip, _ := inodeAt(p)
		exts, err := fsys.extents(ip)
		if err != nil {
			t.Fatal(err)
		}
		off := int64(exts[0].block) << sb.blockLog
		out = append(out, structure{name: "dirblock" + p[1:], off: off, bytes: img.read(off, int(sb.dirBlkSize())), decoder: 3})
	}
	// The bmap B+tree of /frag: its first interior block and first leaf.
	ip, _ := inodeAt("/frag")
	root := ip.dfork
	maxrecs := (len(root) - bmdrHdrLen) / bmbtKeyPtrLen
	ptr := binary.BigEndian.Uint64(root[bmdrHdrLen+maxrecs*8:])
	for level := binary.BigEndian.Uint16(root) - 1; ; level-- {
		lin, err := sb.fsbToLinear(ptr, 1)
		if err != nil {
			t.Fatal(err)
		}
		off := int64(lin) << sb.blockLog
		b := img.read(off, int(sb.blockSize))
		out = append(out, structure{name: fmt.Sprintf("bmbt-level%d", level), off: off, bytes: b, decoder: 4})
		if level == 0 {
			blk, _ := parseBmbtBlock(b, sb.v5)
			out = append(out, structure{name: "extents", off: off, bytes: append([]byte(nil), blk.recs...), decoder: 6})
			break
		}
		blk, err := parseBmbtBlock(b, sb.v5)
		if err != nil {
			t.Fatal(err)
		}
		ptr = binary.BigEndian.Uint64(blk.ptrs)
	}
	// The remote symlink block.
	ip, _ = inodeAt("/links/long")
	exts, err := fsys.extents(ip)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(exts[0].block) << sb.blockLog
	dec := 5
	if !sb.v5 {
		dec = -1
	}
	out = append(out, structure{name: "symlink", off: off, bytes: img.read(off, int(sb.blockSize)), decoder: dec})
	return out
}
