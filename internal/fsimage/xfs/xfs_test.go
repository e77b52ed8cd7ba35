package xfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
)

// configs are the file systems every test tree is built on: what mkfs.xfs
// 6.1 makes by default, and the variants that change the on-disk format.
var configs = []config{
	{
		name: "v5-4k", imageSize: "300M", v5: true, bigtime: true, blockSize: 4096,
		dirSizes: []int{50, 300, 1000, 20000}, fragExtents: 300, fragNodes: true, longSymlink: 1000, bigFileBytes: 1<<20 + 7,
		forms: map[string]string{"/d5": "shortform", "/d50": "block", "/d300": "leaf", "/d1000": "node", "/d20000": "node"},
	},
	{
		// Directory blocks of 8 file system blocks.
		name: "v5-1k-dirblk8k", mkfs: []string{"-b", "size=1024", "-n", "size=8192"}, imageSize: "300M",
		v5: true, bigtime: true, blockSize: 1024,
		dirSizes: []int{50, 1000, 3000}, fragExtents: 300, longSymlink: 900, bigFileBytes: 300001,
		forms: map[string]string{"/d5": "shortform", "/d50": "block", "/d1000": "leaf", "/d3000": "node"},
	},
	{
		name: "v5-nrext64-i1024", mkfs: []string{"-i", "size=1024,nrext64=1"}, imageSize: "300M",
		v5: true, bigtime: true, nrext64: true, blockSize: 4096,
		dirSizes: []int{50, 100, 300}, fragExtents: 200, fragNodes: true, longSymlink: 1000, bigFileBytes: 50000,
		forms: map[string]string{"/d5": "shortform", "/d50": "shortform", "/d100": "block", "/d300": "leaf"},
	},
	{
		name: "v4-ftype0-i256", mkfs: []string{"-m", "crc=0", "-n", "ftype=0", "-i", "size=256"}, imageSize: "300M",
		blockSize: 4096,
		dirSizes:  []int{50, 300, 3000}, fragExtents: 200, fragNodes: true, longSymlink: 1000, bigFileBytes: 200000,
		forms: map[string]string{"/d5": "shortform", "/d50": "block", "/d300": "leaf", "/d3000": "node"},
	},
	{
		// 512-byte blocks, 4 KiB directory blocks, ftype on a version 4.
		name: "v4-512b", mkfs: []string{"-m", "crc=0", "-b", "size=512"}, imageSize: "300M",
		blockSize: 512,
		dirSizes:  []int{50, 300, 1000}, fragExtents: 100, longSymlink: 700, bigFileBytes: 70000,
		forms: map[string]string{"/d5": "shortform", "/d50": "block", "/d300": "leaf", "/d1000": "node"},
	},
	{
		// Five AGs of 800 GiB: directories in AG 2 and up have inode
		// numbers above 2^32 (8-byte numbers in shortform directories).
		name: "v5-4t-ino64", mkfs: []string{"-d", "agcount=5", "-l", "size=64m"}, imageSize: "4T",
		v5: true, bigtime: true, blockSize: 4096,
		fragExtents: 30, longSymlink: 400, highInodes: true, bigFileBytes: 10000,
		forms: map[string]string{"/x3": "shortform", "/x3/sub": "block"},
	},
}

func TestImages(t *testing.T) {
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			b := buildImage(t, cfg)
			checkForms(t, b)
			checkFeatures(t, b)
			fsys := openBuilt(t, b)
			verifyTree(t, b, fsys)
			verifyInodeNumbers(t, b, fsys)
			verifyErrors(t, fsys)
		})
	}
}

// checkForms asks xfs_db which form each directory has, so that the test
// knows it covers shortform, block, leaf and node directories.
func checkForms(t *testing.T, b *built) {
	for dir, want := range b.cfg.forms {
		if got := dbDirForm(t, b.img, dir, b.cfg.blockSize); got != want {
			t.Errorf("%s is a %s directory, the test wants %s", dir, got, want)
		}
	}
}

