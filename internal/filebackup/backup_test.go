//go:build linux

package filebackup

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/internal/uncached"
)

const (
	bigSize    = 20 << 20 // more than two maximal chunks
	sparseSize = 72 << 20
)

// fixture builds a tree with every kind of entry below root/src and returns
// src. Times are set last, with nanoseconds, deepest first.
func fixture(t *testing.T, root string) string {
	t.Helper()
	src := filepath.Join(root, "src")
	must(t, os.MkdirAll(src, 0o755))
	p := func(rel string) string { return filepath.Join(src, rel) }

	writeFile(t, p("empty"), nil, 0o644)
	writeFile(t, p("small.txt"), []byte("hello, cairn\n"), 0o640)
	writeFile(t, p("big.bin"), randomBytes(1, bigSize), 0o600)
	writeFile(t, p("suid"), []byte("#!/bin/sh\n"), 0o4755)
	writeFile(t, p("dir/nested/deep/file"), []byte("deep"), 0o644)
	writeFile(t, p("private/secret"), []byte("s3cret"), 0o600)
	writeFile(t, p("bad\xff\xfename"), []byte("a name that is not UTF-8"), 0o644)
	must(t, os.Chmod(p("private"), 0o700))
	must(t, os.Mkdir(p("emptydir"), 0o700))
	must(t, os.Mkdir(p("sticky"), 0o755))
	must(t, os.Chmod(p("sticky"), 0o1777))

	// Sparse: 1 MiB of data, a big hole, 4 KiB of data at the end.
	f, err := os.Create(p("sparse.img"))
	must(t, err)
	_, err = f.Write(randomBytes(2, 1<<20))
	must(t, err)
	_, err = f.WriteAt(randomBytes(3, 4096), sparseSize-4096)
	must(t, err)
	must(t, f.Close())

	// Symlinks.
	must(t, os.Symlink("/etc/passwd", p("abs")))
	must(t, os.Symlink("dir/nested", p("rel")))
	must(t, os.Symlink("does/not/exist", p("dangling")))
	must(t, os.Symlink("target\xff\x01", p("link\xc3\x28")))

	// Hard links: three names of one inode, across directories.
	writeFile(t, p("h1"), []byte("linked content"), 0o644)
	must(t, os.Link(p("h1"), p("dir/h2")))
	must(t, os.Link(p("h1"), p("dir/nested/h3")))

	// Special files.
	must(t, unix.Mkfifo(p("fifo"), 0o640))
	must(t, unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Chmod(p("null"), 0o666))
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	must(t, err)
	must(t, unix.Bind(sock, &unix.SockaddrUnix{Name: p("sock")}))
	must(t, unix.Close(sock))

	// Extended attributes.
	must(t, unix.Setxattr(p("small.txt"), "user.color", []byte("blue"), 0))
	must(t, unix.Setxattr(p("small.txt"), "user.bin", []byte{0, 1, 2, 0xff}, 0))
	must(t, unix.Setxattr(p("dir"), "user.dir", []byte("yes"), 0))

	// Owners.
	must(t, os.Lchown(p("small.txt"), 1234, 5678))
	must(t, os.Lchown(p("dir/nested"), 1234, 5678))
	must(t, os.Lchown(p("abs"), 1234, 5678))
	must(t, os.Lchown(p("fifo"), 1234, 5678))
	must(t, os.Chmod(p("suid"), 0o4755)) // chown cleared nothing here, but be sure

	// Times, with nanoseconds, children before their directories.
	base := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	i := 0
	var paths []string
	must(t, filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		paths = append(paths, path)
		return err
	}))
	slices.Reverse(paths)
	for _, path := range paths {
		setTimes(t, path, base.Add(time.Duration(i)*time.Hour+time.Duration(i)))
		i++
	}
	return src
}

