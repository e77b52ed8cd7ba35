package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
	"github.com/cairn-backup/cairn/internal/fsimage/fsimagetest"
	"github.com/cairn-backup/cairn/internal/testenv"
)

var (
	damageOnce sync.Once
	damageImg  []byte
)

// damageImage is a small image (1 KiB blocks, metadata_csum) holding a
// file, a fragmented file whose extent tree is two levels deep, an htree
// directory and symbolic links: the base the damage tests break.
func damageImage(t testing.TB) []byte {
	t.Helper()
	damageOnce.Do(func() {
		src := filepath.Join(t.TempDir(), "src")
		os.MkdirAll(filepath.Join(src, "dir"), 0o755)
		os.WriteFile(filepath.Join(src, "a"), []byte("a file\n"), 0o644)
		f, _ := os.Create(filepath.Join(src, "frag"))
		for i := range 400 {
			f.WriteAt(bytes.Repeat([]byte{byte(i%200 + 1)}, 1024), int64(i)*2048)
		}
		f.Close()
		for i := range 60 {
			os.WriteFile(filepath.Join(src, "dir", fmt.Sprintf("entry-number-%03d", i)), []byte{byte(i)}, 0o644)
		}
		os.Symlink("a", filepath.Join(src, "fast"))
		os.Symlink(strings.Repeat("x", 80), filepath.Join(src, "slow"))
		damageImg, _ = os.ReadFile(mkfs(t, "ext4", src, "8M", "-b", "1024"))
	})
	if damageImg == nil {
		t.Fatal("no base image")
	}
	return bytes.Clone(damageImg)
}