// checkFeatures asks xfs_db whether the image has the inode features the
// configuration is there to cover.
func checkFeatures(t *testing.T, b *built) {
	if b.cfg.nrext64 {
		out := xfsDB(t, b.img, false, "path /frag", "print v3.nrext64 core.format")
		if !strings.Contains(out, "v3.nrext64 = 1") || !strings.Contains(out, "(btree)") {
			t.Errorf("/frag is not a B+tree inode with large extent counters:\n%s", out)
		}
	}
	if b.cfg.highInodes {
		out := xfsDB(t, b.img, false, "path /x3", "print u3.sfdir3.hdr.i8count")
		if !strings.Contains(out, "i8count = 2") {
			t.Errorf("/x3 does not hold 8-byte inode numbers:\n%s", out)
		}
	}
	if b.cfg.bigtime {
		out := xfsDB(t, b.img, false, "path /small", "print v3.bigtime")
		if !strings.Contains(out, "v3.bigtime = 1") {
			t.Errorf("/small has no bigtime timestamps:\n%s", out)
		}
	}
}

func openBuilt(t testing.TB, b *built) *FS {
	t.Helper()
	f, err := os.Open(b.img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if !Probe(f) {
		t.Fatal("Probe does not recognize the image")
	}
	fsys, err := Open(f, st.Size())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if fsys.Type() != "xfs" {
		t.Fatalf("Type() = %q", fsys.Type())
	}
	t.Logf("%s", fsys)
	return fsys
}

// makedev is glibc's encoding of a device number (st_rdev).

func TestMakedevMatchesHost(t *testing.T) {
	var st syscall.Stat_t
	if err := syscall.Lstat("/dev/null", &st); err != nil {
		t.Fatalf("no /dev/null to compare with: %v", err)
	}
	if got := fsimage.Mkdev(1, 3); got != st.Rdev {
		t.Fatalf("fsimage.Mkdev(1, 3) = %#x, the host's /dev/null has %#x", got, st.Rdev)
	}
}

func wantMode(n *node) fs.FileMode {
	m := fs.FileMode(n.perm & 0o777)
	switch n.typ {
	case 'd':
		m |= fs.ModeDir
	case 'l':
		m |= fs.ModeSymlink
	case 'c':
		m |= fs.ModeDevice | fs.ModeCharDevice
	case 'b':
		m |= fs.ModeDevice
	case 'p':
		m |= fs.ModeNamedPipe
	}
	if n.perm&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n.perm&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n.perm&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// checkInfo compares what the FS says about p with the tree.
func checkInfo(t *testing.T, b *built, p string, fi fsimage.FileInfo) {
	t.Helper()
	n := b.nodes[p]
	if src, ok := b.sameAs[p]; ok {
		n = b.nodes[src]
	}
	wantName := path.Base(p)
	if p == "/" {
		wantName = ""
	}
	if fi.Name != wantName {
		t.Errorf("%s: name %q, want %q", p, fi.Name, wantName)
	}
	if m := wantMode(n); fi.Mode != m {
		t.Errorf("%s: mode %v, want %v", p, fi.Mode, m)
	}
	if fi.UID != n.uid || fi.GID != n.gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", p, fi.UID, fi.GID, n.uid, n.gid)
	}
	if fi.Nlink != b.nlink[p] {
		t.Errorf("%s: %d links, want %d", p, fi.Nlink, b.nlink[p])
	}
	if when, ok := b.mtime[p]; ok {
		if !fi.ModTime.Equal(when) {
			t.Errorf("%s: mtime %v, want %v", p, fi.ModTime, when)
		}
	} else if fi.ModTime.Before(b.start) || fi.ModTime.After(b.end) {
		t.Errorf("%s: mtime %v, not within mkfs's run %v .. %v", p, fi.ModTime, b.start, b.end)
	}
	var wantSize int64 = -1
	switch {
	case p == "/sparse":
		wantSize = b.sparse.size
	case n.typ == '-':
		wantSize = int64(len(b.content[p]))
	case n.typ == 'l':
		wantSize = int64(len(n.target))
	case n.typ == 'c' || n.typ == 'b' || n.typ == 'p':
		wantSize = 0
	}
	if wantSize >= 0 && fi.Size != wantSize {
		t.Errorf("%s: size %d, want %d", p, fi.Size, wantSize)
	}
	var rdev uint64
	if n.typ == 'c' || n.typ == 'b' {
		rdev = fsimage.Mkdev(n.major, n.minor)
	}
	if fi.Rdev != rdev {
		t.Errorf("%s: rdev %#x, want %#x", p, fi.Rdev, rdev)
	}
}

func verifyTree(t *testing.T, b *built, fsys *FS) {
	paths := make([]string, 0, len(b.nodes))
	for p := range b.nodes {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		n := b.nodes[p]
		fi, err := fsys.Lstat(p)
		if err != nil {
			t.Errorf("Lstat(%q): %v", p, err)
			continue
		}
		checkInfo(t, b, p, fi)
		switch n.typ {
		case 'd':
			verifyDir(t, b, fsys, p)
		case 'l':
			got, err := fsys.Readlink(p)
			if err != nil || got != n.target {
				t.Errorf("Readlink(%q) = %q, %v; want %q", p, got, err, n.target)
			}
		case '-':
			if p == "/sparse" {
				verifySparse(t, b, fsys)
			} else {
				verifyContent(t, fsys, p, b.content[p])
			}
		}
	}
	// The hard link shares the inode.
	a, _ := fsys.Lstat("/small")
	c, _ := fsys.Lstat("/d5/e")
	if a.Inode != c.Inode || a.Inode == 0 {
		t.Errorf("hard link: /small is inode %d, /d5/e inode %d", a.Inode, c.Inode)
	}
	verifyContent(t, fsys, "/d5/e", b.content["/small"])
}

func verifyDir(t *testing.T, b *built, fsys *FS, p string) {
	t.Helper()
	ents, err := fsys.ReadDir(p)
	if err != nil {
		t.Errorf("ReadDir(%q): %v", p, err)
		return
	}
	want := slices.Clone(b.children[p])
	sort.Strings(want)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name)
	}
	if !slices.Equal(got, want) {
		t.Errorf("ReadDir(%q): %d names, want %d; first difference near %v", p, len(got), len(want), firstDiff(got, want))
		return
	}
	for _, e := range ents {
		checkInfo(t, b, path.Join(p, e.Name), e)
	}
}

