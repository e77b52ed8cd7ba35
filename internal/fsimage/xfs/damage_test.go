package xfs

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
)

// Damaged images: each must give an error, never a panic or a hang. They
// start from the committed mkfs.xfs images and change one structure; on
// version 5 the CRC is fixed afterwards where the test is about the check
// behind it.

// noHang runs fn and fails the test if it takes more than 20 seconds.
func noHang(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("did not finish within 20 s (a loop on damaged metadata?)")
	}
}

// damaged is a fixture copy with the reader that found its structures.
type damaged struct {
	t    *testing.T
	img  *sparseImage
	orig *FS // over the undamaged fixture, to locate things
}

func newDamaged(t *testing.T, fixture string) *damaged {
	base := loadFixture(t, fixture)
	orig, err := openSparse(base, true)
	if err != nil {
		t.Fatal(err)
	}
	return &damaged{t: t, img: base.clone(), orig: orig}
}

func (d *damaged) v5() bool { return d.orig.sb.v5 }

// inodeOff returns the byte offset of path's inode.
func (d *damaged) inodeOff(p string) int64 {
	ip, _, err := d.orig.lookup(p)
	if err != nil {
		d.t.Fatal(err)
	}
	off, _, _ := d.orig.sb.inodeLocation(ip.ino)
	return off
}

// editInode changes path's inode and, with fixCRC, recomputes its CRC.
func (d *damaged) editInode(p string, fixCRC bool, edit func(b []byte)) {
	off := d.inodeOff(p)
	b := d.img.read(off, int(d.orig.sb.inodeSize))
	edit(b)
	if fixCRC && d.v5() {
		binary.LittleEndian.PutUint32(b[inodeCRCOffset:], metadataCRC(b, inodeCRCOffset))
	}
	d.img.writeAt(b, off)
}

// editBlock changes n bytes at off and, with crcOff >= 0 on version 5,
// recomputes the CRC of those n bytes at crcOff.
func (d *damaged) editBlock(off int64, n, crcOff int, edit func(b []byte)) {
	b := d.img.read(off, n)
	edit(b)
	if crcOff >= 0 && d.v5() {
		binary.LittleEndian.PutUint32(b[crcOff:], metadataCRC(b, crcOff))
	}
	d.img.writeAt(b, off)
}

// firstBlock returns the byte offset of the first data block of path.
func (d *damaged) firstBlock(p string) int64 {
	ip, _, err := d.orig.lookup(p)
	if err != nil {
		d.t.Fatal(err)
	}
	exts, err := d.orig.extents(ip)
	if err != nil {
		d.t.Fatal(err)
	}
	return int64(exts[0].block) << d.orig.sb.blockLog
}

func (d *damaged) open() (*FS, error) { return openSparse(d.img, true) }

func (d *damaged) mustOpen() *FS {
	fsys, err := d.open()
	if err != nil {
		d.t.Fatalf("Open: %v", err)
	}
	return fsys
}

// wantErr checks that err is an error of kind, whose message holds each of
// the fragments.
func wantErr(t *testing.T, what string, err error, kind core.Kind, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	if got := core.KindOf(err); got != kind {
		t.Errorf("%s: error kind %v, want %v: %v", what, got, kind, err)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("%s: error %q does not mention %q", what, err, f)
		}
	}
}

// shortReader ends at end although the image claims more.
type shortReader struct {
	r   io.ReaderAt
	end int64
}

func (s shortReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.end {
		return 0, io.EOF
	}
	n := min(int64(len(p)), s.end-off)
	m, err := s.r.ReadAt(p[:n], off)
	if err == nil && int64(m) < int64(len(p)) {
		err = io.EOF
	}
	return m, err
}