// walkAll reads everything in fsys and returns the first error.
func walkAll(fsys fsimage.FS) error {
	var walk func(p string) error
	walk = func(p string) error {
		entries, err := fsys.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range entries {
			child := path.Join(p, e.Name)
			switch {
			case e.Mode.IsDir():
				err = walk(child)
			case e.Mode.Type() == os.ModeSymlink:
				_, err = fsys.Readlink(child)
			case e.Mode.IsRegular():
				var f fsimage.File
				if f, err = fsys.Open(child); err == nil {
					_, err = fsimagetest.ReadAll(f)
				}
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return walk("/")
}

// bounded runs fn, failing the test if it panics or takes longer than 20
// seconds.
func bounded(t *testing.T, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		done <- fn()
	}()
	select {
	case err := <-done:
		if err != nil && strings.HasPrefix(err.Error(), "panic: ") {
			t.Fatal(err)
		}
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("still running after 20s: a loop?")
		return nil
	}
}

// openAndWalk opens img (checking checksums or not) and reads all of it.
func openAndWalk(img []byte, verify bool) error {
	f, err := open(bytes.NewReader(img), int64(len(img)), verify)
	if err != nil {
		return err
	}
	return walkAll(f)
}

// locate finds the structures of the base image the cases break.
type located struct {
	f *FS
}

func (l located) inode(t *testing.T, p string) (*inode, int64) {
	t.Helper()
	in, _, err := l.f.lookup(p)
	if err != nil {
		t.Fatal(err)
	}
	g := (in.ino - 1) / l.f.inodesPerGroup
	gd, err := l.f.group(g)
	if err != nil {
		t.Fatal(err)
	}
	return in, int64(gd.inodeTable)*l.f.blockSize + int64((in.ino-1)%l.f.inodesPerGroup)*l.f.inodeSize
}

// blockOf returns the byte offset of the block holding logical block lb of p.
func (l located) blockOf(t *testing.T, p string, lb uint64) int64 {
	t.Helper()
	in, _ := l.inode(t, p)
	c, err := l.f.openContent(in)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.mapper.mapBlock(lb)
	if err != nil || r.zero {
		t.Fatalf("block %d of %s: %+v, %v", lb, p, r, err)
	}
	return int64(r.phys) * l.f.blockSize
}

// extentChild returns the byte offset of the first child of the extent
// tree node at off (the root, in an inode, or a block).
func (l located) extentChild(node []byte) int64 {
	return int64(binary.LittleEndian.Uint32(node[12+4:])) * l.f.blockSize
}

func fixSuperChecksum(img []byte) {
	binary.LittleEndian.PutUint32(img[1024+0x3FC:], crc32c(^uint32(0), img[1024:1024+0x3FC]))
}

func TestDamage(t *testing.T) {
	base := damageImage(t)
	f, err := open(bytes.NewReader(base), int64(len(base)), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := walkAll(f); err != nil {
		t.Fatalf("the base image does not read: %v", err)
	}
	l := located{f}
	frag, fragOff := l.inode(t, "/frag")
	if d := le16(frag.block, 6); d != 2 {
		t.Fatalf("/frag has an extent tree of depth %d, want 2", d)
	}
	_, rootOff := l.inode(t, "/")
	dir, dirOff := l.inode(t, "/dir")
	if dir.flags&flagIndex == 0 {
		t.Fatal("/dir is not an htree directory")
	}
	_, slowOff := l.inode(t, "/slow")
	level1 := l.extentChild(frag.block) // depth 1 index block
	level0 := l.extentChild(base[level1:])
	dirBlock := l.blockOf(t, "/dir", 1) // a leaf of the htree
	gdOff := int64(2 * 1024)            // group descriptors follow the superblock

	type edit func(img []byte) []byte
	cases := []struct {
		name string
		edit edit
		// want is in the error with checksums off; with checksums on, any
		// error will do (most cases fail the checksum first).
		want string
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }, "truncated image"},
		{"truncated in the superblock", func(b []byte) []byte { return b[:1500] }, "too small"},
		{"zeroed superblock", func(b []byte) []byte { clear(b[1024:2048]); return b }, "no 0xEF53 magic"},
		{"superblock: inode count", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[1024:], 1<<31)
			fixSuperChecksum(b)
			return b
		}, "inodes for"},
		{"superblock: blocks per group", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[1024+0x20:], 0)
			fixSuperChecksum(b)
			return b
		}, "blocks per group"},
		{"superblock: block size", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[1024+0x18:], 9)
			fixSuperChecksum(b)
			return b
		}, "beyond 64 KiB"},
		{"superblock: checksum", func(b []byte) []byte { b[1024+0x78] ^= 1; return b }, ""},
		{"group descriptor: inode table", func(b []byte) []byte { b[gdOff+0x8+3] ^= 0x40; return b }, "inode table at block"},
		{"group descriptor: any bit", func(b []byte) []byte { b[gdOff+0x10] ^= 0x08; return b }, ""},
		{"inode table: root mode", func(b []byte) []byte { b[rootOff+1] = 0xF0; return b }, "invalid file type"},
		{"inode table: root unused", func(b []byte) []byte { clear(b[rootOff : rootOff+2]); return b }, "not in use"},
		{"inode table: extra size", func(b []byte) []byte { b[rootOff+0x80] = 0xFE; return b }, "extra size"},
		{"inode table: any bit", func(b []byte) []byte { b[fragOff+0x64] ^= 0x10; return b }, ""},
		{"extent header in the inode", func(b []byte) []byte { b[fragOff+0x28] ^= 0x01; return b }, "bad magic"},
		{"extent header depth", func(b []byte) []byte { b[fragOff+0x28+6] = 9; return b }, "depth 9"},
		{"extent header entries", func(b []byte) []byte { b[fragOff+0x28+2] = 40; return b }, "40 entries"},
		{"extent index block magic", func(b []byte) []byte { b[level1] ^= 0x20; return b }, "bad magic"},
		{"extent tree loop", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[level1+12+4:], uint32(level1/1024)) // first child: itself
			return b
		}, "depth 1, want 0"},
		{"extent index block depth", func(b []byte) []byte { b[level1+6] = 2; return b }, "depth 2, want 1"},
		{"extent beyond the file system", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[level0+12+8:], 0xFFFFFF00)
			return b
		}, "outside the file system"},
		{"extents overlapping", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[level0+24:], binary.LittleEndian.Uint32(b[level0+12:])) // second starts with the first
			return b
		}, "overlaps"},
		{"directory record length 0", func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[dirBlock+4:], 0)
			return b
		}, "record length 0"},
		{"directory record length past the block", func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[dirBlock+4:], 2000)
			return b
		}, "record length 2000"},
		{"directory entry inode", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[dirBlock:], 0xFFFFFFF0)
			return b
		}, "beyond the"},
		{"directory size", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[dirOff+0x4:], 0xFFFFF000)
			return b
		}, "whole number"},
		{"slow symlink size", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[slowOff+0x4:], 1<<20)
			return b
		}, "target of 1048576 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, verify := range []bool{false, true} {
				img := c.edit(bytes.Clone(base))
				err := bounded(t, func() error { return openAndWalk(img, verify) })
				if err == nil {
					if c.want == "" && !verify {
						continue // only checksums can see this change
					}
					t.Fatalf("checksums %v: no error", verify)
				}
				if k := core.KindOf(err); k != core.KindCorrupt && k != core.KindInvalid {
					t.Errorf("checksums %v: error of kind %v: %v", verify, k, err)
				}
				if !verify && !strings.Contains(err.Error(), c.want) {
					t.Errorf("checksums off: error %q, want it to contain %q", err, c.want)
				}
				if verify && c.want == "" && !strings.Contains(err.Error(), "checksum") {
					t.Errorf("checksums on: error %q does not name a checksum", err)
				}
			}
		})
	}
}