func firstDiff(a, b []string) []string {
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			return []string{a[i], b[i]}
		}
	}
	return nil
}

// verifyContent reads the file whole, then in odd-sized pieces, and checks
// the end-of-file behaviour.
func verifyContent(t *testing.T, fsys *FS, p string, want []byte) {
	t.Helper()
	f, err := fsys.Open(p)
	if err != nil {
		t.Errorf("Open(%q): %v", p, err)
		return
	}
	if f.Size() != int64(len(want)) {
		t.Errorf("%s: Size() = %d, want %d", p, f.Size(), len(want))
		return
	}
	got, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s: contents differ (read %d bytes, err %v)", p, len(got), err)
		return
	}
	buf := make([]byte, 777)
	for off := int64(0); off < int64(len(want)); off += 4093 {
		n, err := f.ReadAt(buf, off)
		end := min(off+int64(len(buf)), int64(len(want)))
		if n != int(end-off) || !bytes.Equal(buf[:n], want[off:end]) {
			t.Errorf("%s: ReadAt(%d) = %d bytes, want %d", p, off, n, end-off)
			return
		}
		if (end == int64(len(want))) != (err == io.EOF) {
			t.Errorf("%s: ReadAt(%d) error %v", p, off, err)
			return
		}
	}
	if n, err := f.ReadAt(buf, int64(len(want))); n != 0 || err != io.EOF {
		t.Errorf("%s: ReadAt at end = %d, %v; want 0, EOF", p, n, err)
	}
	if _, err := f.ReadAt(buf, -1); err == nil {
		t.Errorf("%s: ReadAt(-1) succeeded", p)
	}
}

// verifySparse checks windows of /sparse: it is over 5 GiB of holes.
func verifySparse(t *testing.T, b *built, fsys *FS) {
	sf := b.sparse
	f, err := fsys.Open("/sparse")
	if err != nil {
		t.Errorf("Open(/sparse): %v", err)
		return
	}
	if f.Size() != sf.size {
		t.Errorf("/sparse: Size() = %d, want %d", f.Size(), sf.size)
	}
	expect := func(off int64, n int) []byte {
		w := make([]byte, n)
		for i := range w {
			o := off + int64(i)
			if o >= sf.dataOff && o < sf.dataOff+int64(len(sf.data)) {
				w[i] = sf.data[o-sf.dataOff]
			}
		}
		return w
	}
	dataEnd := sf.dataOff + int64(len(sf.data))
	for _, win := range [][2]int64{
		{0, 1 << 16}, {1 << 32, 10000}, {sf.dataOff - 5000, 20000}, {sf.dataOff, int64(len(sf.data))},
		{dataEnd - 1, 2}, {sf.size - 7000, 7000},
	} {
		win[1] = min(win[1], sf.size-win[0])
		buf := make([]byte, win[1])
		n, err := f.ReadAt(buf, win[0])
		if n != len(buf) || (err != nil && !(err == io.EOF && win[0]+win[1] == sf.size)) {
			t.Errorf("/sparse: ReadAt(%d, %d) = %d, %v", win[0], win[1], n, err)
			continue
		}
		if !bytes.Equal(buf, expect(win[0], len(buf))) {
			t.Errorf("/sparse: bytes %d+%d differ", win[0], win[1])
		}
	}
	buf := make([]byte, 100)
	if n, err := f.ReadAt(buf, sf.size-40); n != 40 || err != io.EOF {
		t.Errorf("/sparse: ReadAt across the end = %d, %v; want 40, EOF", n, err)
	}
}

