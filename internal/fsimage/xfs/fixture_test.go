package xfs

// The fuzz and damage tests run on two small real images committed in
// testdata (made by TestGenerateFixtures with mkfs.xfs and xfs_db). An XFS
// image is at least 300 MiB, nearly all zeros, so a fixture keeps only its
// non-zero blocks: gzip of a header ("CAIRNXFS1", image size, block size,
// block count) and then, per block, its index and its bytes.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

const fixtureMagic = "CAIRNXFS1"

// fixtureConfigs are the trees of the committed images: small, but with
// every structure the reader decodes.
var fixtureConfigs = map[string]config{
	"v5.xfsz": {
		name: "fixture-v5", mkfs: []string{"-b", "size=1024"}, imageSize: "300M",
		v5: true, bigtime: true, blockSize: 1024,
		dirSizes: []int{50, 200, 600}, fragExtents: 60, fragNodes: true, longSymlink: 900, bigFileBytes: 3000,
		forms: map[string]string{"/d5": "shortform", "/d50": "block", "/d200": "leaf", "/d600": "node"},
	},
	"v4.xfsz": {
		name: "fixture-v4", mkfs: []string{"-m", "crc=0", "-n", "ftype=0", "-b", "size=1024", "-i", "size=256"},
		imageSize: "300M", blockSize: 1024,
		dirSizes: []int{50, 200, 600}, fragExtents: 60, fragNodes: true, longSymlink: 900, bigFileBytes: 3000,
		forms: map[string]string{"/d5": "shortform", "/d50": "block", "/d200": "leaf", "/d600": "node"},
	},
}

// sparseImage is an image held as its non-zero blocks, with copy-on-write
// patches for damage and fuzz tests. It is an io.ReaderAt.
type sparseImage struct {
	size   int64
	bs     int
	blocks map[int64][]byte
	index  []int64 // sorted indexes of the stored blocks
}

func (s *sparseImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for n < len(p) {
		if off >= s.size {
			return n, io.EOF
		}
		bi, in := off/int64(s.bs), int(off%int64(s.bs))
		c := min(len(p)-n, s.bs-in, int(s.size-off))
		if b, ok := s.blocks[bi]; ok {
			copy(p[n:n+c], b[in:])
		} else {
			clear(p[n : n+c])
		}
		n += c
		off += int64(c)
	}
	return n, nil
}

// clone returns a copy that shares the unmodified blocks.
func (s *sparseImage) clone() *sparseImage {
	c := &sparseImage{size: s.size, bs: s.bs, blocks: make(map[int64][]byte, len(s.blocks)), index: s.index}
	for k, v := range s.blocks {
		c.blocks[k] = v
	}
	return c
}

// writeAt patches the image; touched blocks are copied first.
func (s *sparseImage) writeAt(p []byte, off int64) {
	for len(p) > 0 && off < s.size {
		bi, in := off/int64(s.bs), int(off%int64(s.bs))
		b := make([]byte, s.bs)
		if old, ok := s.blocks[bi]; ok {
			copy(b, old)
		}
		c := copy(b[in:], p)
		s.blocks[bi] = b
		p, off = p[c:], off+int64(c)
	}
}

func (s *sparseImage) read(off int64, n int) []byte {
	b := make([]byte, n)
	s.ReadAt(b, off)
	return b
}

