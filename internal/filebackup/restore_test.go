//go:build linux

package filebackup

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

var testTime = time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)

func fileNode(t *testing.T, repo *memRepo, name string, data []byte) *Node {
	t.Helper()
	n := &Node{Name: name, Type: TypeFile, Mode: 0o644, Size: uint64(len(data)), ModTime: testTime, ChangeTime: testTime, Links: 1, Content: []format.ID{}}
	if len(data) > 0 {
		id, err := repo.SaveBlob(context.Background(), format.DataBlob, data)
		must(t, err)
		n.Content = []format.ID{id}
	}
	return n
}

func dirNode(t *testing.T, repo *memRepo, name string, children ...*Node) *Node {
	t.Helper()
	return &Node{Name: name, Type: TypeDir, Mode: 0o755, ModTime: testTime, ChangeTime: testTime, Links: 2, Subtree: saveTree(t, repo, children...)}
}

func symlinkNode(name, target string) *Node {
	return &Node{Name: name, Type: TypeSymlink, Mode: 0o777, ModTime: testTime, ChangeTime: testTime, Links: 1, LinkTarget: target}
}

// saveTree stores a valid tree of the nodes.
func saveTree(t *testing.T, repo *memRepo, nodes ...*Node) format.ID {
	t.Helper()
	tr := &Tree{Nodes: nodes}
	tr.Sort()
	b, err := EncodeTree(tr)
	must(t, err)
	return repo.putRaw(format.TreeBlob, b)
}

// encodeUnchecked encodes nodes as they are, valid or not, in the order
// given: what a crafted repository could hold.
func encodeUnchecked(nodes ...*Node) []byte {
	b := []byte(`{"version":1,"nodes":[`)
	for i, n := range nodes {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendNode(b, n)
	}
	return append(b, "]}"...)
}

// TestRestoreInclude restores only the included paths, with the directories
// above them (and their metadata); an include that names nothing is a
// NotFound error before anything is written.
func TestRestoreInclude(t *testing.T) {
	src := fixture(t, xattrDir(t))
	repo := newMemRepo()
	ctx := context.Background()
	root, _, err := Backup(ctx, repo, []string{src}, BackupOptions{})
	must(t, err)

	dst := filepath.Join(t.TempDir(), "dst")
	st, err := Restore(ctx, repo, root, dst, RestoreOptions{Include: []string{"src/dir/nested", "/src/small.txt"}, Owners: true})
	must(t, err)
	for _, p := range []string{"src/dir/nested/deep/file", "src/dir/nested/h3", "src/small.txt"} {
		if _, err := os.Lstat(filepath.Join(dst, p)); err != nil {
			t.Errorf("included %s not restored: %v", p, err)
		}
	}
	for _, p := range []string{"src/dir/h2", "src/big.bin", "src/h1", "src/private"} {
		if _, err := os.Lstat(filepath.Join(dst, p)); err == nil {
			t.Errorf("%s restored, not included", p)
		}
	}
	if st.Hardlinks != 0 || st.Files != 3 {
		t.Errorf("stats %+v", st)
	}
	// The parents carry their metadata.
	compareTrees(t, filepath.Join(src, "dir/nested"), filepath.Join(dst, "src/dir/nested"))
	if a, b := lstat(t, filepath.Join(src, "dir")), lstat(t, filepath.Join(dst, "src/dir")); a.Mtim != b.Mtim || a.Mode != b.Mode {
		t.Errorf("parent dir metadata not restored")
	}
	if x := xattrsOf(t, filepath.Join(dst, "src/dir")); len(x) != 1 || x[0] != "user.dir=yes" {
		t.Errorf("parent dir xattrs %q", x)
	}

	for _, inc := range []string{"src/nope", "src/small.txt/x", "nope"} {
		out := filepath.Join(t.TempDir(), "out")
		_, err := Restore(ctx, repo, root, out, RestoreOptions{Include: []string{"src/dir", inc}})
		if !isKind(err, core.KindNotFound) || !strings.Contains(err.Error(), inc) {
			t.Errorf("include %q: %v", inc, err)
		}
		if _, err := os.Lstat(out); err == nil {
			t.Errorf("include %q: target created before the error", inc)
		}
	}
	_, err = Restore(ctx, repo, root, t.TempDir(), RestoreOptions{Include: []string{"../etc"}})
	if !isKind(err, core.KindInvalid) {
		t.Errorf("include with '..': %v", err)
	}
}