func TestUnsupportedFeatures(t *testing.T) {
	base := damageImage(t)
	f, err := Open(bytes.NewReader(base), int64(len(base)))
	if err != nil {
		t.Fatal(err)
	}
	aIn, aOff := located{f}.inode(t, "/a")
	incompat := func(bits uint32) func([]byte) {
		return func(b []byte) {
			v := binary.LittleEndian.Uint32(b[1024+0x60:])
			binary.LittleEndian.PutUint32(b[1024+0x60:], v|bits)
			fixSuperChecksum(b)
		}
	}
	for _, c := range []struct {
		name string
		edit func([]byte)
		want string
	}{
		{"compression", incompat(incompatCompression), "incompatible feature compression"},
		{"journal device", incompat(incompatJournalDev), "journal_dev"},
		{"dirdata", incompat(incompatDirData), "dirdata"},
		{"unknown", incompat(1 << 30), "unknown 0x40000000"},
		{"two", incompat(incompatCompression | 1<<31), "compression, unknown 0x80000000"},
		{"revision", func(b []byte) { b[1024+0x4C] = 2; fixSuperChecksum(b) }, "revision 2"},
		{"checksum type", func(b []byte) { b[1024+0x175] = 7; fixSuperChecksum(b) }, "checksum type 7"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := bytes.Clone(base)
			c.edit(img)
			_, err := Open(bytes.NewReader(img), int64(len(img)))
			if !errors.Is(err, fsimage.ErrUnsupported) || core.KindOf(err) != core.KindInvalid || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open: %v; want an unsupported error naming %q", err, c.want)
			}
		})
	}
	t.Run("encrypted file", func(t *testing.T) {
		img := bytes.Clone(base)
		incompat(incompatEncrypt)(img)
		raw := img[aOff : aOff+f.inodeSize]
		binary.LittleEndian.PutUint32(raw[0x20:], binary.LittleEndian.Uint32(raw[0x20:])|flagEncrypt)
		setInodeChecksum(f, raw, aIn.ino)
		g, err := Open(bytes.NewReader(img), int64(len(img)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Lstat("/a"); err != nil {
			t.Fatalf("Lstat of an encrypted file: %v", err)
		}
		_, err = g.Open("/a")
		if !errors.Is(err, fsimage.ErrUnsupported) || !strings.Contains(err.Error(), "encrypted") {
			t.Fatalf("Open: %v", err)
		}
	})
}

// setInodeChecksum stores the right metadata_csum checksum in raw, the
// bytes of inode ino.
func setInodeChecksum(f *FS, raw []byte, ino uint64) {
	unchecked := *f
	unchecked.verify = false
	in, err := unchecked.parseInode(ino, bytes.Clone(raw))
	if err != nil {
		panic(err)
	}
	c := inodeChecksum(in)
	binary.LittleEndian.PutUint16(raw[0x7C:], uint16(c))
	if len(raw) > oldInodeSize && in.extra >= 4 {
		binary.LittleEndian.PutUint16(raw[0x82:], uint16(c>>16))
	}
}

// TestUnwrittenExtents: blocks of an unwritten (fallocated) extent read as
// zeros whatever their disk blocks hold, and NextData skips them.
func TestUnwrittenExtents(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o755)
	fh, _ := os.Create(filepath.Join(src, "f"))
	fh.Write(bytes.Repeat([]byte("A"), 4096))
	fh.WriteAt(bytes.Repeat([]byte("B"), 4096), 40*4096)
	fh.Truncate(60 * 4096)
	fh.Close()
	img := mkfs(t, "ext4", src, "16M", "-b", "4096")
	fsimagetest.RunTool(t, nil, "debugfs", "-w", "-R", "fallocate /f 5 20", img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	in, _, err := f.lookup("/f")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := f.openContent(in)
	r, err := c.mapper.mapBlock(7)
	if err != nil || !r.zero || r.phys == 0 {
		t.Fatalf("block 7: %+v, %v; want an unwritten extent", r, err)
	}
	// Fill the unwritten extent's disk blocks with garbage.
	for i := uint64(0); i < r.count; i++ {
		copy(b[(r.phys+i)*4096:], bytes.Repeat([]byte{0xEE}, 4096))
	}
	f, _ = Open(bytes.NewReader(b), int64(len(b)))
	file, err := f.Open("/f")
	if err != nil {
		t.Fatal(err)
	}
	got, err := fsimagetest.ReadAll(file)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 60*4096)
	copy(want, bytes.Repeat([]byte("A"), 4096))
	copy(want[40*4096:], bytes.Repeat([]byte("B"), 4096))
	if !bytes.Equal(got, want) {
		t.Fatal("content differs: the unwritten extent does not read as zeros")
	}
	sf := file.(fsimage.SparseFile)
	for _, c := range []struct{ off, start, end int64 }{{0, 0, 4096}, {4096, 40 * 4096, 41 * 4096}, {41 * 4096, 60 * 4096, 60 * 4096}} {
		if s, e, err := sf.NextData(c.off); s != c.start || e != c.end || err != nil {
			t.Errorf("NextData(%d) = %d, %d, %v; want %d, %d", c.off, s, e, err, c.start, c.end)
		}
	}
}

