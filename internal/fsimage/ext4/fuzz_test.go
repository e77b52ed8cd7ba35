package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
	"github.com/cairn-backup/cairn/internal/fsimage/fsimagetest"
)

var writeSeeds = flag.Bool("ext4.write-seeds", false, "rewrite testdata/fuzz/FuzzExt4/seed-* from images made by mkfs")

// fuzzImageSize is the size of the images FuzzExt4 reads: room for a
// 1024-block journal with 1 KiB blocks.
const fuzzImageSize = 2 << 20

// smallTree fills dir with a little of everything, for 2 MiB images.
func smallTree(t testing.TB, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "dir/sub"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644))
	must(os.WriteFile(filepath.Join(dir, "small"), []byte("small file\n"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "hundred"), bytes.Repeat([]byte("0123456789"), 10), 0o644))
	must(os.WriteFile(filepath.Join(dir, "dir/sub/multi"), bytes.Repeat([]byte("multi-block "), 250), 0o644))
	f, err := os.Create(filepath.Join(dir, "frag"))
	must(err)
	for i := range 100 {
		_, err := f.WriteAt(bytes.Repeat([]byte{'A' + byte(i%26)}, 16), int64(i)*2048)
		must(err)
	}
	must(f.Truncate(300 << 10))
	must(f.Close())
	for i := range 60 {
		must(os.WriteFile(filepath.Join(dir, "dir", fmt.Sprintf("entry-%02d", i)), nil, 0o644))
	}
	must(os.Symlink("small", filepath.Join(dir, "fast")))
	must(os.Symlink(strings.Repeat("../dir/", 12)+"sub", filepath.Join(dir, "slow")))
	must(os.Symlink("loop", filepath.Join(dir, "loop")))
	must(os.Link(filepath.Join(dir, "small"), filepath.Join(dir, "dir/hardlink")))
	must(syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
}

// seedImages makes the fuzzer's starting images: several layouts of the
// small tree, and one whose journal needs recovery.
func seedImages(t testing.TB) map[string][]byte {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	smallTree(t, src)
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	out := map[string][]byte{
		"ext4-1k":     read(mkfs(t, "ext4", src, "2M", "-b", "1024", "-N", "96")),
		"ext4-inline": read(mkfs(t, "ext4", src, "2M", "-b", "1024", "-N", "96", "-O", "inline_data,^has_journal")),
		"ext4-4k":     read(mkfs(t, "ext4", src, "2M", "-b", "4096", "-N", "96", "-O", "^metadata_csum,^64bit")),
		"ext2":        read(mkfs(t, "ext2", src, "2M", "-b", "1024", "-N", "96")),
	}
	// A journal that needs recovery: one transaction of a block of the
	// root directory with an entry renamed.
	j := mkfs(t, "ext4", src, "2M", "-b", "1024", "-N", "96")
	b := read(j)
	fsys, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	root, _, _ := fsys.lookup("/")
	c, _ := fsys.openContent(root)
	r, _ := c.mapper.mapBlock(0)
	blk := bytes.Clone(b[r.phys*1024 : (r.phys+1)*1024])
	i := bytes.Index(blk, []byte("hundred"))
	if i < 0 {
		t.Fatal("no entry hundred in the root directory")
	}
	copy(blk[i:], "HUNDRED")
	binary.LittleEndian.PutUint32(blk[1024-4:], crc32c(root.csumSeed, blk[:1024-dirTailSize]))
	p := filepath.Join(t.TempDir(), "block")
	os.WriteFile(p, blk, 0o644)
	debugfs(t.(*testing.T), j, "jo -c -v 3", fmt.Sprintf("jw -b %d %s", r.phys, p), "jc")
	out["ext4-journal"] = read(j)
	for name, img := range out {
		if len(img) != fuzzImageSize {
			t.Fatalf("%s: %d bytes", name, len(img))
		}
	}
	return out
}

// FuzzExt4 opens arbitrary images (in fsimagetest's sparse form, over 2
// MiB) with and without checksum checks, and reads all of each: nothing may
// panic or hang, errors must be this package's kinds, and what is returned
// must be consistent (names valid and sorted, reads within bounds).
func FuzzExt4(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		img := fsimagetest.DecodeSparse(data, fuzzImageSize)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for _, verify := range []bool{false, true} {
				fsys, err := open(bytes.NewReader(img), fuzzImageSize, verify)
				if err != nil {
					checkErr(t, err)
					continue
				}
				fuzzWalk(t, fsys)
			}
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("reading the image took more than 20s")
		}
	})
}