// TestRoundTripEveryType backs up a tree with every kind of entry and
// restores it: contents, types, modes (setuid, sticky, 0700), owners,
// mtimes to the nanosecond, symlink targets (absolute, relative, dangling,
// non-UTF-8), hard links (one inode again), fifo, device, xattrs, and a
// sparse file that stays sparse.
func TestRoundTripEveryType(t *testing.T) {
	dir := xattrDir(t)
	src := fixture(t, dir)
	repo := newMemRepo()
	ctx := context.Background()

	var calls []Progress
	root, st, err := Backup(ctx, repo, []string{src}, BackupOptions{Progress: func(p Progress) { calls = append(calls, p) }})
	must(t, err)
	if st.Errors != 0 || st.Warnings != 0 {
		t.Fatalf("backup errors %v warnings %v", st.ErrorSamples, st.WarningSamples)
	}
	// Files: empty small big suid deep/file secret badname sparse h1 h2 h3.
	if st.Files != 11 || st.Symlinks != 4 || st.Others != 2 || st.Sockets != 1 || st.Hardlinks != 2 {
		t.Errorf("stats %+v", st)
	}
	if st.Dirs != 7 { // src dir nested deep private emptydir sticky
		t.Errorf("dirs %d, want 7", st.Dirs)
	}
	if len(calls) == 0 || calls[len(calls)-1].Files != st.Files {
		t.Errorf("progress: %d calls, last %+v", len(calls), calls)
	}
	wantRead := int64(bigSize + sparseSize + 13 + 10 + 4 + 6 + 24 + 14) // h1 read once
	if st.BytesRead != wantRead {
		t.Errorf("BytesRead %d, want %d (hard links read once)", st.BytesRead, wantRead)
	}

	dst := filepath.Join(dir, "dst")
	rst, err := Restore(ctx, repo, root, dst, RestoreOptions{Owners: true})
	must(t, err)
	if rst.Errors != 0 || rst.Warnings != 0 {
		t.Fatalf("restore errors %v warnings %v", rst.ErrorSamples, rst.WarningSamples)
	}
	if rst.Hardlinks != 2 || rst.Files != 11 || rst.Symlinks != 4 || rst.Others != 2 {
		t.Errorf("restore stats %+v", rst)
	}
	compareTrees(t, dir+"/src", dst+"/src")
	// The top directory itself.
	if a, b := lstat(t, src), lstat(t, dst+"/src"); a.Mtim != b.Mtim || a.Mode != b.Mode {
		t.Errorf("src dir: mode %#o mtime %v, want %#o %v", b.Mode, timeOf(b.Mtim), a.Mode, timeOf(a.Mtim))
	}

	h1, h2, h3 := lstat(t, dst+"/src/h1"), lstat(t, dst+"/src/dir/h2"), lstat(t, dst+"/src/dir/nested/h3")
	if h1.Ino != h2.Ino || h1.Ino != h3.Ino || h1.Nlink != 3 {
		t.Errorf("hard links not restored as one inode: %d %d %d, nlink %d", h1.Ino, h2.Ino, h3.Ino, h1.Nlink)
	}
	sp := lstat(t, dst+"/src/sparse.img")
	if sp.Size != sparseSize || sp.Blocks*512 >= sparseSize/4 {
		t.Errorf("sparse file: size %d, %d bytes allocated: not sparse", sp.Size, sp.Blocks*512)
	}
	if len(findTemporaries(t, dst)) != 0 {
		t.Errorf("temporaries left: %q", findTemporaries(t, dst))
	}
}

// TestBackupDedup: the same tree backed up twice gives the same root id and
// adds no blob.
func TestBackupDedup(t *testing.T) {
	src := fixture(t, xattrDir(t))
	repo := newMemRepo()
	ctx := context.Background()
	root1, _, err := Backup(ctx, repo, []string{src}, BackupOptions{})
	must(t, err)
	blobs, saves := repo.counts()
	root2, _, err := Backup(ctx, repo, []string{src}, BackupOptions{Workers: 7})
	must(t, err)
	if root1 != root2 {
		t.Errorf("roots differ: %s, %s", root1, root2)
	}
	if b, s := repo.counts(); b != blobs || s != saves {
		t.Errorf("second backup added %d blobs", s-saves)
	}
}