// verifyInodeNumbers compares every directory's inode numbers with
// xfs_db's ls.
func verifyInodeNumbers(t *testing.T, b *built, fsys *FS) {
	var dirs []string
	for p, n := range b.nodes {
		if n.typ == 'd' {
			dirs = append(dirs, p)
		}
	}
	sort.Strings(dirs)
	listing := dbListing(t, b.img, dirs)
	for _, d := range dirs {
		ents, err := fsys.ReadDir(d)
		if err != nil {
			t.Errorf("ReadDir(%q): %v", d, err)
			continue
		}
		db := listing[d]
		if len(db) != len(ents) {
			t.Errorf("%s: %d entries, xfs_db lists %d", d, len(ents), len(db))
		}
		for _, e := range ents {
			if db[e.Name] != e.Inode {
				t.Errorf("%s/%s: inode %d, xfs_db says %d", d, e.Name, e.Inode, db[e.Name])
			}
		}
	}
}

func verifyErrors(t *testing.T, fsys *FS) {
	if _, err := fsys.Lstat("/missing"); !errors.Is(err, fs.ErrNotExist) || !core.IsNotFound(err) {
		t.Errorf("Lstat(/missing): %v, want a not-found error", err)
	}
	if _, err := fsys.Lstat("/d5/missing/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lstat(/d5/missing/x): %v, want a not-found error", err)
	}
	if _, err := fsys.Lstat("/links/short/x"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lstat through a symlink: %v, want a not-a-directory error", err)
	}
	if _, err := fsys.Lstat("/small/x"); err == nil {
		t.Error("Lstat(/small/x) succeeded")
	}
	if _, err := fsys.Lstat("small"); err == nil {
		t.Error("Lstat of a relative path succeeded")
	}
	if _, err := fsys.Open("/d5"); err == nil {
		t.Error("Open of a directory succeeded")
	}
	if _, err := fsys.Open("/links/short"); err == nil {
		t.Error("Open of a symlink succeeded (symlinks are not followed)")
	}
	if _, err := fsys.ReadDir("/small"); err == nil {
		t.Error("ReadDir of a file succeeded")
	}
	if _, err := fsys.Readlink("/small"); err == nil {
		t.Error("Readlink of a file succeeded")
	}
	fi, err := fsys.Lstat("/d5/../deep/./a/")
	if err != nil || fi.Name != "a" || !fi.Mode.IsDir() {
		t.Errorf("Lstat(/d5/../deep/./a/) = %+v, %v", fi, err)
	}
	root, err := fsys.Lstat("/")
	if err != nil || root.Name != "" || !root.Mode.IsDir() {
		t.Errorf("Lstat(/) = %+v, %v", root, err)
	}
}

// TestConcurrentReads walks one FS from several goroutines (run with -race
// to check the caches' locking).
func TestConcurrentReads(t *testing.T) {
	fsys, err := openSparse(loadFixture(t, "v5.xfsz"), true)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan []error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			_, errs := walkTree(fsys, 1<<20)
			errc <- errs
		}()
	}
	for i := 0; i < 4; i++ {
		if errs := <-errc; len(errs) > 0 {
			t.Error(errs)
		}
	}
}

func TestProbe(t *testing.T) {
	if Probe(bytes.NewReader(make([]byte, 4096))) {
		t.Error("Probe accepts zeros")
	}
	if Probe(bytes.NewReader([]byte("XF"))) {
		t.Error("Probe accepts two bytes")
	}
	if !Probe(loadFixture(t, "v4.xfsz")) {
		t.Error("Probe rejects an XFS image")
	}
	if _, err := Open(bytes.NewReader(make([]byte, 1<<20)), 1<<20); core.KindOf(err) != core.KindInvalid {
		t.Errorf("Open of zeros: %v, want an invalid-kind error", err)
	}
}