func encodeFixture(s *sparseImage) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriter(zw)
	w.WriteString(fixtureMagic)
	binary.Write(w, binary.LittleEndian, uint64(s.size))
	binary.Write(w, binary.LittleEndian, uint32(s.bs))
	binary.Write(w, binary.LittleEndian, uint32(len(s.index)))
	for _, bi := range s.index {
		binary.Write(w, binary.LittleEndian, uint64(bi))
		w.Write(s.blocks[bi])
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decodeFixture(data []byte) (*sparseImage, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	r := bufio.NewReader(zr)
	magic := make([]byte, len(fixtureMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != fixtureMagic {
		return nil, fmt.Errorf("not a fixture")
	}
	var hdr struct {
		Size  uint64
		BS    uint32
		Count uint32
	}
	if err := binary.Read(r, binary.LittleEndian, &hdr); err != nil {
		return nil, err
	}
	s := &sparseImage{size: int64(hdr.Size), bs: int(hdr.BS), blocks: map[int64][]byte{}}
	for i := uint32(0); i < hdr.Count; i++ {
		var bi uint64
		if err := binary.Read(r, binary.LittleEndian, &bi); err != nil {
			return nil, err
		}
		b := make([]byte, s.bs)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		s.blocks[int64(bi)] = b
		s.index = append(s.index, int64(bi))
	}
	return s, nil
}

// sparseFromFile reads a raw image, keeping its non-zero blocks.
func sparseFromFile(t testing.TB, img string, bs int) *sparseImage {
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	s := &sparseImage{size: st.Size(), bs: bs, blocks: map[int64][]byte{}}
	r := bufio.NewReaderSize(f, 1<<20)
	zero := make([]byte, bs)
	for bi := int64(0); bi*int64(bs) < s.size; bi++ {
		b := make([]byte, bs)
		if _, err := io.ReadFull(r, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, zero) {
			s.blocks[bi] = b
			s.index = append(s.index, bi)
		}
	}
	return s
}

var fixtureCache sync.Map // name -> *sparseImage

// loadFixture returns a committed image (shared: clone before patching).
func loadFixture(t testing.TB, name string) *sparseImage {
	t.Helper()
	if s, ok := fixtureCache.Load(name); ok {
		return s.(*sparseImage)
	}
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("fixture %s: %v (regenerate with go test -tags xfsfixtures -run TestGenerate)", name, err)
	}
	s, err := decodeFixture(data)
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	fixtureCache.Store(name, s)
	return s
}

// openSparse opens an FS over a sparse image.
func openSparse(s *sparseImage, checkCRC bool) (*FS, error) {
	return open(s, s.size, checkCRC)
}

// walkTree visits the tree under root: Lstat and ReadDir on every
// directory, Readlink on every symlink, and a read of the start and the end
// of every regular file. It stops after limit files and returns how many it
// saw and the errors it met (it goes on after an error).
func walkTree(fsys *FS, limit int) (int, []error) {
	seen := 0
	var errs []error
	buf := make([]byte, 16<<10)
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		if depth > 32 {
			return
		}
		ents, err := fsys.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			return
		}
		for _, e := range ents {
			if seen >= limit {
				return
			}
			seen++
			p := dir + "/" + e.Name
			if dir == "/" {
				p = "/" + e.Name
			}
			if _, err := fsys.Lstat(p); err != nil {
				errs = append(errs, err)
				continue
			}
			switch {
			case e.Mode.IsDir():
				walk(p, depth+1)
			case e.Mode&fs.ModeSymlink != 0:
				if _, err := fsys.Readlink(p); err != nil {
					errs = append(errs, err)
				}
			case e.Mode.IsRegular():
				f, err := fsys.Open(p)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if _, err := f.ReadAt(buf, 0); err != nil && err != io.EOF {
					errs = append(errs, err)
				}
				if size := f.Size(); size > int64(len(buf)) {
					if _, err := f.ReadAt(buf, size-int64(len(buf))); err != nil && err != io.EOF {
						errs = append(errs, err)
					}
				}
			}
		}
	}
	if _, err := fsys.Lstat("/"); err != nil {
		return 0, []error{err}
	}
	walk("/", 0)
	return seen, errs
}

// TestFixtures checks that the committed images read whole, and what of
// them is deterministic (the trees' random files are not).
func TestFixtures(t *testing.T) {
	for name, cfg := range fixtureConfigs {
		t.Run(name, func(t *testing.T) {
			s := loadFixture(t, name)
			fsys, err := openSparse(s, true)
			if err != nil {
				t.Fatal(err)
			}
			n, errs := walkTree(fsys, 1<<20)
			if len(errs) > 0 {
				t.Fatalf("walk: %v", errs)
			}
			want := len(makeTree(t, cfg))
			if n != want {
				t.Errorf("walk saw %d files, want %d", n, want)
			}
			f, err := fsys.Open("/frag")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
			wantFrag := fragContents(pattern(2*cfg.fragExtents*cfg.blockSize, 0x1234), cfg.fragExtents, cfg.blockSize)
			if !bytes.Equal(got, wantFrag) {
				t.Error("/frag reads wrong")
			}
			if target, err := fsys.Readlink("/links/long"); err != nil || len(target) != cfg.longSymlink {
				t.Errorf("Readlink(/links/long) = %d bytes, %v", len(target), err)
			}
		})
	}
}
