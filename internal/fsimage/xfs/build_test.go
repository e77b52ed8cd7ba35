package xfs

// Test images are made by the real tools: mkfs.xfs populates a sparse file
// from a protofile, and xfs_db is the independent reader that every
// hand-made change is checked against. mkfs.xfs 6.1 cannot make holes,
// fragmented files, hard links, chosen timestamps or the sticky bit, and it
// writes version 5 remote symlinks without their header (a bug the kernel
// rejects as corruption), so the tests make those by editing the image and
// then ask xfs_db whether it reads them as intended (its bmap walks our
// B+tree, its CRC checks pass, its ls lists our hard link).

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// node is one file of a test tree.
type node struct {
	path         string // absolute, slash-separated
	typ          byte   // '-' regular, 'd' directory, 'l' symlink, 'c', 'b' devices, 'p' FIFO
	perm         uint32 // permission bits with setuid (04000), setgid (02000), sticky (01000)
	uid, gid     uint32
	data         []byte // regular file contents as given to mkfs
	target       string // symlink target
	major, minor uint32
}

// config is one way of making a file system.
type config struct {
	name      string
	mkfs      []string // extra mkfs.xfs options
	imageSize string   // for truncate(1)-style sizes: "300M", "4T"
	v5        bool
	bigtime   bool
	nrext64   bool
	blockSize int

	dirSizes     []int // extra directories d<N> with N entries each
	fragExtents  int   // extents of /frag
	fragNodes    bool  // give /frag's B+tree an interior level
	longSymlink  int   // length of /links/long's target
	highInodes   bool  // directories in high AGs (8-byte inode numbers)
	bigFileBytes int
	forms        map[string]string // directory -> the form xfs_db must see
}

// built is a test image with what it should contain.
type built struct {
	cfg      config
	img      string
	nodes    map[string]*node
	children map[string][]string // directory -> child names in creation order
	content  map[string][]byte   // regular files as they should read (holes included), when not too large
	sparse   sparseFile          // /sparse's layout
	mtime    map[string]time.Time
	nlink    map[string]uint32
	sameAs   map[string]string // hard link -> the path it shares an inode with
	start    time.Time
	end      time.Time
}

type sparseFile struct {
	size    int64
	dataOff int64
	data    []byte
}

func requireTools(t testing.TB) {
	t.Helper()
	testenv.RequireTool(t, "mkfs.xfs", "xfs_db")
}