// TestBackupParentSkipsUnchanged: with a parent, unchanged files are not
// read at all, a modified one is read alone.
func TestBackupParentSkipsUnchanged(t *testing.T) {
	src := fixture(t, xattrDir(t))
	repo := newMemRepo()
	ctx := context.Background()
	root1, st1, err := Backup(ctx, repo, []string{src}, BackupOptions{})
	must(t, err)
	if st1.NewFiles != 11 || st1.UnchangedFiles != 0 {
		t.Errorf("first backup %+v", st1)
	}

	root2, st2, err := Backup(ctx, repo, []string{src}, BackupOptions{Parent: root1})
	must(t, err)
	if root2 != root1 {
		t.Errorf("unchanged tree, other root")
	}
	if st2.BytesRead != 0 || st2.UnchangedFiles != 11 || st2.NewFiles+st2.ChangedFiles != 0 {
		t.Errorf("unchanged tree with parent: %+v", st2)
	}

	changed := randomBytes(9, 3<<20)
	must(t, os.WriteFile(filepath.Join(src, "dir/nested/deep/file"), changed, 0o644))
	writeFile(t, filepath.Join(src, "dir/new"), []byte("new!"), 0o644)
	root3, st3, err := Backup(ctx, repo, []string{src}, BackupOptions{Parent: root1})
	must(t, err)
	if st3.BytesRead != int64(len(changed))+4 || st3.ChangedFiles != 1 || st3.NewFiles != 1 || st3.UnchangedFiles != 10 {
		t.Errorf("one changed and one new file: BytesRead %d, want %d; %+v", st3.BytesRead, len(changed)+4, st3)
	}
	// The result equals a backup without parent.
	root4, _, err := Backup(ctx, repo, []string{src}, BackupOptions{})
	must(t, err)
	if root3 != root4 {
		t.Errorf("backup with parent %s differs from one without %s", root3.Short(), root4.Short())
	}
}

// TestBackupParallelism: both a tree of many small files and a single big
// file keep several SaveBlob calls in flight, and the result does not
// depend on the number of workers.
func TestBackupParallelism(t *testing.T) {
	dir := t.TempDir()
	for i := range 64 {
		writeFile(t, filepath.Join(dir, "many", fmt.Sprintf("d%d/f%d", i%8, i)), randomBytes(uint64(i), 1000+i), 0o644)
	}
	writeFile(t, filepath.Join(dir, "one/big"), randomBytes(77, 24<<20), 0o644)
	ctx := context.Background()
	for _, sub := range []string{"many", "one"} {
		var roots []format.ID
		for _, workers := range []int{1, 2, 5} {
			repo := newMemRepo()
			repo.saveDelay = 2 * time.Millisecond
			root, _, err := Backup(ctx, repo, []string{filepath.Join(dir, sub)}, BackupOptions{Workers: workers})
			must(t, err)
			roots = append(roots, root)
			if got := repo.maxInflight.Load(); workers > 1 && got < 2 {
				t.Errorf("%s with %d workers: at most %d SaveBlob calls at once", sub, workers, got)
			}
		}
		if roots[0] != roots[1] || roots[0] != roots[2] {
			t.Errorf("%s: roots depend on the number of workers: %v", sub, roots)
		}
	}
}

// TestBackupPaths: several paths make one root entry each, a single file
// makes a root with one file entry, colliding base names and missing paths
// are refused.
func TestBackupPaths(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a/etc/x"), []byte("x"), 0o644)
	writeFile(t, filepath.Join(dir, "b/etc/y"), []byte("y"), 0o644)
	writeFile(t, filepath.Join(dir, "single"), []byte("only me"), 0o644)
	repo := newMemRepo()
	ctx := context.Background()

	root, _, err := Backup(ctx, repo, []string{filepath.Join(dir, "single"), filepath.Join(dir, "a")}, BackupOptions{})
	must(t, err)
	var got []string
	must(t, Walk(ctx, repo, root, func(p string, n *Node) error {
		got = append(got, p+":"+string(n.Type))
		return nil
	}))
	want := []string{"a:dir", "a/etc:dir", "a/etc/x:file", "single:file"}
	if !slices.Equal(got, want) {
		t.Errorf("walk %q, want %q", got, want)
	}

	root, _, err = Backup(ctx, repo, []string{filepath.Join(dir, "single")}, BackupOptions{})
	must(t, err)
	tr, err := LoadTree(ctx, repo, root)
	must(t, err)
	if len(tr.Nodes) != 1 || tr.Nodes[0].Name != "single" || tr.Nodes[0].Type != TypeFile || tr.Nodes[0].Size != 7 {
		t.Errorf("single file root: %+v", tr.Nodes)
	}
	out := t.TempDir()
	_, err = Restore(ctx, repo, root, out, RestoreOptions{})
	must(t, err)
	if b, _ := os.ReadFile(filepath.Join(out, "single")); string(b) != "only me" {
		t.Errorf("restored single file: %q", b)
	}

	_, _, err = Backup(ctx, repo, []string{filepath.Join(dir, "a/etc"), filepath.Join(dir, "b/etc")}, BackupOptions{})
	if !isKind(err, core.KindInvalid) || !strings.Contains(err.Error(), "a/etc") || !strings.Contains(err.Error(), "b/etc") {
		t.Errorf("colliding names: %v", err)
	}
	missing := filepath.Join(dir, "nope")
	_, _, err = Backup(ctx, repo, []string{missing}, BackupOptions{})
	if !isKind(err, core.KindNotFound) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing path: %v", err)
	}
	_, _, err = Backup(ctx, repo, nil, BackupOptions{})
	if !isKind(err, core.KindInvalid) {
		t.Errorf("no paths: %v", err)
	}
	_, _, err = Backup(ctx, repo, []string{dir}, BackupOptions{Excludes: []string{"[x"}})
	if !isKind(err, core.KindInvalid) {
		t.Errorf("bad exclude: %v", err)
	}
}