func TestDamagedTruncated(t *testing.T) {
	for _, name := range fuzzImages {
		t.Run(name, func(t *testing.T) {
			img := loadFixture(t, name)
			noHang(t, func() {
				for _, size := range []int64{0, 100, sbMinLen - 1, 512, 4096, 1 << 20, img.size / 2, img.size - 1} {
					_, err := Open(io.NewSectionReader(img, 0, size), size)
					if err == nil {
						t.Errorf("Open of the first %d bytes succeeded", size)
					}
				}
				// The image ends early but the size says it does not: the
				// superblock and the root read, what lies beyond does not.
				fsys, err := Open(shortReader{img, 1 << 20}, img.size)
				if err != nil {
					t.Fatalf("Open of an image cut at 1 MiB: %v", err)
				}
				n, errs := walkTree(fsys, 1<<20)
				if len(errs) == 0 {
					t.Fatalf("walk of an image cut at 1 MiB saw %d files and no error", n)
				}
				wantErr(t, "read beyond the cut", errs[0], core.KindCorrupt)
			})
		})
	}
}

func TestDamagedSuperblock(t *testing.T) {
	for _, name := range fuzzImages {
		t.Run(name, func(t *testing.T) {
			noHang(t, func() { damagedSuperblock(t, name) })
		})
	}
}

func damagedSuperblock(t *testing.T, name string) {
	sbEdit := func(edit func(b []byte), fixCRC bool) error {
		d := newDamaged(t, name)
		crc := -1
		if fixCRC {
			crc = sbCRCOffset
		}
		d.editBlock(0, int(d.orig.sb.sectSize), crc, edit)
		_, err := d.open()
		return err
	}
	be := binary.BigEndian
	err := sbEdit(func(b []byte) { clear(b) }, false)
	wantErr(t, "zeroed superblock", err, core.KindInvalid, "not an XFS file system")

	corrupt := []struct {
		what string
		edit func(b []byte)
		frag string
	}{
		{"block log 20", func(b []byte) { b[120] = 20 }, "block size"},
		{"block size not 2^log", func(b []byte) { be.PutUint32(b[4:], 5000) }, "block size"},
		{"sector size", func(b []byte) { be.PutUint16(b[102:], 3) }, "sector size"},
		{"inode size", func(b []byte) { b[122] = 7 }, "inode size"},
		{"inodes per block", func(b []byte) { b[123]++ }, "inodes per block"},
		{"AG block log", func(b []byte) { b[124]++ }, "AG size"},
		{"no AGs", func(b []byte) { be.PutUint32(b[88:], 0) }, "no allocation groups"},
		{"data blocks beyond the AGs", func(b []byte) { be.PutUint64(b[8:], 1<<40) }, "data blocks"},
		{"directory block log", func(b []byte) { b[192] = 12 }, "directory block log"},
		{"root inode beyond the AGs", func(b []byte) { be.PutUint64(b[56:], 1<<62) }, "root inode"},
	}
	for _, c := range corrupt {
		wantErr(t, c.what, sbEdit(c.edit, true), core.KindCorrupt, c.frag)
	}

	d := newDamaged(t, name)
	if d.v5() {
		err = sbEdit(func(b []byte) { b[110] ^= 1 }, false) // in sb_fname: only the CRC notices
		wantErr(t, "superblock CRC", err, core.KindCorrupt, "CRC mismatch")
		for _, c := range []struct {
			bit  uint32
			frag string
		}{{incompatMetadir, "metadir"}, {incompatNeedsRepair, "needsrepair"}, {incompatZoned, "zoned"}, {1 << 20, "unknown 0x100000"}} {
			err := sbEdit(func(b []byte) { be.PutUint32(b[216:], be.Uint32(b[216:])|c.bit) }, true)
			wantErr(t, "incompat "+c.frag, err, core.KindInvalid, "incompatible features", c.frag)
			if !errors.Is(err, ErrUnsupported) {
				t.Errorf("incompat %s: %v does not wrap ErrUnsupported", c.frag, err)
			}
		}
	} else {
		err = sbEdit(func(b []byte) { be.PutUint16(b[100:], be.Uint16(b[100:])&^sbVersionDirV2) }, false)
		wantErr(t, "no V2 directories", err, core.KindInvalid, "V2 directories")
		err = sbEdit(func(b []byte) { be.PutUint16(b[100:], be.Uint16(b[100:])&^0xf|3) }, false)
		wantErr(t, "version 3", err, core.KindInvalid, "superblock version 3")
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("version 3: %v does not wrap ErrUnsupported", err)
		}
	}
	err = sbEdit(func(b []byte) { b[126] = 1 }, true)
	wantErr(t, "mkfs in progress", err, core.KindInvalid, "in progress")
}