// TestRestoreCraftedTreesStayInside feeds Restore trees that try to write
// outside the target: through names, through a symlink in the backup,
// through symlinks already in the target. A sentinel directory outside
// stays empty in every case.
func TestRestoreCraftedTreesStayInside(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	must(t, os.Mkdir(outside, 0o755))
	check := func(name string) {
		t.Helper()
		assertEmptyDir(t, outside)
		es, err := os.ReadDir(base)
		must(t, err)
		for _, e := range es {
			if e.Name() != "outside" && !strings.HasPrefix(e.Name(), "target") {
				t.Errorf("%s: %s created next to the target", name, e.Name())
			}
		}
	}
	n := 0
	newTarget := func() string {
		n++
		return filepath.Join(base, "target"+string(rune('a'+n)))
	}

	// A symlink to the outside followed by a directory of the same name
	// (a duplicate): the tree is refused as a whole.
	repo := newMemRepo()
	sub := saveTree(t, repo, fileNode(t, repo, "passwd", []byte("pwned")))
	dir := &Node{Name: "link", Type: TypeDir, Mode: 0o755, ModTime: testTime, ChangeTime: testTime, Subtree: sub}
	for _, to := range []string{outside, "..", "../outside"} {
		root := repo.putRaw(format.TreeBlob, encodeUnchecked(symlinkNode("link", to), dir))
		_, err := Restore(ctx, repo, root, newTarget(), RestoreOptions{Overwrite: true})
		if !isKind(err, core.KindCorrupt) || !strings.Contains(err.Error(), "duplicate") {
			t.Errorf("symlink to %s and directory of one name: %v", to, err)
		}
		check("duplicate")
	}

	// Names that are not one component, in a subtree.
	for _, bad := range []string{"..", ".", "a/b", "/etc", "", "x\x00y"} {
		f := fileNode(t, repo, "x", []byte("pwned"))
		f.Name = bad
		subID := repo.putRaw(format.TreeBlob, encodeUnchecked(f))
		root := repo.putRaw(format.TreeBlob, encodeUnchecked(&Node{Name: "d", Type: TypeDir, Mode: 0o755, ModTime: testTime, ChangeTime: testTime, Subtree: subID}))
		target := newTarget()
		_, err := Restore(ctx, repo, root, target, RestoreOptions{Overwrite: true})
		if !isKind(err, core.KindCorrupt) {
			t.Errorf("name %q: %v", bad, err)
		}
		check("name " + bad)
		es, _ := os.ReadDir(filepath.Join(target, "d"))
		if len(es) != 0 {
			t.Errorf("name %q: %d entries restored", bad, len(es))
		}
	}

	// A symlink already in the target where the backup has a directory,
	// and one where it has a file.
	repo = newMemRepo()
	root := saveTree(t, repo,
		dirNode(t, repo, "link", fileNode(t, repo, "passwd", []byte("pwned"))),
		fileNode(t, repo, "f", []byte("mine")))
	target := newTarget()
	must(t, os.MkdirAll(target, 0o755))
	must(t, os.Symlink(outside, filepath.Join(target, "link")))
	must(t, os.Symlink(filepath.Join(outside, "f"), filepath.Join(target, "f")))
	st, err := Restore(ctx, repo, root, target, RestoreOptions{})
	if !isKind(err, core.KindConflict) || !strings.Contains(err.Error(), filepath.Join(target, "f")) && !strings.Contains(err.Error(), filepath.Join(target, "link")) {
		t.Errorf("existing symlinks without overwrite: %v", err)
	}
	if st.Errors != 2 {
		t.Errorf("existing symlinks: %d errors %q", st.Errors, st.ErrorSamples)
	}
	check("existing symlinks")
	if fi, err := os.Lstat(filepath.Join(target, "link")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("existing symlink replaced without overwrite")
	}
	_, err = Restore(ctx, repo, root, target, RestoreOptions{Overwrite: true})
	must(t, err)
	check("existing symlinks, overwrite")
	if fi, err := os.Lstat(filepath.Join(target, "link")); err != nil || !fi.IsDir() {
		t.Errorf("symlink not replaced by the directory: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "link/passwd")); err != nil || string(b) != "pwned" {
		t.Errorf("link/passwd: %q %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(target, "f")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("symlink f not replaced by the file: %v", err)
	}

	// An include through a symlink of the backup.
	repo = newMemRepo()
	root = saveTree(t, repo, symlinkNode("link", outside))
	_, err = Restore(ctx, repo, root, newTarget(), RestoreOptions{Include: []string{"link/passwd"}})
	if !isKind(err, core.KindNotFound) {
		t.Errorf("include through a symlink: %v", err)
	}
	check("include through a symlink")
}

// TestRestoreHardlinksOnlyWithinRestore: a name whose other name is not
// restored gets its own copy; names that share an inode number but not a
// content are not linked.
func TestRestoreHardlinksOnlyWithinRestore(t *testing.T) {
	src := fixture(t, xattrDir(t))
	repo := newMemRepo()
	ctx := context.Background()
	root, _, err := Backup(ctx, repo, []string{src}, BackupOptions{})
	must(t, err)
	dst := t.TempDir()
	st, err := Restore(ctx, repo, root, dst, RestoreOptions{Include: []string{"src/dir/nested/h3", "src/h1"}})
	must(t, err)
	if st.Hardlinks != 1 {
		t.Errorf("%d hard links, want 1 (h1 and h3)", st.Hardlinks)
	}
	a, b := lstat(t, filepath.Join(dst, "src/h1")), lstat(t, filepath.Join(dst, "src/dir/nested/h3"))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("h1 and h3 not linked")
	}

	repo = newMemRepo()
	x, y := fileNode(t, repo, "a", []byte("AAA")), fileNode(t, repo, "b", []byte("BBBB"))
	for _, n := range []*Node{x, y} {
		n.Links, n.Device, n.Inode = 2, 7, 9
	}
	root = saveTree(t, repo, x, y)
	dst = t.TempDir()
	st, err = Restore(ctx, repo, root, dst, RestoreOptions{})
	must(t, err)
	ba, _ := os.ReadFile(filepath.Join(dst, "a"))
	bb, _ := os.ReadFile(filepath.Join(dst, "b"))
	if string(ba) != "AAA" || string(bb) != "BBBB" || st.Hardlinks != 0 {
		t.Errorf("same inode number, other content: %q %q, %d links", ba, bb, st.Hardlinks)
	}
}

// TestRestoreExistingFile: without Overwrite an existing file is an error
// naming it and stays untouched, the rest is restored; with Overwrite it is
// replaced.
func TestRestoreExistingFile(t *testing.T) {
	src := fixture(t, xattrDir(t))
	repo := newMemRepo()
	ctx := context.Background()
	root, _, err := Backup(ctx, repo, []string{src}, BackupOptions{})
	must(t, err)
	dst := filepath.Join(xattrDir(t), "dst")
	existing := filepath.Join(dst, "src/small.txt")
	writeFile(t, existing, []byte("keep"), 0o600)

	st, err := Restore(ctx, repo, root, dst, RestoreOptions{Owners: true})
	if !isKind(err, core.KindConflict) || !strings.Contains(err.Error(), existing) || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("existing file: %v", err)
	}
	t.Logf("error: %v", err)
	if st.Errors != 1 {
		t.Errorf("%d errors: %q", st.Errors, st.ErrorSamples)
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep" {
		t.Errorf("existing file changed to %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "src/big.bin")); len(b) != bigSize {
		t.Errorf("other files not restored")
	}

	// A second run merges into the directories and, with Overwrite,
	// replaces every file.
	_, err = Restore(ctx, repo, root, dst, RestoreOptions{Owners: true, Overwrite: true})
	must(t, err)
	compareTrees(t, src, filepath.Join(dst, "src"))
	if len(findTemporaries(t, dst)) != 0 {
		t.Errorf("temporaries left")
	}
}

// TestRestoreDiskFull restores a 4 MiB file into a 1 MiB tmpfs: the error
// names the file and says the disk is full, and neither the file nor a
// temporary is left.
func TestRestoreDiskFull(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "src/big"), randomBytes(4, 4<<20), 0o644)
	repo := newMemRepo()
	ctx := context.Background()
	root, _, err := Backup(ctx, repo, []string{filepath.Join(dir, "src")}, BackupOptions{})
	must(t, err)

	mnt := filepath.Join(dir, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	mountTmpfs(t, mnt, "size=1m")
	_, err = Restore(ctx, repo, root, mnt, RestoreOptions{})
	big := filepath.Join(mnt, "src/big")
	if err == nil || !strings.Contains(err.Error(), big) || !strings.Contains(err.Error(), "disk is full") || core.CodeOf(err) != "no_space" {
		t.Fatalf("restore into a full disk: %v", err)
	}
	t.Logf("error: %v", err)
	if _, err := os.Lstat(big); err == nil {
		t.Errorf("%s exists after a failed restore", big)
	}
	if tmps := findTemporaries(t, mnt); len(tmps) != 0 {
		t.Errorf("temporaries left: %q", tmps)
	}
}