// TestBackupExcludesAndOneFileSystem: excluded names are left out with
// everything below them; with OneFileSystem a mount point is stored empty.
func TestBackupExcludesAndOneFileSystem(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "keep.txt"), []byte("k"), 0o644)
	writeFile(t, filepath.Join(src, "skip.tmp"), []byte("s"), 0o644)
	writeFile(t, filepath.Join(src, "cache/x"), []byte("c"), 0o644)
	mnt := filepath.Join(src, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	mountTmpfs(t, mnt, "size=1m")
	writeFile(t, filepath.Join(mnt, "other-fs"), []byte("o"), 0o644)

	repo := newMemRepo()
	list := func(opts BackupOptions) []string {
		got, _ := backupPaths(t, repo, src, opts)
		return got
	}
	got := list(BackupOptions{Excludes: []string{"*.tmp", "cache"}})
	want := []string{"src", "src/keep.txt", "src/mnt", "src/mnt/other-fs"}
	if !slices.Equal(got, want) {
		t.Errorf("excludes: %q, want %q", got, want)
	}
	got = list(BackupOptions{Excludes: []string{"*.tmp", "cache"}, OneFileSystem: true})
	want = []string{"src", "src/keep.txt", "src/mnt"}
	if !slices.Equal(got, want) {
		t.Errorf("one file system: %q, want %q", got, want)
	}
}

// TestBackupSkipDirs: a directory in SkipDirs is left out wherever the walk
// meets it, named by any path; given as a path to back up, it is refused.
func TestBackupSkipDirs(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for _, name := range []string{"keep.txt", "repo/config", "sub/repo2/data"} {
		writeFile(t, filepath.Join(src, name), []byte(name), 0o600)
	}
	must(t, os.Symlink(filepath.Join(src, "repo"), filepath.Join(dir, "link")))

	repo := newMemRepo()
	ctx := context.Background()
	list := func(opts BackupOptions) []string {
		got, st := backupPaths(t, repo, src, opts)
		if st.Errors != 0 || st.Warnings != 0 {
			t.Errorf("skipping counts as a problem: %d errors, %d warnings", st.Errors, st.Warnings)
		}
		return got
	}
	all := []string{"src", "src/keep.txt", "src/repo", "src/repo/config", "src/sub", "src/sub/repo2", "src/sub/repo2/data"}
	for _, tc := range []struct {
		skip []string
		want []string
	}{
		{nil, all},
		{[]string{filepath.Join(src, "repo")}, []string{"src", "src/keep.txt", "src/sub", "src/sub/repo2", "src/sub/repo2/data"}},
		{[]string{filepath.Join(dir, "link"), filepath.Join(src, "sub/repo2"), filepath.Join(dir, "missing")},
			[]string{"src", "src/keep.txt", "src/sub"}},
		{[]string{filepath.Join(src, "keep.txt")}, all}, // a file is no directory to skip
	} {
		if got := list(BackupOptions{SkipDirs: tc.skip}); !slices.Equal(got, tc.want) {
			t.Errorf("skip %q: %q, want %q", tc.skip, got, tc.want)
		}
	}
	_, _, err := Backup(ctx, repo, []string{filepath.Join(src, "repo")}, BackupOptions{SkipDirs: []string{filepath.Join(dir, "link")}})
	if !isKind(err, core.KindInvalid) || !strings.Contains(err.Error(), "left out of backups") {
		t.Errorf("backing up a skipped directory: %v", err)
	}
}