// TestSharedEmptySubtrees: a file whose huge hole is made of indirect
// blocks shared many times over (as a crafted image can) is skipped at
// once by NextData and reads as zeros, instead of costing a walk per
// indirect block.
func TestSharedEmptySubtrees(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o755)
	os.WriteFile(filepath.Join(src, "big"), []byte("x"), 0o644)
	// 64 KiB blocks: 16384 pointers a block, so walking the hole block by
	// block would take 2^28 steps.
	const bs = 65536
	img, err := os.ReadFile(mkfs(t, "ext2", src, "16M", "-b", "65536"))
	if err != nil {
		t.Fatal(err)
	}
	f := openBytes(t, img)
	in, off := located{f}.inode(t, "/big")
	const b3, b2, b1 = 250, 251, 252 // free blocks at the end
	for i := range bs / 4 {
		binary.LittleEndian.PutUint32(img[b3*bs+4*i:], b2)
		binary.LittleEndian.PutUint32(img[b2*bs+4*i:], b1)
	}
	clear(img[b1*bs : b1*bs+bs])
	raw := img[off : off+f.inodeSize]
	binary.LittleEndian.PutUint32(raw[iBlockOffset+4*14:], b3)
	size := f.maxFileSize(false)
	binary.LittleEndian.PutUint32(raw[0x4:], uint32(size))
	binary.LittleEndian.PutUint32(raw[0x6C:], uint32(size>>32))
	g := openBytes(t, img)
	file, err := g.Open("/big")
	if err != nil {
		t.Fatal(err)
	}
	if file.Size() != int64(size) {
		t.Fatalf("size %d, want %d (inode %d)", file.Size(), size, in.ino)
	}
	start := time.Now()
	err = bounded(t, func() error {
		s, e, err := file.(fsimage.SparseFile).NextData(1)
		if s != 1 || e != bs || err != nil {
			return fmt.Errorf("NextData(1) = %d, %d, %v; want the first block", s, e, err)
		}
		s, e, err = file.(fsimage.SparseFile).NextData(bs)
		if s != int64(size) || e != int64(size) || err != nil {
			return fmt.Errorf("NextData(4096) = %d, %d, %v; want the end", s, e, err)
		}
		buf := make([]byte, 1<<20)
		for _, off := range []int64{1 << 40, int64(size) - 12345, 5 << 30} {
			if _, err := file.ReadAt(buf, off); err != nil && err != io.EOF {
				return err
			}
			if !bytes.Equal(buf[:100], make([]byte, 100)) {
				return fmt.Errorf("non-zero bytes at %d", off)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v", el)
	}
}
