package mount

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
	"github.com/cairn-backup/cairn/internal/fsimage/ext4"
	"github.com/cairn-backup/cairn/internal/fsimage/fsimagetest"
)

func openExt4(t testing.TB, img []byte) fsimage.FS {
	t.Helper()
	f, err := ext4.Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatalf("ext4.Open: %v", err)
	}
	return f
}

func TestCopyOutEverything(t *testing.T) {
	src := sourceTree(t)
	fsys := openExt4(t, treeImage(t))
	target := filepath.Join(fsimagetest.TempDir(t), "target")
	st, err := CopyOut(fsys, []string{"/"}, target, CopyOptions{})
	if err != nil {
		t.Fatalf("CopyOut: %v (%+v)", err, st)
	}
	if st.Skipped != 1 || st.Errors != 0 || st.HardLinks != 1 || st.Files < 600 || st.Symlinks != 5 {
		t.Errorf("stats %+v", st)
	}
	if err := os.Remove(filepath.Join(target, "lost+found")); err != nil {
		t.Fatal(err)
	}
	fsimagetest.CompareDirs(t, src, target, os.Geteuid() == 0, "socket")
	checkSparse(t, filepath.Join(target, "sparse"), 1<<20)
	checkSparse(t, filepath.Join(target, "sparse-far"), 64<<10)
	checkSparse(t, filepath.Join(target, "sparse-tail"), 2<<20)
	leftovers(t, target)

	// Again into the same target: everything exists.
	st, err = CopyOut(fsys, []string{"/small"}, target, CopyOptions{})
	if core.KindOf(err) != core.KindConflict || st.Errors != 1 {
		t.Errorf("second copy: %v, %+v", err, st)
	}
	st, err = CopyOut(fsys, []string{"/"}, target, CopyOptions{Overwrite: true})
	if err != nil || st.Errors != 0 {
		t.Fatalf("copy with Overwrite: %v, %+v", err, st)
	}
	os.Remove(filepath.Join(target, "lost+found"))
	fsimagetest.CompareDirs(t, src, target, os.Geteuid() == 0, "socket")
	leftovers(t, target)
}

// checkSparse fails unless file p occupies at most max bytes on disk.
func checkSparse(t *testing.T, p string, max int64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > max {
		t.Errorf("%s: %d bytes allocated for %d, want at most %d", p, st.Blocks*512, st.Size, max)
	}
}

// leftovers fails if a temporary file of CopyOut remains under dir.
func leftovers(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".cairn-tmp-") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

func TestCopyOutIncludes(t *testing.T) {
	src := sourceTree(t)
	fsys := openExt4(t, treeImage(t, "-O", "inline_data"))
	cases := []struct {
		name     string
		includes []string
		check    func(t *testing.T, target string)
	}{
		{"deep file", []string{"a/b/c/d/deep"}, func(t *testing.T, target string) {
			fsimagetest.CompareDirs(t, filepath.Join(src, "a"), filepath.Join(target, "a"), os.Geteuid() == 0)
			onlyEntries(t, target, "a")
		}},
		{"hard link outside the copy", []string{"/sub"}, func(t *testing.T, target string) {
			fsimagetest.CompareDirs(t, filepath.Join(src, "sub"), filepath.Join(target, "sub"), os.Geteuid() == 0)
		}},
		{"hard link inside the copy", []string{"/small", "/sub", "/small"}, func(t *testing.T, target string) {
			a, _ := os.Stat(filepath.Join(target, "small"))
			b, _ := os.Stat(filepath.Join(target, "sub/hardlink-to-small"))
			if !os.SameFile(a, b) {
				t.Errorf("small and sub/hardlink-to-small are not one file")
			}
		}},
		{"through a symlink", []string{"/dirlink/hardlink-to-small"}, func(t *testing.T, target string) {
			fi, err := os.Lstat(filepath.Join(target, "dirlink"))
			if err != nil || !fi.IsDir() {
				t.Fatalf("dirlink: %v, %v", fi, err)
			}
			b, err := os.ReadFile(filepath.Join(target, "dirlink/hardlink-to-small"))
			if err != nil || string(b) != "hello, world\n" {
				t.Errorf("dirlink/hardlink-to-small = %q, %v", b, err)
			}
		}},
		{"a symlink itself", []string{"/dirlink", "/slowlink"}, func(t *testing.T, target string) {
			for name, want := range map[string]string{"dirlink": "sub", "slowlink": strings.Repeat("long/", 20) + "target"} {
				if got, err := os.Readlink(filepath.Join(target, name)); err != nil || got != want {
					t.Errorf("%s -> %q, %v", name, got, err)
				}
			}
		}},
		{"read-only directory", []string{"/readonly"}, func(t *testing.T, target string) {
			fsimagetest.CompareDirs(t, filepath.Join(src, "readonly"), filepath.Join(target, "readonly"), os.Geteuid() == 0)
		}},
		{"unusual names", []string{fsimagetest.LongName, "/with space", "ünïcødé-名前", "new\nline", "-dash"}, func(t *testing.T, target string) {
			onlyEntries(t, target, fsimagetest.LongName, "with space", "ünïcødé-名前", "new\nline", "-dash")
		}},
		{"everything twice", []string{"/", "/etc/../sub", "sub"}, func(t *testing.T, target string) {
			os.Remove(filepath.Join(target, "lost+found"))
			fsimagetest.CompareDirs(t, src, target, os.Geteuid() == 0, "socket", "sparse-tail", "sparse-far")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := filepath.Join(fsimagetest.TempDir(t), "target")
			st, err := CopyOut(fsys, c.includes, target, CopyOptions{})
			if err != nil {
				t.Fatalf("CopyOut: %v (%+v)", err, st)
			}
			c.check(t, target)
			leftovers(t, target)
		})
	}
}