func TestDamagedInode(t *testing.T) {
	for _, name := range fuzzImages {
		t.Run(name, func(t *testing.T) {
			noHang(t, func() { damagedInode(t, name) })
		})
	}
}

func damagedInode(t *testing.T, name string) {
	be := binary.BigEndian
	v5 := newDamaged(t, name).v5()
	if v5 {
		// A flipped bit in the core of a file: that file fails, its
		// directory lists no more, the rest reads.
		d := newDamaged(t, name)
		d.editInode("/small", false, func(b []byte) { b[10] ^= 0x10 })
		fsys := d.mustOpen()
		_, err := fsys.Lstat("/small")
		wantErr(t, "flipped uid bit", err, core.KindCorrupt, "CRC mismatch", "/small")
		if _, err := fsys.ReadDir("/"); err == nil {
			t.Error("ReadDir(/) lists a corrupt inode without an error")
		}
		if _, err := fsys.Lstat("/d5/a"); err != nil {
			t.Errorf("Lstat(/d5/a) next to the damage: %v", err)
		}
		// The root's core.
		d = newDamaged(t, name)
		d.editInode("/", false, func(b []byte) { b[3] ^= 0x01 })
		_, err = d.open()
		wantErr(t, "flipped bit in the root inode", err, core.KindCorrupt, "root directory", "CRC mismatch")
	}
	cases := []struct {
		what string
		edit func(b []byte)
		frag string
	}{
		{"bad magic", func(b []byte) { b[0] = 'X' }, "bad magic"},
		{"regular file in local format", func(b []byte) { b[5] = fmtLocal }, "data fork format 1"},
		{"unknown file type", func(b []byte) { be.PutUint16(b[2:], 0o644) }, "unknown file type"},
		{"attribute fork beyond the inode", func(b []byte) { b[inodeOffForkoff] = 255 }, "attribute fork offset"},
		{"too many extents for the fork", func(b []byte) { be.PutUint32(b[inodeOffNext:], 1000) }, "extents in a"},
		{"negative size", func(b []byte) { b[inodeOffSize] = 0x80 }, "negative size"},
		{"wrong inode version", func(b []byte) { b[4] = 9 }, "version 9"},
	}
	if v5 {
		cases = append(cases, struct {
			what string
			edit func(b []byte)
			frag string
		}{"other inode number", func(b []byte) { be.PutUint64(b[inodeOffIno:], 4242) }, "records inode number 4242"})
	}
	for _, c := range cases {
		d := newDamaged(t, name)
		d.editInode("/multi", true, c.edit)
		fsys := d.mustOpen()
		_, err := fsys.Lstat("/multi")
		wantErr(t, c.what, err, core.KindCorrupt, c.frag)
	}

	// An extent beyond the file system: Lstat is fine, Open is not.
	d := newDamaged(t, name)
	coreLen := inodeCoreV2
	if v5 {
		coreLen = inodeCoreV3
	}
	d.editInode("/multi", true, func(b []byte) {
		rec := b[coreLen:]
		be.PutUint64(rec[8:], be.Uint64(rec[8:])|1<<(21+30)) // start block in AG 8192 and up
	})
	fsys := d.mustOpen()
	if _, err := fsys.Lstat("/multi"); err != nil {
		t.Errorf("Lstat with a bad extent: %v", err)
	}
	_, err := fsys.Open("/multi")
	wantErr(t, "extent beyond the file system", err, core.KindCorrupt, "extent record 0")

	// A realtime file: metadata reads, data does not.
	d = newDamaged(t, name)
	d.editInode("/small", true, func(b []byte) { be.PutUint16(b[inodeOffFlags:], diflagRealtime) })
	fsys = d.mustOpen()
	if _, err := fsys.Lstat("/small"); err != nil {
		t.Errorf("Lstat of a realtime file: %v", err)
	}
	_, err = fsys.Open("/small")
	wantErr(t, "realtime file", err, core.KindInvalid, "realtime device")
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("realtime file: %v does not wrap ErrUnsupported", err)
	}
}