// TestBackupVanishingAndGrowingFiles: a file that disappears before it is
// read is an error in Stats (with its path) and left out; a file that grows
// is stored as read with a warning; the backup itself succeeds.
func TestBackupVanishingAndGrowingFiles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "a"), []byte("a"), 0o644)
	writeFile(t, filepath.Join(src, "grows"), []byte("1234"), 0o644)
	writeFile(t, filepath.Join(src, "vanishes"), []byte("v"), 0o644)
	testHookBeforeOpen = func(path string) {
		switch filepath.Base(path) {
		case "vanishes":
			_ = os.Remove(path)
		case "grows":
			_ = os.WriteFile(path, []byte("123456789"), 0o644)
		}
	}
	defer func() { testHookBeforeOpen = nil }()
	repo := newMemRepo()
	ctx := context.Background()
	root, st, err := Backup(ctx, repo, []string{src}, BackupOptions{})
	must(t, err)
	if st.Errors != 1 || len(st.ErrorSamples) != 1 || !strings.Contains(st.ErrorSamples[0], filepath.Join(src, "vanishes")) {
		t.Errorf("errors %d %q", st.Errors, st.ErrorSamples)
	}
	if st.Warnings != 1 || !strings.Contains(st.WarningSamples[0], "grows") {
		t.Errorf("warnings %d %q", st.Warnings, st.WarningSamples)
	}
	var got []string
	must(t, Walk(ctx, repo, root, func(p string, n *Node) error {
		got = append(got, fmt.Sprintf("%s:%d", p, n.Size))
		return nil
	}))
	if want := []string{"src:0", "src/a:1", "src/grows:9"}; !slices.Equal(got, want) {
		t.Errorf("tree %q, want %q", got, want)
	}
	out := t.TempDir()
	_, err = Restore(ctx, repo, root, out, RestoreOptions{})
	must(t, err)
	if b, _ := os.ReadFile(filepath.Join(out, "src/grows")); string(b) != "123456789" {
		t.Errorf("grown file restored as %q", b)
	}
}

// TestBackupCanceled: a canceled context ends the backup with its error.
func TestBackupCanceled(t *testing.T) {
	src := fixture(t, xattrDir(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := Backup(ctx, newMemRepo(), []string{src}, BackupOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("canceled backup: %v", err)
	}
}

// TestWalkTrees visits every tree once per occurrence, with paths; Walk
// honours fs.SkipDir.
func TestWalkTrees(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "src/a/same/f"), []byte("same"), 0o644)
	writeFile(t, filepath.Join(dir, "src/b/same/f"), []byte("same"), 0o644)
	repo := newMemRepo()
	ctx := context.Background()
	root, _, err := Backup(ctx, repo, []string{filepath.Join(dir, "src")}, BackupOptions{})
	must(t, err)
	var paths []string
	ids := map[string]format.ID{}
	must(t, WalkTrees(ctx, repo, root, func(p string, id format.ID, tr *Tree) error {
		paths = append(paths, p)
		ids[p] = id
		return nil
	}))
	if want := []string{"", "src", "src/a", "src/a/same", "src/b", "src/b/same"}; !slices.Equal(paths, want) {
		t.Errorf("trees %q, want %q", paths, want)
	}
	var walked []string
	must(t, Walk(ctx, repo, root, func(p string, n *Node) error {
		walked = append(walked, p)
		if p == "src/a" {
			return fs.SkipDir
		}
		return nil
	}))
	if want := []string{"src", "src/a", "src/b", "src/b/same", "src/b/same/f"}; !slices.Equal(walked, want) {
		t.Errorf("walk with SkipDir %q, want %q", walked, want)
	}
	if err := Walk(ctx, repo, root, func(string, *Node) error { return errStop }); !errors.Is(err, errStop) {
		t.Errorf("walk error: %v", err)
	}
}