// scratchDir is a temporary directory for images, in /dev/shm when the
// machine has it: mkfs.xfs and xfs_db sync the image, which on a busy
// shared disk costs seconds each time, and nothing is synced in memory. A
// test image takes 65 to 130 MiB there (mostly its zeroed log) and is
// removed when the test ends.
func scratchDir(t testing.TB) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "cairn-xfs-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// pattern returns n bytes where every 8-byte word holds its own offset plus
// seed, so that a block read from the wrong place is noticed.
func pattern(n int, seed uint64) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], seed+uint64(i)|1<<63)
	}
	return b
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// makeTree lists the files of a configuration's tree, parents first.
func makeTree(t testing.TB, cfg config) []*node {
	bs := cfg.blockSize
	var ns []*node
	add := func(n *node) { ns = append(ns, n) }
	reg := func(p string, perm, uid, gid uint32, data []byte) {
		add(&node{path: p, typ: '-', perm: perm, uid: uid, gid: gid, data: data})
	}
	dir := func(p string, perm, uid, gid uint32) { add(&node{path: p, typ: 'd', perm: perm, uid: uid, gid: gid}) }

	reg("/empty", 0o644, 0, 0, nil)
	reg("/small", 0o640, 1000, 1001, []byte("hello, xfs\n"))
	reg("/multi", 0o644, 0, 0, randomBytes(t, 3*bs+123))
	reg("/big", 0o600, 4242, 4343, randomBytes(t, cfg.bigFileBytes))
	reg("/setuid", 0o4755, 0, 0, []byte("#!/bin/sh\necho hi\n"))
	reg("/setgid", 0o2750, 0, 5, []byte("x"))
	reg("/sparse", 0o644, 0, 0, pattern(2*bs, 0xabc))
	reg("/frag", 0o644, 0, 0, pattern(2*cfg.fragExtents*bs, 0x1234))
	dir("/d5", 0o755, 0, 0)
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		reg("/d5/"+n, 0o644, 0, 0, []byte("d5 "+n+"\n"))
	}
	for _, size := range cfg.dirSizes {
		d := fmt.Sprintf("/d%d", size)
		dir(d, 0o755, 0, 0)
		for i := 0; i < size; i++ {
			// Empty files keep mkfs fast; a few carry data.
			var data []byte
			if i%997 == 0 {
				data = []byte(fmt.Sprintf("entry %d of %s\n", i, d))
			}
			reg(fmt.Sprintf("%s/f%05d", d, i), 0o644, 0, 0, data)
		}
	}
	dir("/sticky", 0o777, 0, 0) // made 01777 by an edit: protofiles cannot set the sticky bit
	dir("/emptydir", 0o700, 7, 8)
	dir("/links", 0o755, 0, 0)
	add(&node{path: "/links/short", typ: 'l', perm: 0o777, target: "../small"})
	add(&node{path: "/links/dangling", typ: 'l', perm: 0o777, target: "/nonexistent/target"})
	long := strings.Repeat("0123456789abcdef/", 64)[:cfg.longSymlink]
	add(&node{path: "/links/long", typ: 'l', perm: 0o777, target: long})
	dir("/dev", 0o755, 0, 0)
	add(&node{path: "/dev/null", typ: 'c', perm: 0o666, major: 1, minor: 3})
	add(&node{path: "/dev/sda1", typ: 'b', perm: 0o660, gid: 6, major: 8, minor: 1})
	add(&node{path: "/dev/wide", typ: 'c', perm: 0o600, major: 300, minor: 70000})
	add(&node{path: "/dev/fifo", typ: 'p', perm: 0o644})
	dir("/names", 0o755, 0, 0)
	for _, name := range []string{"ünïcödé", "日本語", "a$b", "-dash", ".hidden", `back\slash`, "semi;colon",
		`q'uo"te`, "\xe9t\xe9", strings.Repeat("L", 255), "UPPER", "lower"} {
		reg("/names/"+name, 0o644, 0, 0, []byte(name))
	}
	dir("/deep", 0o755, 0, 0)
	p := "/deep"
	for _, c := range []string{"a", "b", "c", "d", "e", "f"} {
		p += "/" + c
		dir(p, 0o755, 0, 0)
	}
	reg(p+"/file", 0o644, 0, 0, []byte("deep\n"))
	if cfg.highInodes {
		for i := 1; i <= 4; i++ {
			d := fmt.Sprintf("/x%d", i)
			dir(d, 0o755, 0, 0)
			reg(d+"/a", 0o644, 0, 0, []byte(d))
			dir(d+"/sub", 0o755, 0, 0)
			for j := 0; j < 40; j++ { // a block directory in a high AG
				reg(fmt.Sprintf("%s/sub/n%02d", d, j), 0o644, 0, 0, nil)
			}
		}
	}
	return ns
}

// protoMode is a protofile mode token: type, setuid, setgid, octal.
func protoMode(n *node) string {
	u, g := "-", "-"
	if n.perm&0o4000 != 0 {
		u = "u"
	}
	if n.perm&0o2000 != 0 {
		g = "g"
	}
	return fmt.Sprintf("%c%s%s%03o", n.typ, u, g, n.perm&0o777)
}