func TestDamagedBmapBtree(t *testing.T) {
	for _, name := range fuzzImages {
		t.Run(name, func(t *testing.T) {
			noHang(t, func() { damagedBmbt(t, name) })
		})
	}
}

func damagedBmbt(t *testing.T, name string) {
	be := binary.BigEndian
	// /frag: root in the inode (level 2) -> one node (level 1) -> leaves.
	d := newDamaged(t, name)
	sb := d.orig.sb
	ip, _, err := d.orig.lookup("/frag")
	if err != nil {
		t.Fatal(err)
	}
	if lvl := be.Uint16(ip.dfork); lvl != 2 {
		t.Fatalf("/frag's B+tree root has level %d, the test wants 2", lvl)
	}
	rootMax := (len(ip.dfork) - bmdrHdrLen) / bmbtKeyPtrLen
	nodeFsb := be.Uint64(ip.dfork[bmdrHdrLen+rootMax*8:])
	nodeLin, _ := sb.fsbToLinear(nodeFsb, 1)
	nodeOff := int64(nodeLin) << sb.blockLog
	hdr := bmbtHdrLenV4
	if sb.v5 {
		hdr = bmbtHdrLenV5
	}
	nodeMax := (int(sb.blockSize) - hdr) / bmbtKeyPtrLen
	ptrAt := func(i int) int { return hdr + nodeMax*8 + i*8 }
	node := d.img.read(nodeOff, int(sb.blockSize))
	leafFsb := be.Uint64(node[ptrAt(0):])
	leafLin, _ := sb.fsbToLinear(leafFsb, 1)
	leafOff := int64(leafLin) << sb.blockLog

	cases := []struct {
		what string
		edit func(d *damaged)
		frag string
	}{
		{"child points back to its parent", func(d *damaged) {
			d.editBlock(nodeOff, int(sb.blockSize), bmbtCRCOffset, func(b []byte) { be.PutUint64(b[ptrAt(1):], nodeFsb) })
		}, "reached twice (a cycle"},
		{"first child is the parent itself", func(d *damaged) {
			d.editBlock(nodeOff, int(sb.blockSize), bmbtCRCOffset, func(b []byte) { be.PutUint64(b[ptrAt(0):], nodeFsb) })
		}, "reached twice (a cycle"},
		{"root pointing at a leaf, skipping a level", func(d *damaged) {
			d.editInode("/frag", true, func(b []byte) {
				fork := b[len(b)-len(ip.dfork):]
				be.PutUint64(fork[bmdrHdrLen+rootMax*8:], leafFsb)
			})
		}, "level 0, want 1"},
		{"two pointers to one leaf", func(d *damaged) {
			d.editBlock(nodeOff, int(sb.blockSize), bmbtCRCOffset, func(b []byte) { be.PutUint64(b[ptrAt(1):], leafFsb) })
		}, "reached twice"},
		{"root level beyond the limit", func(d *damaged) {
			d.editInode("/frag", true, func(b []byte) { be.PutUint16(b[len(b)-len(ip.dfork):], 200) })
		}, "level 200"},
		{"leaf with no records", func(d *damaged) {
			d.editBlock(leafOff, int(sb.blockSize), bmbtCRCOffset, func(b []byte) { be.PutUint16(b[bmbtOffNumrecs:], 0) })
		}, "0 records"},
		{"leaf with more records than fit", func(d *damaged) {
			d.editBlock(leafOff, int(sb.blockSize), bmbtCRCOffset, func(b []byte) { be.PutUint16(b[bmbtOffNumrecs:], 5000) })
		}, "5000 records"},
		{"bad magic", func(d *damaged) {
			d.editBlock(leafOff, int(sb.blockSize), bmbtCRCOffset, func(b []byte) { b[0] = 'Z' })
		}, "bad magic"},
		{"records out of order", func(d *damaged) {
			d.editBlock(leafOff, int(sb.blockSize), bmbtCRCOffset, func(b []byte) {
				r0, r1 := append([]byte(nil), b[hdr:hdr+16]...), b[hdr+16:hdr+32]
				copy(b[hdr:], r1)
				copy(b[hdr+16:], r0)
			})
		}, "overlaps or precedes"},
	}
	if sb.v5 {
		cases = append(cases, struct {
			what string
			edit func(d *damaged)
			frag string
		}{"leaf with a bad CRC", func(d *damaged) {
			d.editBlock(leafOff, int(sb.blockSize), -1, func(b []byte) { b[hdr+3] ^= 1 })
		}, "CRC mismatch"}, struct {
			what string
			edit func(d *damaged)
			frag string
		}{"leaf owned by another inode", func(d *damaged) {
			d.editBlock(leafOff, int(sb.blockSize), bmbtCRCOffset, func(b []byte) { be.PutUint64(b[bmbtOffOwner:], 4242) })
		}, "owned by inode 4242"})
	}
	for _, c := range cases {
		d := newDamaged(t, name)
		c.edit(d)
		fsys := d.mustOpen()
		_, err := fsys.Open("/frag")
		wantErr(t, c.what, err, core.KindCorrupt, c.frag, "/frag")
	}
}