func checkErr(t *testing.T, err error) {
	t.Helper()
	switch core.KindOf(err) {
	case core.KindCorrupt, core.KindInvalid, core.KindNotFound:
	default:
		t.Fatalf("error of kind %v: %v", core.KindOf(err), err)
	}
}

// fuzzWalk reads the whole tree, bounded: 1000 entries, 16 levels, the
// first 256 KiB and the last bytes of each file.
func fuzzWalk(t *testing.T, fsys *FS) {
	entries := 0
	buf := make([]byte, 64<<10)
	var walk func(p string, depth int)
	walk = func(p string, depth int) {
		if depth > 16 {
			return
		}
		list, err := fsys.ReadDir(p)
		if err != nil {
			checkErr(t, err)
			return
		}
		if !sort.SliceIsSorted(list, func(i, j int) bool { return list[i].Name < list[j].Name }) {
			t.Fatalf("ReadDir(%q) is not sorted", p)
		}
		for _, e := range list {
			if entries++; entries > 1000 {
				return
			}
			if !fsimage.ValidName(e.Name) {
				t.Fatalf("ReadDir(%q) returned the name %q", p, e.Name)
			}
			child := path.Join(p, e.Name)
			if fi, err := fsys.Lstat(child); err != nil {
				checkErr(t, err)
			} else if fi != e {
				t.Fatalf("Lstat(%q) = %+v, ReadDir said %+v", child, fi, e)
			}
			switch e.Mode.Type() {
			case fs.ModeDir:
				walk(child, depth+1)
			case fs.ModeSymlink:
				if _, err := fsys.Readlink(child); err != nil {
					checkErr(t, err)
				}
				if _, err := fsimage.Resolve(fsys, child, true); err != nil {
					checkErr(t, err)
				}
			case 0:
				fuzzRead(t, fsys, child, buf)
			}
		}
	}
	walk("/", 0)
}

func fuzzRead(t *testing.T, fsys *FS, p string, buf []byte) {
	f, err := fsys.Open(p)
	if err != nil {
		checkErr(t, err)
		return
	}
	size := f.Size()
	offs := []int64{0, 64 << 10, 128 << 10, 192 << 10, size - 100, size / 2}
	for _, off := range offs {
		if off < 0 {
			continue
		}
		n, err := f.ReadAt(buf, off)
		if n < 0 || n > len(buf) || (n < len(buf) && err == nil) || (off >= size && n != 0) {
			t.Fatalf("%s: ReadAt(%d) = %d, %v (size %d)", p, off, n, err, size)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			checkErr(t, err)
			return
		}
	}
	sf := f.(fsimage.SparseFile)
	off := int64(0)
	for range 16 {
		start, end, err := sf.NextData(off)
		if err != nil {
			checkErr(t, err)
			return
		}
		if start < off || end < start || end > size {
			t.Fatalf("%s: NextData(%d) = %d, %d (size %d)", p, off, start, end, size)
		}
		if start == end {
			break
		}
		off = end
	}
}

// The committed seeds hold real images that read without errors; with
// -ext4.write-seeds they are rewritten from fresh mkfs images.
func TestFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzExt4")
	if *writeSeeds {
		for name, img := range seedImages(t) {
			if err := fsimagetest.WriteCorpusFile(dir, "seed-"+name, fsimagetest.EncodeSparse(img)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range []string{"ext4-1k", "ext4-inline", "ext4-4k", "ext2", "ext4-journal"} {
		data, err := fsimagetest.ReadCorpusFile(filepath.Join(dir, "seed-"+name))
		if err != nil {
			t.Fatalf("%v (go test -run TestFuzzSeedCorpus -args -ext4.write-seeds makes the seeds)", err)
		}
		img := fsimagetest.DecodeSparse(data, fuzzImageSize)
		fsys, err := Open(bytes.NewReader(img), fuzzImageSize)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := walkAll(fsys); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		want := "hundred"
		if name == "ext4-journal" {
			want = "HUNDRED" // renamed by the transaction in the journal
		}
		if _, err := fsys.Lstat("/" + want); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