// TestRestoreDamagedChunk: a chunk that fails to load aborts its file (no
// file, no temporary) with a Corrupt error naming it; the other files are
// restored.
func TestRestoreDamagedChunk(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "src/a"), []byte("fine"), 0o644)
	writeFile(t, filepath.Join(dir, "src/b"), randomBytes(6, 20<<20), 0o644)
	repo := newMemRepo()
	ctx := context.Background()
	root, _, err := Backup(ctx, repo, []string{filepath.Join(dir, "src")}, BackupOptions{})
	must(t, err)
	must(t, Walk(ctx, repo, root, func(p string, n *Node) error {
		if p == "src/b" {
			repo.corrupt[n.Content[1]] = true
		}
		return nil
	}))
	dst := t.TempDir()
	st, err := Restore(ctx, repo, root, dst, RestoreOptions{})
	if !isKind(err, core.KindCorrupt) || !strings.Contains(err.Error(), filepath.Join(dst, "src/b")) {
		t.Errorf("damaged chunk: %v", err)
	}
	if st.Errors != 1 || st.Files != 1 {
		t.Errorf("stats %+v", st)
	}
	if _, err := os.Lstat(filepath.Join(dst, "src/b")); err == nil {
		t.Errorf("file with a damaged chunk restored")
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "src/a")); string(b) != "fine" {
		t.Errorf("other file not restored")
	}
	if tmps := findTemporaries(t, dst); len(tmps) != 0 {
		t.Errorf("temporaries left: %q", tmps)
	}
}