func TestDamagedDirectory(t *testing.T) {
	for _, name := range fuzzImages {
		t.Run(name, func(t *testing.T) {
			noHang(t, func() { damagedDirectory(t, name) })
		})
	}
}

func damagedDirectory(t *testing.T, name string) {
	be := binary.BigEndian
	probe := newDamaged(t, name)
	sb := probe.orig.sb
	hdr := dirHdrLenV4
	if sb.v5 {
		hdr = dirHdrLenV5
	}
	dbs := int(sb.dirBlkSize())
	entSize := func(namelen int) int {
		ft := 0
		if sb.ftype {
			ft = 1
		}
		return (8 + 1 + namelen + ft + 2 + 7) &^ 7
	}
	// In a block-form directory the entries start with "." and "..".
	third := hdr + entSize(1) + entSize(2)
	cases := []struct {
		what string
		dir  string
		edit func(b []byte)
		frag string
	}{
		{"entry name running into the next entry", "/d50", func(b []byte) { b[third+8] = 255 }, "entry at byte"},
		{"entry with an empty name", "/d50", func(b []byte) { b[third+8] = 0 }, "bad name length"},
		{"entry whose tag does not point back", "/d50", func(b []byte) { be.PutUint16(b[third+entSize(6)-2:], 8) }, "tag"},
		{"free region of length zero", "/d50", func(b []byte) { be.PutUint16(b[third:], dirFreeTag); be.PutUint16(b[third+2:], 0) }, "bad length 0"},
		{"free region running past the block", "/d50", func(b []byte) { be.PutUint16(b[third:], dirFreeTag); be.PutUint16(b[third+2:], 0xfff8) }, "bad length"},
		{"block tail counting too many", "/d50", func(b []byte) { be.PutUint32(b[dbs-8:], 1<<30) }, "index entries"},
		{"slash in a name", "/d50", func(b []byte) { b[third+9] = '/' }, "invalid name"},
		{"bad magic in a data block", "/d600", func(b []byte) { b[1] = 'Q' }, "bad magic"},
	}
	for _, c := range cases {
		d := newDamaged(t, name)
		d.editBlock(d.firstBlock(c.dir), dbs, dirOffCRC, c.edit)
		fsys := d.mustOpen()
		_, err := fsys.ReadDir(c.dir)
		wantErr(t, c.what, err, core.KindCorrupt, c.frag, c.dir)
		_, err = fsys.Lstat(c.dir + "/f00001")
		wantErr(t, c.what+" (lookup)", err, core.KindCorrupt, c.frag)
	}
	if sb.v5 {
		d := newDamaged(t, name)
		d.editBlock(d.firstBlock("/d50"), dbs, -1, func(b []byte) { b[third+9] ^= 1 })
		_, err := d.mustOpen().ReadDir("/d50")
		wantErr(t, "directory block CRC", err, core.KindCorrupt, "CRC mismatch")
	}

	// Shortform /d5.
	core0 := inodeCoreV2
	if sb.v5 {
		core0 = inodeCoreV3
	}
	sf := []struct {
		what string
		edit func(b []byte)
		frag string
	}{
		{"more entries than bytes", func(b []byte) { b[core0] = 200 }, "shortform directory"},
		{"entry with an empty name", func(b []byte) { b[core0+6] = 0 }, "name length 0"},
		{"entry name past the fork", func(b []byte) { b[core0+6] = 250 }, "overruns"},
	}
	for _, c := range sf {
		d := newDamaged(t, name)
		d.editInode("/d5", true, c.edit)
		_, err := d.mustOpen().ReadDir("/d5")
		wantErr(t, c.what, err, core.KindCorrupt, c.frag, "/d5")
	}
	// An entry pointing at an inode beyond the file system.
	d := newDamaged(t, name)
	d.editInode("/d5", true, func(b []byte) {
		p := core0 + 6 + 3 + 1 // first entry's inode number (after its one-byte name)
		if sb.ftype {
			p++
		}
		be.PutUint32(b[p:], 0xfffffff0)
	})
	fsys := d.mustOpen()
	_, err := fsys.ReadDir("/d5")
	wantErr(t, "entry pointing beyond the file system", err, core.KindCorrupt, "inode 4294967280")
	_, err = fsys.Lstat("/d5/a")
	wantErr(t, "lookup of that entry", err, core.KindCorrupt, "inode 4294967280")
}