// writeProto writes the protofile for ns, with regular files' contents in
// srcDir.
func writeProto(t testing.TB, ns []*node, srcDir string) string {
	children := map[string][]*node{}
	for _, n := range ns {
		children[path.Dir(n.path)] = append(children[path.Dir(n.path)], n)
	}
	var w strings.Builder
	w.WriteString("cairn-test\n0 0\nd--755 0 0\n")
	var emit func(dir string)
	sources := map[string]string{} // contents -> source file, so that equal files share one
	for i, n := range ns {
		if n.typ == '-' {
			src, ok := sources[string(n.data)]
			if !ok {
				src = filepath.Join(srcDir, strconv.Itoa(i))
				if err := os.WriteFile(src, n.data, 0o600); err != nil {
					t.Fatal(err)
				}
				sources[string(n.data)] = src
			}
			n.target = src // the protofile token; reset below
		}
	}
	emit = func(dir string) {
		for _, n := range children[dir] {
			name := path.Base(n.path)
			fmt.Fprintf(&w, "%s %s %d %d", name, protoMode(n), n.uid, n.gid)
			switch n.typ {
			case '-':
				fmt.Fprintf(&w, " %s\n", n.target)
			case 'l':
				fmt.Fprintf(&w, " %s\n", n.target)
			case 'c', 'b':
				fmt.Fprintf(&w, " %d %d\n", n.major, n.minor)
			case 'd':
				w.WriteString("\n")
				emit(n.path)
				w.WriteString("$\n")
			default:
				w.WriteString("\n")
			}
		}
	}
	emit("/")
	w.WriteString("$\n")
	for _, n := range ns {
		if n.typ == '-' {
			n.target = ""
		}
	}
	proto := filepath.Join(srcDir, "proto")
	if err := os.WriteFile(proto, []byte(w.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return proto
}

// xfsDB runs xfs_db on img with one -c per command and returns its output.
// Expert (-x) mode is used when write is true.
func xfsDB(t testing.TB, img string, write bool, cmds ...string) string {
	t.Helper()
	args := []string{"-r"}
	if write {
		args = []string{"-x"}
	}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	args = append(args, img)
	cmd := exec.Command("xfs_db", args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("xfs_db %q: %v\n%s", cmds, err, out)
	}
	return string(out)
}

var parenNumber = regexp.MustCompile(`\((\d+)\)`)

// dbNumber runs one xfs_db command that prints "0x... (N)" and returns N.
func dbNumber(t testing.TB, img, cmd string) uint64 {
	t.Helper()
	out := xfsDB(t, img, false, cmd)
	m := parenNumber.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("xfs_db %q: no number in %q", cmd, out)
	}
	v, _ := strconv.ParseUint(m[1], 10, 64)
	return v
}

// dbLocations converts file system block numbers to byte offsets and disk
// addresses with one xfs_db run.
func dbLocations(t testing.TB, img string, fsbs []uint64) (offs, daddrs []uint64) {
	t.Helper()
	var cmds []string
	for _, fsb := range fsbs {
		cmds = append(cmds, fmt.Sprintf("convert fsblock %d byte", fsb), fmt.Sprintf("convert fsblock %d daddr", fsb))
	}
	out := xfsDB(t, img, false, cmds...)
	ms := parenNumber.FindAllStringSubmatch(out, -1)
	if len(ms) != 2*len(fsbs) {
		t.Fatalf("xfs_db convert: %d numbers for %d blocks:\n%s", len(ms), len(fsbs), out)
	}
	for i := range fsbs {
		o, _ := strconv.ParseUint(ms[2*i][1], 10, 64)
		d, _ := strconv.ParseUint(ms[2*i+1][1], 10, 64)
		offs, daddrs = append(offs, o), append(daddrs, d)
	}
	return offs, daddrs
}

// dbInode returns the inode number of a path, as xfs_db resolves it.
func dbInode(t testing.TB, img, p string) uint64 {
	t.Helper()
	out := strings.TrimSpace(xfsDB(t, img, false, "ls -i "+p))
	v, err := strconv.ParseUint(out, 10, 64)
	if err != nil {
		t.Fatalf("xfs_db ls -i %s: %q", p, out)
	}
	return v
}

type dbExtent struct{ off, fsb, count, flag uint64 }

var bmapLine = regexp.MustCompile(`data offset (\d+) startblock (\d+) \(\d+/\d+\) count (\d+) flag (\d)`)

// dbBmap returns the data fork mapping of a path as xfs_db reads it.
func dbBmap(t testing.TB, img, p string) []dbExtent {
	t.Helper()
	out := xfsDB(t, img, false, "path "+p, "bmap")
	if strings.Contains(out, "rror") {
		t.Fatalf("xfs_db bmap %s reports errors:\n%s", p, out)
	}
	var exts []dbExtent
	for _, m := range bmapLine.FindAllStringSubmatch(out, -1) {
		var e dbExtent
		e.off, _ = strconv.ParseUint(m[1], 10, 64)
		e.fsb, _ = strconv.ParseUint(m[2], 10, 64)
		e.count, _ = strconv.ParseUint(m[3], 10, 64)
		e.flag, _ = strconv.ParseUint(m[4], 10, 64)
		exts = append(exts, e)
	}
	return exts
}

// dbDirForm tells a directory's form from xfs_db: shortform in the inode,
// or by the magic of the block at the 32 GiB leaf offset (none for the
// block form).
func dbDirForm(t testing.TB, img, dir string, blockSize int) string {
	t.Helper()
	out := xfsDB(t, img, false, "path "+dir, "print core.format")
	if strings.Contains(out, "(local)") {
		return "shortform"
	}
	leaf := (32 << 30) / blockSize
	out = xfsDB(t, img, false, "path "+dir, fmt.Sprintf("dblock %d", leaf), "print")
	switch {
	case regexp.MustCompile(`lhdr\.info(\.hdr)?\.magic = 0x(3df1|d2f1)`).MatchString(out):
		return "leaf"
	case regexp.MustCompile(`nhdr\.info(\.hdr)?\.magic = 0x(3ebe|febe)`).MatchString(out):
		return "node"
	case strings.Contains(out, "core.magic"):
		return "block"
	}
	return "unknown"
}

// dbListing returns name -> inode number for the directories, as xfs_db ls
// reads them ("." and ".." left out).
func dbListing(t testing.TB, img string, dirs []string) map[string]map[string]uint64 {
	t.Helper()
	var cmds []string
	for _, d := range dirs {
		cmds = append(cmds, "echo @@"+d, "ls "+d)
	}
	out := xfsDB(t, img, false, cmds...)
	res := map[string]map[string]uint64{}
	var cur map[string]uint64
	for _, line := range strings.Split(out, "\n") {
		if d, ok := strings.CutPrefix(strings.TrimSpace(line), "@@"); ok {
			cur = map[string]uint64{}
			res[d] = cur
			continue
		}
		f := strings.Fields(line)
		if cur == nil || len(f) < 7 || f[len(f)-1] != "(good)" {
			continue
		}
		// dir offset, inode, type, hash, name length, name, (good)
		namelen, err := strconv.Atoi(f[4])
		if err != nil {
			continue
		}
		ino, _ := strconv.ParseUint(f[1], 10, 64)
		i := strings.Index(line, " "+f[4]+" ") + len(f[4]) + 2
		name := line[i : i+namelen]
		if name != "." && name != ".." {
			cur[name] = ino
		}
	}
	return res
}

// imageFile opens the image for raw edits.
type imageFile struct {
	t   testing.TB
	img string
	f   *os.File
}

func openImage(t testing.TB, img string) *imageFile {
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &imageFile{t: t, img: img, f: f}
}

func (im *imageFile) read(off int64, n int) []byte {
	b := make([]byte, n)
	if _, err := im.f.ReadAt(b, off); err != nil {
		im.t.Fatal(err)
	}
	return b
}

func (im *imageFile) write(off int64, b []byte) {
	if _, err := im.f.WriteAt(b, off); err != nil {
		im.t.Fatal(err)
	}
}

func (im *imageFile) close() {
	if err := im.f.Close(); err != nil {
		im.t.Fatal(err)
	}
}

// geometry is what the edits need to know, read with xfs_db.
type geometry struct {
	v5        bool
	blockSize int
	inodeSize int
	uuid      []byte
}

var uuidLine = regexp.MustCompile(`(?m)^(uuid|meta_uuid) = ([0-9a-f-]{36})`)

func readGeometry(t testing.TB, img string) geometry {
	t.Helper()
	out := xfsDB(t, img, false, "sb 0", "print blocksize inodesize versionnum features_incompat uuid meta_uuid")
	field := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + ` = (\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("xfs_db sb: no %s in %q", name, out)
		}
		return m[1]
	}
	var g geometry
	g.blockSize, _ = strconv.Atoi(field("blocksize"))
	g.inodeSize, _ = strconv.Atoi(field("inodesize"))
	vn, _ := strconv.ParseUint(field("versionnum"), 0, 16)
	g.v5 = vn&0xf == 5
	incompat, _ := strconv.ParseUint(field("features_incompat"), 0, 32)
	want := "uuid"
	if incompat&incompatMetaUUID != 0 {
		want = "meta_uuid"
	}
	for _, m := range uuidLine.FindAllStringSubmatch(out, -1) {
		if m[1] == want {
			g.uuid = parseUUID(t, m[2])
		}
	}
	return g
}

func parseUUID(t testing.TB, s string) []byte {
	var b []byte
	for _, part := range strings.Split(s, "-") {
		for i := 0; i+2 <= len(part); i += 2 {
			v, err := strconv.ParseUint(part[i:i+2], 16, 8)
			if err != nil {
				t.Fatalf("uuid %q", s)
			}
			b = append(b, byte(v))
		}
	}
	return b
}

// editInode applies edit to the raw inode ino and fixes its CRC.
func editInode(t testing.TB, img string, g geometry, ino uint64, edit func(b []byte)) {
	t.Helper()
	off := int64(dbNumber(t, img, fmt.Sprintf("convert ino %d byte", ino)))
	im := openImage(t, img)
	defer im.close()
	b := im.read(off, g.inodeSize)
	if binary.BigEndian.Uint16(b) != inodeMagic {
		t.Fatalf("inode %d at byte %d: no inode magic", ino, off)
	}
	edit(b)
	if g.v5 {
		binary.LittleEndian.PutUint32(b[inodeCRCOffset:], metadataCRC(b, inodeCRCOffset))
	}
	im.write(off, b)
}

// encodeTime encodes t as an inode timestamp.
func encodeTime(t time.Time, bigtime bool) uint64 {
	if bigtime {
		return uint64(t.Unix()+bigtimeEpochOff)*1e9 + uint64(t.Nanosecond())
	}
	return uint64(uint32(int32(t.Unix())))<<32 | uint64(t.Nanosecond())
}

// setMtime sets a path's modification time and checks that xfs_db reads it.
func setMtime(t testing.TB, img string, g geometry, p string, when time.Time, bigtime bool) {
	t.Helper()
	ino := dbInode(t, img, p)
	editInode(t, img, g, ino, func(b []byte) {
		binary.BigEndian.PutUint64(b[inodeOffMtime:], encodeTime(when, bigtime))
	})
	out := xfsDB(t, img, false, "inode "+strconv.FormatUint(ino, 10), "print core.mtime.sec core.mtime.nsec")
	want := fmt.Sprintf("core.mtime.sec = %s\ncore.mtime.nsec = %d\n", when.UTC().Format("Mon Jan _2 15:04:05 2006"), when.Nanosecond())
	if out != want {
		t.Fatalf("xfs_db reads %s's new mtime as\n%s, want\n%s", p, out, want)
	}
	if g.v5 {
		checkInodeCRC(t, img, ino)
	}
}

func checkInodeCRC(t testing.TB, img string, ino uint64) {
	t.Helper()
	out := xfsDB(t, img, false, "inode "+strconv.FormatUint(ino, 10), "print v3.crc")
	if !strings.Contains(out, "(correct)") {
		t.Fatalf("xfs_db: inode %d CRC after the edit: %s", ino, out)
	}
}

// makeHardLink points the shortform directory entry dir/name at the inode
// of target and gives that inode two links. The inode the entry had is
// left allocated and unreferenced, which no reader notices.
func makeHardLink(t testing.TB, img string, g geometry, dir, name, target string) {
	t.Helper()
	dino := dbInode(t, img, dir)
	tino := dbInode(t, img, target)
	// xfs_db names the fork u3 on version 3 inodes, and the shortform
	// directory sfdir3 when entries carry a file type.
	out := xfsDB(t, img, false, "inode "+strconv.FormatUint(dino, 10), "print")
	m := regexp.MustCompile(`(?m)^(u3?\.sfdir[23])\.hdr\.count`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s is not a shortform directory:\n%s", dir, out)
	}
	prefix := m[1]
	idx := -1
	for _, line := range strings.Split(out, "\n") {
		var i int
		var n string
		if _, err := fmt.Sscanf(line, prefix+".list[%d].name = %q", &i, &n); err == nil && n == name {
			idx = i
		}
	}
	if idx < 0 {
		t.Fatalf("no entry %q in %s:\n%s", name, dir, out)
	}
	xfsDB(t, img, true, "inode "+strconv.FormatUint(dino, 10),
		fmt.Sprintf("write %s.list[%d].inumber.i4 %d", prefix, idx, tino),
		"inode "+strconv.FormatUint(tino, 10), "write core.nlinkv2 2")
	if got := dbListing(t, img, []string{dir})[dir][name]; got != tino {
		t.Fatalf("xfs_db lists %s/%s as inode %d after the edit, want %d", dir, name, got, tino)
	}
}

// makeSticky adds the sticky bit to a directory.
func makeSticky(t testing.TB, img, dir string) {
	t.Helper()
	ino := dbInode(t, img, dir)
	xfsDB(t, img, true, "inode "+strconv.FormatUint(ino, 10), "write core.mode 041777")
}

// makeSparse moves /sparse's only extent to a far file offset and extends
// the size past it, leaving a hole before, a hole after and a partial last
// block.
func makeSparse(t testing.TB, img string, g geometry, p string, data []byte) sparseFile {
	t.Helper()
	exts := dbBmap(t, img, p)
	if len(exts) != 1 || exts[0].off != 0 || exts[0].count != uint64(len(data)/g.blockSize) {
		t.Fatalf("%s: unexpected mapping %+v", p, exts)
	}
	startoff := uint64(5<<30) / uint64(g.blockSize) // 5 GiB: offsets beyond 32 bits
	sf := sparseFile{dataOff: int64(startoff) * int64(g.blockSize), data: data}
	sf.size = sf.dataOff + int64(len(data)) + 3*int64(g.blockSize) + 123
	ino := dbInode(t, img, p)
	editInode(t, img, g, ino, func(b []byte) {
		core := inodeCoreV2
		if g.v5 {
			core = inodeCoreV3
		}
		rec := b[core:]
		l0 := binary.BigEndian.Uint64(rec)
		l0 = l0&^(maxFileOffBlocks<<9) | startoff<<9
		binary.BigEndian.PutUint64(rec, l0)
		binary.BigEndian.PutUint64(b[inodeOffSize:], uint64(sf.size))
	})
	got := dbBmap(t, img, p)
	if len(got) != 1 || got[0].off != startoff || got[0].fsb != exts[0].fsb || got[0].count != exts[0].count {
		t.Fatalf("xfs_db maps %s as %+v after the edit, want offset %d", p, got, startoff)
	}
	return sf
}

// fixRemoteSymlink gives a version 5 remote symlink block the header that
// mkfs.xfs 6.1 leaves out, and checks it with xfs_db.
func fixRemoteSymlink(t testing.TB, img string, g geometry, p, target string) {
	t.Helper()
	ino := dbInode(t, img, p)
	exts := dbBmap(t, img, p)
	if len(exts) != 1 || exts[0].count != 1 {
		t.Fatalf("%s: unexpected mapping %+v (the test expects one block)", p, exts)
	}
	if len(target)+symlinkHdrLen > g.blockSize {
		t.Fatalf("%s: a %d-byte target and its header do not fit one %d-byte block", p, len(target), g.blockSize)
	}
	off := int64(dbNumber(t, img, fmt.Sprintf("convert fsblock %d byte", exts[0].fsb)))
	daddr := dbNumber(t, img, fmt.Sprintf("convert fsblock %d daddr", exts[0].fsb))
	im := openImage(t, img)
	defer im.close()
	if raw := im.read(off, len(target)); string(raw) != target {
		t.Fatalf("%s: the block does not hold the raw target", p)
	}
	b := make([]byte, g.blockSize)
	be := binary.BigEndian
	be.PutUint32(b, symlinkMagic)
	be.PutUint32(b[symlinkOffOffset:], 0)
	be.PutUint32(b[symlinkOffBytes:], uint32(len(target)))
	copy(b[symlinkOffUUID:], g.uuid)
	be.PutUint64(b[symlinkOffOwner:], ino)
	be.PutUint64(b[symlinkOffBlkno:], daddr)
	copy(b[symlinkHdrLen:], target)
	binary.LittleEndian.PutUint32(b[symlinkCRCOffset:], metadataCRC(b, symlinkCRCOffset))
	im.write(off, b)
	out := xfsDB(t, img, false, "path "+p, "dblock 0", "print magic offset bytes crc owner bno")
	if !strings.Contains(out, "crc = ") || !strings.Contains(out, "(correct)") || strings.Contains(out, "rror") {
		t.Fatalf("xfs_db does not accept the symlink header:\n%s", out)
	}
}

// makeFragmented turns /frag, one contiguous extent of 2*n blocks, into n
// one-block extents at even file blocks (odd blocks become holes, every
// seventh extent unwritten) held in a bmap B+tree whose blocks are taken
// from the odd blocks. With nodes, the leaves are made small enough that
// the tree needs an interior level. It returns the file's contents as they
// should read, after checking that xfs_db walks the tree to the same
// mapping.
func makeFragmented(t testing.TB, img string, g geometry, p string, n int, nodes bool, orig []byte) []byte {
	t.Helper()
	exts := dbBmap(t, img, p)
	if len(exts) != 1 || exts[0].count != uint64(2*n) {
		t.Fatalf("%s: unexpected mapping %+v", p, exts)
	}
	start := exts[0].fsb
	ino := dbInode(t, img, p)
	bs := g.blockSize
	hdr, magic, core := bmbtHdrLenV4, uint32(bmbtMagicV4), inodeCoreV2
	if g.v5 {
		hdr, magic, core = bmbtHdrLenV5, bmbtMagicV5, inodeCoreV3
	}
	rootMax := (g.inodeSize - core - bmdrHdrLen) / bmbtKeyPtrLen
	blockMax := (bs - hdr) / bmbtRecLen
	be := binary.BigEndian

	var recs []dbExtent
	for i := 0; i < n; i++ {
		r := dbExtent{off: uint64(2 * i), fsb: start + uint64(2*i), count: 1}
		if i%7 == 3 {
			r.flag = 1
		}
		recs = append(recs, r)
	}

	im := openImage(t, img)
	defer im.close()
	nextOdd := 0
	alloc := func() uint64 {
		if nextOdd >= n {
			t.Fatal("out of odd blocks for the B+tree")
		}
		nextOdd++
		return start + uint64(2*nextOdd-1)
	}
	type entry struct{ key, fsb uint64 }
	// writeLevel writes the blocks of one level, per items each, fill
	// writing item i into slot j of a block body; it returns the blocks.
	writeLevel := func(level, items, per int, key func(i int) uint64, fill func(body []byte, j, i int)) []entry {
		var blocks []entry
		var fsbs []uint64
		for i := 0; i < items; i += per {
			blocks = append(blocks, entry{key: key(i), fsb: alloc()})
			fsbs = append(fsbs, blocks[len(blocks)-1].fsb)
		}
		offs, daddrs := dbLocations(t, img, fsbs)
		for bi := range blocks {
			b := make([]byte, bs)
			cnt := min(per, items-bi*per)
			be.PutUint32(b, magic)
			be.PutUint16(b[bmbtOffLevel:], uint16(level))
			be.PutUint16(b[bmbtOffNumrecs:], uint16(cnt))
			left, right := ^uint64(0), ^uint64(0)
			if bi > 0 {
				left = blocks[bi-1].fsb
			}
			if bi+1 < len(blocks) {
				right = blocks[bi+1].fsb
			}
			be.PutUint64(b[8:], left)
			be.PutUint64(b[16:], right)
			for j := 0; j < cnt; j++ {
				fill(b[hdr:], j, bi*per+j)
			}
			if g.v5 {
				be.PutUint64(b[bmbtOffBlkno:], daddrs[bi])
				copy(b[bmbtOffUUID:], g.uuid)
				be.PutUint64(b[bmbtOffOwner:], ino)
				binary.LittleEndian.PutUint32(b[bmbtCRCOffset:], metadataCRC(b, bmbtCRCOffset))
			}
			im.write(int64(offs[bi]), b)
		}
		return blocks
	}
	per := blockMax
	if nodes {
		per = max(1, n/(rootMax+1)) // more leaves than the root holds
	}
	level := 0
	items := writeLevel(0, n, per, func(i int) uint64 { return recs[i].off }, func(body []byte, j, i int) {
		r := recs[i]
		be.PutUint64(body[j*16:], r.flag<<63|r.off<<9|r.fsb>>43)
		be.PutUint64(body[j*16+8:], r.fsb<<21|r.count)
	})
	for len(items) > rootMax {
		level++
		below := items
		items = writeLevel(level, len(below), blockMax, func(i int) uint64 { return below[i].key }, func(body []byte, j, i int) {
			be.PutUint64(body[j*8:], below[i].key)
			be.PutUint64(body[blockMax*8+j*8:], below[i].fsb)
		})
	}
	if nodes && level == 0 {
		t.Fatalf("%s: %d extents made no interior level", p, n)
	}

	editInode(t, img, g, ino, func(b []byte) {
		b[5] = fmtBtree
		var flags2 uint64
		if g.v5 {
			flags2 = be.Uint64(b[inodeOffFlags2:])
		}
		if flags2&diflag2Nrext64 != 0 {
			be.PutUint64(b[inodeOffBigNext:], uint64(n))
		} else {
			be.PutUint32(b[inodeOffNext:], uint32(n))
		}
		fork := b[core:]
		clear(fork)
		be.PutUint16(fork, uint16(level+1))
		be.PutUint16(fork[2:], uint16(len(items)))
		for i, e := range items {
			be.PutUint64(fork[bmdrHdrLen+i*8:], e.key)
			be.PutUint64(fork[bmdrHdrLen+rootMax*8+i*8:], e.fsb)
		}
	})
	got := dbBmap(t, img, p)
	if fmt.Sprint(got) != fmt.Sprint(recs) {
		t.Fatalf("xfs_db maps %s as\n%v\nwant\n%v", p, got, recs)
	}
	if g.v5 {
		checkInodeCRC(t, img, ino)
	}
	return fragContents(orig, n, bs)
}

// fragContents is what /frag reads after makeFragmented: block 2i as it
// was, except in unwritten extents (i%7 == 3), and zeros in the holes.
func fragContents(orig []byte, n, bs int) []byte {
	want := make([]byte, len(orig))
	for i := 0; i < n; i++ {
		if i%7 != 3 {
			copy(want[2*i*bs:], orig[2*i*bs:(2*i+1)*bs])
		}
	}
	return want
}

// mkfs makes the image for cfg and applies the edits; the caller verifies.
func buildImage(t testing.TB, cfg config) *built {
	t.Helper()
	requireTools(t)
	dir := scratchDir(t)
	ns := makeTree(t, cfg)
	proto := writeProto(t, ns, dir)
	img := filepath.Join(dir, "xfs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	size := map[string]int64{"300M": 300 << 20, "4T": 4 << 40}[cfg.imageSize]
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b := &built{cfg: cfg, img: img, nodes: map[string]*node{}, children: map[string][]string{},
		content: map[string][]byte{}, mtime: map[string]time.Time{}, nlink: map[string]uint32{}, sameAs: map[string]string{}}
	b.start = time.Now().Add(-2 * time.Second)
	args := append([]string{"-q", "-f", "-K"}, cfg.mkfs...)
	args = append(args, "-p", proto, img)
	if out, err := exec.Command("mkfs.xfs", args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs %q: %v\n%s", args, err, out)
	}
	b.end = time.Now().Add(2 * time.Second)

	b.nodes["/"] = &node{path: "/", typ: 'd', perm: 0o755}
	for _, n := range ns {
		b.nodes[n.path] = n
		d := path.Dir(n.path)
		b.children[d] = append(b.children[d], path.Base(n.path))
		if n.typ == '-' {
			b.content[n.path] = n.data
		}
	}
	for p, n := range b.nodes {
		switch n.typ {
		case 'd':
			links := uint32(2)
			for _, c := range b.children[p] {
				if b.nodes[path.Join(p, c)].typ == 'd' {
					links++
				}
			}
			b.nlink[p] = links
		default:
			b.nlink[p] = 1
		}
	}

	g := readGeometry(t, img)
	if g.v5 != cfg.v5 || g.blockSize != cfg.blockSize {
		t.Fatalf("mkfs made v5=%v with %d-byte blocks, want v5=%v and %d", g.v5, g.blockSize, cfg.v5, cfg.blockSize)
	}
	// Edits the protofile cannot express, each checked with xfs_db.
	makeHardLink(t, img, g, "/d5", "e", "/small")
	b.sameAs["/d5/e"] = "/small"
	b.nlink["/small"] = 2
	b.nlink["/d5/e"] = 2
	b.content["/d5/e"] = b.content["/small"]
	makeSticky(t, img, "/sticky")
	b.nodes["/sticky"].perm = 0o1777
	times := map[string]time.Time{
		"/small":  time.Date(2001, 9, 9, 1, 46, 40, 123456789, time.UTC),
		"/setgid": time.Date(1960, 5, 6, 7, 8, 9, 250000000, time.UTC),
	}
	if cfg.bigtime {
		times["/setuid"] = time.Date(2300, 1, 2, 3, 4, 5, 500000000, time.UTC)
	}
	for p, when := range times {
		setMtime(t, img, g, p, when, cfg.bigtime)
		b.mtime[p] = when
	}
	b.mtime["/d5/e"] = b.mtime["/small"]
	b.sparse = makeSparse(t, img, g, "/sparse", b.content["/sparse"])
	delete(b.content, "/sparse")
	b.content["/frag"] = makeFragmented(t, img, g, "/frag", cfg.fragExtents, cfg.fragNodes, b.content["/frag"])
	if cfg.v5 && cfg.longSymlink > g.inodeSize-inodeCoreV3 {
		fixRemoteSymlink(t, img, g, "/links/long", b.nodes["/links/long"].target)
	}
	return b
}