func onlyEntries(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	slices.Sort(names)
	if !slices.Equal(got, names) {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

func TestCopyOutMissing(t *testing.T) {
	fsys := openExt4(t, treeImage(t))
	for _, inc := range []string{"/nope", "/small/x", "/abslink/x", "/dangling/x", "/sub/../nope"} {
		target := filepath.Join(fsimagetest.TempDir(t), "target")
		_, err := CopyOut(fsys, []string{"/small", inc}, target, CopyOptions{})
		if err == nil || !strings.Contains(err.Error(), inc) {
			t.Errorf("include %q: %v", inc, err)
		}
		if inc == "/nope" && (!core.IsNotFound(err) || !errors.Is(err, os.ErrNotExist)) {
			t.Errorf("include %q: error %v is not a not-found error", inc, err)
		}
		if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("include %q: the target was created", inc)
		}
	}
}

func TestCopyOutNotRoot(t *testing.T) {
	fsys := openExt4(t, treeImage(t))
	geteuid = func() int { return 1000 }
	defer func() { geteuid = os.Geteuid }()
	target := filepath.Join(fsimagetest.TempDir(t), "target")
	st, err := CopyOut(fsys, []string{"/"}, target, CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	devices := int64(0)
	if os.Geteuid() == 0 {
		devices = 2 // MakeTree makes two devices as root
	}
	if st.Skipped != 1+devices || st.Warnings != 1+devices {
		t.Errorf("stats %+v", st)
	}
	fi, err := os.Lstat(filepath.Join(target, "small"))
	if err != nil {
		t.Fatal(err)
	}
	if s := fi.Sys().(*syscall.Stat_t); int(s.Uid) != os.Getuid() {
		t.Errorf("small is owned by %d without the owners option", s.Uid)
	}
}

// hostileImage makes an ext4 image without metadata checksums (so that
// patched names reach the name checks) from a tree whose placeholder names
// are then patched into hostile ones. outside is a directory outside every
// target that symbolic links of the image point to.
func hostileImage(t *testing.T, outside string) []byte {
	src := filepath.Join(fsimagetest.TempDir(t), "src")
	for _, d := range []string{"d1", "d2", "d3", "d4", "dup/YY", "etc", "ok"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"d1/XX/f":      "under ..",       // XX -> ..
		"d2/AAAAAAAAA": "slashes",        // -> a/../../x
		"d3/NULNAMEX":  "nul",            // -> nu\x00lname
		"d4/QQQQ/f":    "dot",            // QQQQ -> ./..
		"dup/YY/pwned": "through a link", // YY -> ZZ, next to the link ZZ
		"etc/passwd":   "image passwd",
		"ok/fine":      "fine",
		"d1/good":      "good",
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{
		"dup/ZZ":   outside,
		"evil-abs": "/etc",
		"evil-rel": "../../../../../../../../" + strings.TrimPrefix(outside, "/"),
	} {
		if err := os.Symlink(target, filepath.Join(src, name)); err != nil {
			t.Fatal(err)
		}
	}
	img := readImage(t, fsimagetest.Mkfs(t, "ext4", src, "8M", "-O", "^metadata_csum"))
	for from, to := range map[string]string{"XX": "..", "AAAAAAAAA": "a/../../x", "NULNAMEX": "nu\x00lname", "QQQQ": "./..", "YY": "ZZ"} {
		patchName(t, img, from, to)
	}
	return img
}

// patchName renames the one directory entry named from to to (same length)
// in the bytes of an ext4 image.
func patchName(t *testing.T, img []byte, from, to string) {
	t.Helper()
	n := 0
	for i := 8; i+len(from) <= len(img); i++ {
		if img[i-2] == byte(len(from)) && img[i-1] >= 1 && img[i-1] <= 7 && string(img[i:i+len(from)]) == from {
			copy(img[i:], to)
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d directory entries named %q", n, from)
	}
}

func TestCopyOutHostile(t *testing.T) {
	tmp := fsimagetest.TempDir(t)
	outside := filepath.Join(tmp, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	img := hostileImage(t, outside)
	fsys := openExt4(t, img)
	passwd, _ := os.ReadFile("/etc/passwd")

	for _, opts := range []CopyOptions{{}, {Overwrite: true}} {
		target := filepath.Join(tmp, "a", "b", "target")
		st, err := CopyOut(fsys, []string{"/"}, target, opts)
		if err == nil || st.Errors < 4 {
			t.Errorf("CopyOut: %v, %+v; want errors for the bad entries", err, st)
		}
		samples := strings.Join(st.ErrorSamples, "\n")
		for _, name := range []string{`"a/../../x"`, `"nu\x00lname"`, `"./.."`} {
			if !strings.Contains(samples, name) {
				t.Errorf("no error names the entry %s:\n%s", name, samples)
			}
		}
		for _, want := range []string{"ok/fine", "d1", "etc/passwd", "evil-abs", "evil-rel"} {
			if _, err := os.Lstat(filepath.Join(target, want)); err != nil {
				t.Errorf("%s not copied: %v", want, err)
			}
		}
		// Through the links left in the target by the first copy.
		for _, inc := range []string{"/evil-abs/passwd", "/dup/ZZ/pwned", "/evil-rel"} {
			st, err := CopyOut(fsys, []string{inc}, target, opts)
			t.Logf("CopyOut(%s, %+v): %v, %+v", inc, opts, err, st)
		}
		os.RemoveAll(filepath.Join(tmp, "a"))
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("written outside the target: %v", entries)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 1 {
		t.Errorf("%s holds %v", tmp, entries)
	}
	if b, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(b, passwd) {
		t.Errorf("/etc/passwd changed")
	}
}

// TestCopyOutPlantedLinks: symbolic links already in the target that point
// out of it are never followed.
func TestCopyOutPlantedLinks(t *testing.T) {
	src := sourceTree(t)
	fsys := openExt4(t, treeImage(t))
	tmp := fsimagetest.TempDir(t)
	outside := filepath.Join(tmp, "outside")
	target := filepath.Join(tmp, "target")
	for _, d := range []string{outside, target} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, to := range map[string]string{"sub": outside, "a": "../outside", "small": filepath.Join(outside, "small")} {
		if err := os.Symlink(to, filepath.Join(target, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, opts := range []CopyOptions{{}, {Overwrite: true}} {
		st, err := CopyOut(fsys, []string{"/sub", "/a/b/c/d/deep", "/small"}, target, opts)
		t.Logf("%+v: %v, %+v", opts, err, st)
		if !opts.Overwrite && (err == nil || st.Errors != 3) {
			t.Errorf("without Overwrite: %v, %+v; want 3 errors", err, st)
		}
		if opts.Overwrite && err != nil {
			t.Errorf("with Overwrite: %v", err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("written outside the target: %v", entries)
	}
	fsimagetest.CompareDirs(t, filepath.Join(src, "sub"), filepath.Join(target, "sub"), os.Geteuid() == 0)
}

// TestCopyOutDirectoryLoop: a directory entry that names an ancestor.
func TestCopyOutDirectoryLoop(t *testing.T) {
	src := filepath.Join(fsimagetest.TempDir(t), "src")
	if err := os.MkdirAll(filepath.Join(src, "loop/child/grandchild"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := readImage(t, fsimagetest.Mkfs(t, "ext4", src, "8M", "-O", "^metadata_csum"))
	fi, err := openExt4(t, img).Lstat("/loop")
	if err != nil {
		t.Fatal(err)
	}
	// Point the entry "grandchild" at /loop's inode.
	name := "grandchild"
	n := 0
	for i := 8; i+len(name) <= len(img); i++ {
		if img[i-2] == byte(len(name)) && string(img[i:i+len(name)]) == name {
			binary.LittleEndian.PutUint32(img[i-8:], uint32(fi.Inode))
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d entries named %s", n, name)
	}
	target := filepath.Join(fsimagetest.TempDir(t), "target")
	st, err := CopyOut(openExt4(t, img), []string{"/"}, target, CopyOptions{})
	if err == nil || !strings.Contains(err.Error(), "second time") || st.Errors != 1 {
		t.Fatalf("CopyOut: %v, %+v", err, st)
	}
}
