//go:build linux

package fsimagetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/fsimage"
)

// Paths of notable entries of the tree MakeTree builds.
const (
	SparsePath     = "/sparse"      // 24 MiB, data at 0, 8 MiB and at the end: holes between
	SparseTailPath = "/sparse-tail" // 8 MiB, data only in its second MiB: ends with a hole
	SparseFarPath  = "/sparse-far"  // 66 MiB + 4 KiB, data at 66 MiB: triple indirect with 1 KiB blocks
	FragmentedPath = "/frag"        // 600 runs of 1 KiB 8 KiB apart: an extent tree of depth >= 1
	BigDirPath     = "/bigdir"      // 600 entries: an htree directory once e2fsck -D indexed it
	HardLinkA      = "/small"       // two names of one inode
	HardLinkB      = "/sub/hardlink-to-small"
)

// LongName is a name of 255 bytes (the ext4 and XFS maximum) in UTF-8.
var LongName = strings.Repeat("é", 126) + "abc"

// MakeTree fills dir (existing and empty) with the standard source tree:
// regular files (empty, small, of a few hundred bytes, multi-block, sparse
// with holes, one ending with a hole, a heavily fragmented one), directories
// (nested, one with hundreds of entries, small ones), symbolic links (short,
// long, absolute, to a directory, dangling), hard links, a fifo, a socket,
// unusual names (spaces, UTF-8, 255 bytes, a newline, a leading dash),
// unusual modes (setuid, setgid, sticky) and distinct modification times.
// As root it also sets owners and creates two device files.
func MakeTree(t testing.TB, dir string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	write := func(name string, data []byte, perm os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil { // past the umask, with setuid...
			t.Fatal(err)
		}
	}
	writeAt := func(name string, size int64, chunks map[int64][]byte) {
		t.Helper()
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for off, b := range chunks {
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(name string, perm os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
	}
	symlink := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	write("empty", nil, 0o644)
	write("small", []byte("hello, world\n"), 0o640)
	write("hundred", bytes.Repeat([]byte("0123456789"), 10), 0o644)     // inline_data: i_block + system.data
	write("two-hundred", bytes.Repeat([]byte("abcdefghij"), 20), 0o644) // too big to be inline
	write("multi", random(300*1024+17), 0o600)
	write("exec", []byte("#!/bin/sh\necho hi\n"), 0o755)
	write("setuid", []byte("s"), 0o4755)
	writeAt("sparse", 24<<20, map[int64][]byte{0: random(5000), 8 << 20: random(70000), 24<<20 - 3: []byte("end")})
	writeAt("sparse-tail", 8<<20, map[int64][]byte{1 << 20: random(1 << 20)})
	writeAt("sparse-far", 66<<20+4096, map[int64][]byte{66 << 20: []byte("far")})
	frag := map[int64][]byte{}
	for i := range 600 {
		frag[int64(i)*8192] = bytes.Repeat([]byte{byte(i%250 + 1)}, 1024)
	}
	writeAt("frag", 600*8192-7168, frag)

	mkdir("bigdir", 0o755)
	for i := range 600 {
		write(fmt.Sprintf("bigdir/entry-%04d-%s", i, strings.Repeat("n", i%40)), []byte{byte(i)}, 0o644)
	}
	mkdir("a/b/c/d", 0o755)
	write("a/b/c/d/deep", []byte("deep\n"), 0o644)
	mkdir("tiny", 0o700)                   // empty: inline with inline_data
	for _, n := range []string{"x", "y"} { // a few entries: still inline
		write("few/"+n, []byte(n), 0o644)
	}
	for i := range 5 { // spills from i_block into system.data
		write(fmt.Sprintf("several/file%d", i), []byte{byte('0' + i)}, 0o644)
	}
	write("readonly/inside", []byte("in a read-only directory\n"), 0o444)
	mkdir("readonly", 0o555)
	mkdir("sticky", 0o1777)
	mkdir("setgid", 0o2755)
	mkdir("sub", 0o755)

	symlink("small", "fastlink")
	symlink(strings.Repeat("long/", 20)+"target", "slowlink") // 106 bytes: not in i_block
	symlink("/etc/passwd", "abslink")
	symlink("sub", "dirlink")
	symlink("does-not-exist", "dangling")
	if err := os.Link(filepath.Join(dir, "small"), filepath.Join(dir, "sub/hardlink-to-small")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o620); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "socket")
	if l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"}); err == nil {
		l.SetUnlinkOnClose(false)
		l.Close()
	} else {
		t.Fatalf("making a socket in the source tree: %v", err)
	}
	write("with space", []byte("space\n"), 0o644)
	write("ünïcødé-名前", []byte("utf8\n"), 0o644)
	write(LongName, []byte("long name\n"), 0o644)
	write("new\nline", []byte("newline\n"), 0o644)
	write("-dash", []byte("dash\n"), 0o644)

	if os.Geteuid() == 0 {
		for name, id := range map[string][2]int{"small": {1234, 5678}, "sub": {42, 43}, "fastlink": {7, 8}, "multi": {65536 + 5, 70000}} {
			if err := os.Lchown(filepath.Join(dir, name), id[0], id[1]); err != nil {
				t.Fatal(err)
			}
		}
		if err := syscall.Mknod(filepath.Join(dir, "chardev"), syscall.S_IFCHR|0o640, int(fsimage.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mknod(filepath.Join(dir, "blockdev"), syscall.S_IFBLK|0o600, int(fsimage.Mkdev(259, 70000))); err != nil {
			t.Fatal(err)
		}
	}
	// Distinct times, children before their directories.
	var paths []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink == 0 && p != dir {
			paths = append(paths, p)
		}
		return err
	})
	slices.Reverse(paths)
	base := time.Date(2019, 3, 4, 5, 6, 7, 0, time.UTC)
	for i, p := range paths {
		mt := base.Add(time.Duration(i)*time.Hour + time.Duration(i)*time.Millisecond)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
}

// CompareOptions adjusts CompareTree to what mkfs does.
type CompareOptions struct {
	// IgnoreRoot names entries of the image's root that src lacks
	// (mkfs.ext4's "lost+found").
	IgnoreRoot []string
	// Skip lists paths ("/sparse-tail") whose contents and size are not
	// compared, for a known bug of the mkfs that made the image.
	Skip []string
}

// CompareTree checks that fsys holds exactly the tree at src: every entry
// with its type, permissions, size, owner, modification time (to the
// second; not the root's, which mkfs changes), link count, content, link
// target and device number; directory listings with the same names; hard
// links with one inode number and other files with distinct ones.
func CompareTree(t testing.TB, fsys fsimage.FS, src string, opts CompareOptions) {
	t.Helper()
	inodes := map[uint64]uint64{} // host inode -> image inode
	images := map[uint64]uint64{} // image inode -> host inode
	err := filepath.WalkDir(src, func(hostPath string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, hostPath)
		p := "/" + filepath.ToSlash(rel)
		if rel == "." {
			p = "/"
		}
		want, err := os.Lstat(hostPath)
		if err != nil {
			return err
		}
		got, err := fsys.Lstat(p)
		if err != nil {
			t.Errorf("Lstat(%q): %v", p, err)
			return nil
		}
		st := want.Sys().(*syscall.Stat_t)
		if slices.Contains(opts.Skip, p) {
			return nil
		}
		compareInfo(t, p, want, st, got)
		if !want.IsDir() {
			if img, ok := inodes[st.Ino]; ok && img != got.Inode {
				t.Errorf("%s: inode %d, but another name of host inode %d has inode %d", p, got.Inode, st.Ino, img)
			}
			if host, ok := images[got.Inode]; ok && host != st.Ino {
				t.Errorf("%s: inode %d is shared with a different host file", p, got.Inode)
			}
			inodes[st.Ino] = got.Inode
			images[got.Inode] = st.Ino
		}
		switch want.Mode().Type() {
		case 0:
			compareContent(t, fsys, p, hostPath)
		case fs.ModeSymlink:
			wt, _ := os.Readlink(hostPath)
			if gt, err := fsys.Readlink(p); err != nil || gt != wt {
				t.Errorf("Readlink(%q) = %q, %v; want %q", p, gt, err, wt)
			}
		case fs.ModeDir:
			compareListing(t, fsys, p, hostPath, opts.IgnoreRoot)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func compareInfo(t testing.TB, p string, want fs.FileInfo, st *syscall.Stat_t, got fsimage.FileInfo) {
	t.Helper()
	if got.Mode != want.Mode() {
		t.Errorf("%s: mode %v, want %v", p, got.Mode, want.Mode())
	}
	if want.Mode().IsRegular() || want.Mode().Type() == fs.ModeSymlink {
		if got.Size != want.Size() {
			t.Errorf("%s: size %d, want %d", p, got.Size, want.Size())
		}
	}
	if got.UID != st.Uid || got.GID != st.Gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", p, got.UID, got.GID, st.Uid, st.Gid)
	}
	if p != "/" && got.ModTime.Unix() != want.ModTime().Unix() {
		t.Errorf("%s: mtime %v, want %v", p, got.ModTime, want.ModTime())
	}
	if !want.IsDir() && got.Nlink != uint32(st.Nlink) {
		t.Errorf("%s: %d links, want %d", p, got.Nlink, st.Nlink)
	}
	if want.Mode()&fs.ModeDevice != 0 && got.Rdev != st.Rdev {
		t.Errorf("%s: rdev 0x%x, want 0x%x", p, got.Rdev, st.Rdev)
	}
	if want := filepath.Base(p); p != "/" && got.Name != want {
		t.Errorf("%s: name %q, want %q", p, got.Name, want)
	}
}

func compareContent(t testing.TB, fsys fsimage.FS, p, hostPath string) {
	t.Helper()
	host, err := os.Open(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	hi, err := host.Stat()
	if err != nil {
		t.Fatal(err)
	}
	size := hi.Size()
	f, err := fsys.Open(p)
	if err != nil {
		t.Errorf("Open(%q): %v", p, err)
		return
	}
	if f.Size() != size {
		t.Errorf("%s: File.Size %d, want %d", p, f.Size(), size)
		return
	}
	bufSize := min(max(size, 64), 1<<20)
	want := make([]byte, bufSize)
	got := make([]byte, bufSize)
	for off := int64(0); off < size; off += int64(len(want)) {
		n := int(min(int64(len(want)), size-off))
		if _, err := host.ReadAt(want[:n], off); err != nil {
			t.Fatal(err)
		}
		m, err := f.ReadAt(got[:n], off)
		if m != n || (err != nil && !(errors.Is(err, io.EOF) && off+int64(n) == size)) {
			t.Errorf("%s: ReadAt(%d bytes at %d) = %d, %v", p, n, off, m, err)
			return
		}
		if !bytes.Equal(got[:n], want[:n]) {
			i := 0
			for got[i] == want[i] {
				i++
			}
			t.Errorf("%s: content differs from byte %d on", p, off+int64(i))
			return
		}
	}
	// Odd-sized reads at odd offsets, and past the end.
	if size > 20 {
		off := size/2 + 3
		if n, err := f.ReadAt(got[:7], off); n != 7 || err != nil {
			t.Errorf("%s: ReadAt(7 bytes at %d) = %d, %v", p, off, n, err)
		} else if host.ReadAt(want[:7], off); !bytes.Equal(got[:7], want[:7]) {
			t.Errorf("%s: ReadAt(7 bytes at %d) differs", p, off)
		}
	}
	if n, err := f.ReadAt(got[:4], size); n != 0 || err != io.EOF {
		t.Errorf("%s: ReadAt at end = %d, %v; want 0, EOF", p, n, err)
	}
	if size > 0 {
		if n, err := f.ReadAt(got[:4], size-1); n != 1 || err != io.EOF {
			t.Errorf("%s: ReadAt across the end = %d, %v; want 1, EOF", p, n, err)
		}
	}
	if sf, ok := f.(fsimage.SparseFile); ok {
		checkSparse(t, p, sf, host, size)
	}
}

// checkSparse checks that NextData never skips non-zero bytes of host.
func checkSparse(t testing.TB, p string, f fsimage.SparseFile, host *os.File, size int64) {
	t.Helper()
	buf := make([]byte, min(max(size, 64), 1<<20))
	for off := int64(0); off < size; {
		start, end, err := f.NextData(off)
		if err != nil {
			t.Errorf("%s: NextData(%d): %v", p, off, err)
			return
		}
		if start < off || end < start || end > size || (start == end && start != size) {
			t.Errorf("%s: NextData(%d) = [%d, %d) (size %d)", p, off, start, end, size)
			return
		}
		for o := off; o < start; o += int64(len(buf)) {
			n := int(min(int64(len(buf)), start-o))
			if _, err := host.ReadAt(buf[:n], o); err != nil {
				t.Fatal(err)
			}
			if i := nonZero(buf[:n]); i >= 0 {
				t.Errorf("%s: NextData(%d) = [%d, %d) skips data at %d", p, off, start, end, o+int64(i))
				return
			}
		}
		if start == end {
			break
		}
		off = end
	}
}

var zeros [4096]byte

// nonZero returns the index of the first non-zero byte of b, or -1.
func nonZero(b []byte) int {
	for i := 0; i < len(b); i += len(zeros) {
		chunk := b[i:min(len(b), i+len(zeros))]
		if !bytes.Equal(chunk, zeros[:len(chunk)]) {
			return i + bytes.IndexFunc(chunk, func(r rune) bool { return r != 0 })
		}
	}
	return -1
}

// ReadAll reads a whole File with reads of 64 KiB.
func ReadAll(f fsimage.File) ([]byte, error) {
	out := make([]byte, 0, min(f.Size(), 64<<20))
	buf := make([]byte, 64<<10)
	for off := int64(0); ; {
		n, err := f.ReadAt(buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, fmt.Errorf("ReadAt returned 0 bytes and no error at %d", off)
		}
	}
}

func compareListing(t testing.TB, fsys fsimage.FS, p, hostPath string, ignoreRoot []string) {
	t.Helper()
	entries, err := os.ReadDir(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range entries {
		want = append(want, e.Name())
	}
	got, err := fsys.ReadDir(p)
	if err != nil {
		t.Errorf("ReadDir(%q): %v", p, err)
		return
	}
	var names []string
	for _, fi := range got {
		if p == "/" && slices.Contains(ignoreRoot, fi.Name) {
			continue
		}
		names = append(names, fi.Name)
	}
	if !slices.Equal(names, want) {
		t.Errorf("ReadDir(%q): %d names %q...; want %d names %q...", p, len(names), head(names), len(want), head(want))
	}
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// CompareDirs checks that the host tree got equals want: the same entries
// with the same types, permissions, sizes, contents, link targets and
// modification times (to the second; symbolic links only when withLinkTimes);
// with owners as well when withOwners. Hard links in want must be hard links
// in got. Names in skip (relative, slash separated) are left out of both.
func CompareDirs(t testing.TB, want, got string, withOwners bool, skip ...string) {
	t.Helper()
	gotInodes := map[uint64]uint64{}
	bufs := [2][]byte{make([]byte, 256<<10), make([]byte, 256<<10)}
	filepath.WalkDir(want, func(wp string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(want, wp)
		if slices.Contains(skip, filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		gp := filepath.Join(got, rel)
		wi, err := os.Lstat(wp)
		if err != nil {
			t.Fatal(err)
		}
		gi, err := os.Lstat(gp)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		ws, gs := wi.Sys().(*syscall.Stat_t), gi.Sys().(*syscall.Stat_t)
		if wi.Mode() != gi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		if wi.Mode().Type() != fs.ModeSymlink && rel != "." && wi.ModTime().Unix() != gi.ModTime().Unix() {
			t.Errorf("%s: mtime %v, want %v", rel, gi.ModTime(), wi.ModTime())
		}
		if withOwners && (ws.Uid != gs.Uid || ws.Gid != gs.Gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, gs.Uid, gs.Gid, ws.Uid, ws.Gid)
		}
		switch wi.Mode().Type() {
		case 0:
			if !sameContent(wp, gp, bufs) {
				t.Errorf("%s: content differs", rel)
			}
			if ws.Nlink > 1 {
				if prev, ok := gotInodes[ws.Ino]; ok && prev != gs.Ino {
					t.Errorf("%s: not a hard link of its other name", rel)
				}
				gotInodes[ws.Ino] = gs.Ino
			}
		case fs.ModeSymlink:
			a, _ := os.Readlink(wp)
			b, _ := os.Readlink(gp)
			if a != b {
				t.Errorf("%s: link target %q, want %q", rel, b, a)
			}
		case fs.ModeDir:
			we, _ := os.ReadDir(wp)
			ge, _ := os.ReadDir(gp)
			var wn, gn []string
			for _, e := range we {
				if !slices.Contains(skip, filepath.ToSlash(filepath.Join(rel, e.Name()))) {
					wn = append(wn, e.Name())
				}
			}
			for _, e := range ge {
				if !slices.Contains(skip, filepath.ToSlash(filepath.Join(rel, e.Name()))) {
					gn = append(gn, e.Name())
				}
			}
			if !slices.Equal(wn, gn) {
				t.Errorf("%s: entries %q, want %q", rel, head(gn), head(wn))
			}
		default:
			if ws.Rdev != gs.Rdev {
				t.Errorf("%s: rdev 0x%x, want 0x%x", rel, gs.Rdev, ws.Rdev)
			}
		}
		return nil
	})
}

// CompareFS checks that got holds the same tree as want: the same entries
// with the same FileInfo (inode numbers included), link targets and
// contents.
func CompareFS(t testing.TB, want, got fsimage.FS) {
	t.Helper()
	var walk func(p string)
	walk = func(p string) {
		wi, werr := want.Lstat(p)
		gi, gerr := got.Lstat(p)
		if werr != nil || gerr != nil {
			t.Errorf("Lstat(%q): %v / %v", p, werr, gerr)
			return
		}
		if wi != gi {
			t.Errorf("%s: %+v, want %+v", p, gi, wi)
		}
		switch wi.Mode.Type() {
		case fs.ModeDir:
			we, werr := want.ReadDir(p)
			ge, gerr := got.ReadDir(p)
			if werr != nil || gerr != nil {
				t.Errorf("ReadDir(%q): %v / %v", p, werr, gerr)
				return
			}
			if len(we) != len(ge) {
				t.Errorf("ReadDir(%q): %d entries, want %d", p, len(ge), len(we))
			}
			for _, e := range we {
				walk(path.Join(p, e.Name))
			}
		case fs.ModeSymlink:
			wt, werr := want.Readlink(p)
			gt, gerr := got.Readlink(p)
			if werr != nil || gerr != nil || wt != gt {
				t.Errorf("Readlink(%q) = %q, %v; want %q, %v", p, gt, gerr, wt, werr)
			}
		case 0:
			wf, werr := want.Open(p)
			gf, gerr := got.Open(p)
			if werr != nil || gerr != nil {
				t.Errorf("Open(%q): %v / %v", p, werr, gerr)
				return
			}
			wb, werr := ReadAll(wf)
			gb, gerr := ReadAll(gf)
			if werr != nil || gerr != nil || !bytes.Equal(wb, gb) {
				t.Errorf("%s: contents differ (%v / %v)", p, werr, gerr)
			}
		}
	}
	walk("/")
}

// sameContent reports whether host files a and b hold the same bytes.
func sameContent(a, b string, bufs [2][]byte) bool {
	fa, err := os.Open(a)
	if err != nil {
		return false
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false
	}
	defer fb.Close()
	ba, bb := bufs[0], bufs[1]
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false
		}
		if ea != nil || eb != nil {
			return (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF)
		}
	}
}