func TestDamagedSymlink(t *testing.T) {
	for _, name := range fuzzImages {
		t.Run(name, func(t *testing.T) {
			noHang(t, func() {
				be := binary.BigEndian
				d := newDamaged(t, name)
				d.editInode("/links/long", true, func(b []byte) { be.PutUint64(b[inodeOffSize:], 5000) })
				_, err := d.mustOpen().Readlink("/links/long")
				wantErr(t, "5000-byte symlink", err, core.KindCorrupt, "symbolic link of 5000 bytes")
				if !d.v5() {
					return
				}
				d = newDamaged(t, name)
				d.editBlock(d.firstBlock("/links/long"), int(d.orig.sb.blockSize), symlinkCRCOffset, func(b []byte) {
					be.PutUint32(b[symlinkOffBytes:], 10)
				})
				_, err = d.mustOpen().Readlink("/links/long")
				wantErr(t, "symlink header length", err, core.KindCorrupt, "header holds bytes 0+10")
				d = newDamaged(t, name)
				d.editBlock(d.firstBlock("/links/long"), int(d.orig.sb.blockSize), symlinkCRCOffset, func(b []byte) { b[0] = 0 })
				_, err = d.mustOpen().Readlink("/links/long")
				wantErr(t, "symlink without its header", err, core.KindCorrupt, "bad magic")
			})
		})
	}
}