// TestProgressNotConcurrent checks that Progress is never called concurrently.
func TestProgressNotConcurrent(t *testing.T) {
	src := fixture(t, xattrDir(t))
	var mu sync.Mutex
	var calls int
	fn := func(Progress) {
		if !mu.TryLock() {
			t.Error("Progress called concurrently")
			return
		}
		calls++
		time.Sleep(time.Millisecond)
		mu.Unlock()
	}
	repo := newMemRepo()
	repo.saveDelay = time.Millisecond
	root, _, err := Backup(context.Background(), repo, []string{src}, BackupOptions{Progress: fn})
	must(t, err)
	_, err = Restore(context.Background(), repo, root, t.TempDir(), RestoreOptions{Progress: fn})
	must(t, err)
	if calls < 2 {
		t.Errorf("%d progress calls", calls)
	}
}

// hashRepo computes ids and stores nothing: the benchmarks measure the
// archiver, not a repository.
type hashRepo struct{}

func (hashRepo) SaveBlob(ctx context.Context, t format.BlobType, buf []byte) (format.ID, error) {
	return format.ID(sha256.Sum256(buf)), nil
}

func (hashRepo) LoadBlob(ctx context.Context, t format.BlobType, id format.ID, dst []byte) ([]byte, error) {
	return nil, core.NotFound("blob %s not stored", id.Short())
}

func benchmarkBackup(b *testing.B, setup func(dir string)) {
	dir := b.TempDir()
	setup(dir)
	var bytes int64
	must(b, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			info, _ := d.Info()
			bytes += info.Size()
		}
		return err
	}))
	b.SetBytes(bytes)
	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	start := time.Now()
	for b.Loop() {
		if _, _, err := Backup(context.Background(), hashRepo{}, []string{dir}, BackupOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	wall := time.Since(start)
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
}

func BenchmarkBackupManySmallFiles(b *testing.B) {
	benchmarkBackup(b, func(dir string) {
		for i := range 2000 {
			writeFile(b, filepath.Join(dir, fmt.Sprintf("d%02d/f%04d", i%50, i)), randomBytes(uint64(i), 4096+i), 0o644)
		}
	})
}

func BenchmarkBackupBigFile(b *testing.B) {
	benchmarkBackup(b, func(dir string) {
		writeFile(b, filepath.Join(dir, "big"), randomBytes(5, 128<<20), 0o644)
	})
}

// A backup reads files without filling the page cache: a file that was not
// cached is not cached afterwards, one that was stays; both are read whole.
func TestBackupLeavesPageCacheAsItWas(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	cold, warm := filepath.Join(src, "cold"), filepath.Join(src, "warm")
	writeFile(t, cold, data, 0o600)
	writeFile(t, warm, data[:2<<20], 0o600)
	f, err := os.Open(cold)
	must(t, err)
	must(t, f.Sync())
	must(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))
	must(t, f.Close())
	if _, err := os.ReadFile(warm); err != nil {
		t.Fatal(err)
	}
	if cached, _ := testenv.CachedPages(t, cold); cached != 0 {
		t.Logf("%d pages of the cold file still cached before the backup", cached)
	}
	_, st := backupPaths(t, newMemRepo(), src, BackupOptions{})
	if st.BytesRead != int64(len(data))*3/2 || st.Errors != 0 {
		t.Fatalf("read %d bytes with %d errors, want %d and none", st.BytesRead, st.Errors, len(data)*3/2)
	}
	probe, err := os.Open(cold)
	must(t, err)
	defer probe.Close()
	if !uncached.Supported(int(probe.Fd())) {
		t.Logf("this kernel or file system refuses RWF_DONTCACHE: files are read the ordinary way")
		return
	}
	if cached, pages := testenv.CachedPages(t, cold); cached > pages/10 {
		t.Errorf("cold file: %d of %d pages cached after the backup", cached, pages)
	}
	if cached, pages := testenv.CachedPages(t, warm); cached < pages*9/10 {
		t.Errorf("warm file: %d of %d pages cached after the backup, want them all", cached, pages)
	}
}