// TestRestoreSizeMismatch: content shorter or longer than the node's size
// is refused.
func TestRestoreSizeMismatch(t *testing.T) {
	repo := newMemRepo()
	ctx := context.Background()
	short := fileNode(t, repo, "short", []byte("abc"))
	short.Size = 4
	long := fileNode(t, repo, "long", []byte("abcdef"))
	long.Size = 5
	root := saveTree(t, repo, short, long)
	dst := t.TempDir()
	st, err := Restore(ctx, repo, root, dst, RestoreOptions{})
	if !isKind(err, core.KindCorrupt) || st.Errors != 2 {
		t.Errorf("size mismatch: %v, %+v", err, st)
	}
	assertEmptyDir(t, dst)
}

// TestSparseWriter writes zero blocks as holes, whatever the split of the
// input.
func TestSparseWriter(t *testing.T) {
	data := make([]byte, 1<<20)
	copy(data[10:], "start")
	copy(data[300<<10:], randomBytes(8, 5000))
	copy(data[len(data)-3:], "end")
	for _, step := range []int{1 << 20, 4096, 1000, 7777} {
		path := filepath.Join(t.TempDir(), "f")
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o644)
		must(t, err)
		w := sparseWriter{fd: fd}
		for off := 0; off < len(data); off += step {
			must(t, w.write(data[off:min(off+step, len(data))]))
		}
		must(t, w.finish())
		must(t, unix.Close(fd))
		got, err := os.ReadFile(path)
		must(t, err)
		if string(got) != string(data) {
			t.Errorf("step %d: content differs", step)
		}
		if st := lstat(t, path); st.Blocks*512 > 64<<10 {
			t.Errorf("step %d: %d bytes allocated", step, st.Blocks*512)
		}
	}
}

// TestOpenBeneathRefusesSymlinks: reopening a directory of the target (for
// hard links and directory metadata) never passes through a symlink, with
// openat2 and with the per-name fallback.
func TestOpenBeneathRefusesSymlinks(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	target := filepath.Join(base, "target")
	must(t, os.MkdirAll(filepath.Join(outside, "sub"), 0o755))
	must(t, os.MkdirAll(filepath.Join(target, "real/sub"), 0o755))
	must(t, os.Symlink(outside, filepath.Join(target, "a")))
	must(t, os.Symlink("..", filepath.Join(target, "real/up")))
	fd, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(fd)
	r := &restorer{rootFd: fd}
	defer noOpenat2.Store(false)
	for _, fallback := range []bool{false, true} {
		noOpenat2.Store(fallback)
		for _, comps := range [][]string{{"a"}, {"a", "sub"}, {"real", "up"}, {"real", "up", "a"}, {".."}, {"real", ".."}} {
			if fd, err := r.openBeneath(comps); err == nil {
				unix.Close(fd)
				t.Errorf("fallback %v: %q opened", fallback, comps)
			}
		}
		fd, err := r.openBeneath([]string{"real", "sub"})
		if err != nil {
			t.Errorf("fallback %v: real/sub: %v", fallback, err)
		} else {
			unix.Close(fd)
		}
	}
}

// TestRestoreWithoutOpenat2: the per-name fallback for kernels without
// openat2 restores the same (directory metadata and hard links use it).
func TestRestoreWithoutOpenat2(t *testing.T) {
	noOpenat2.Store(true)
	defer noOpenat2.Store(false)
	src := fixture(t, xattrDir(t))
	repo := newMemRepo()
	ctx := context.Background()
	root, _, err := Backup(ctx, repo, []string{src}, BackupOptions{})
	must(t, err)
	dst := filepath.Join(xattrDir(t), "dst")
	st, err := Restore(ctx, repo, root, dst, RestoreOptions{Owners: true})
	must(t, err)
	if st.Hardlinks != 2 || st.Warnings != 0 {
		t.Errorf("stats %+v", st)
	}
	compareTrees(t, src, filepath.Join(dst, "src"))
}

// TestRestoreSetuidWithoutOwners: without Owners a setuid file of another
// user loses its setuid bit (the restoring user would own it), with a
// warning; with Owners it keeps owner and bit.
func TestRestoreSetuidWithoutOwners(t *testing.T) {
	repo := newMemRepo()
	ctx := context.Background()
	f := fileNode(t, repo, "suid", []byte("#!/bin/sh\n"))
	f.Mode, f.UID, f.GID = 0o6755, 1234, 5678
	root := saveTree(t, repo, f)

	dst := t.TempDir()
	st, err := Restore(ctx, repo, root, dst, RestoreOptions{})
	must(t, err)
	if s := lstat(t, filepath.Join(dst, "suid")); s.Mode&07777 != 0o755 || s.Uid != 0 || st.Warnings != 1 {
		t.Errorf("without owners: mode %#o uid %d, %d warnings", s.Mode&07777, s.Uid, st.Warnings)
	}
	dst = t.TempDir()
	st, err = Restore(ctx, repo, root, dst, RestoreOptions{Owners: true})
	must(t, err)
	if s := lstat(t, filepath.Join(dst, "suid")); s.Mode&07777 != 0o6755 || s.Uid != 1234 || s.Gid != 5678 || st.Warnings != 0 {
		t.Errorf("with owners: mode %#o owner %d:%d, %d warnings", s.Mode&07777, s.Uid, s.Gid, st.Warnings)
	}
}
