//go:build linux

package filebackup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

type blobKey struct {
	t  format.BlobType
	id format.ID
}

// memRepo is an in-memory Repository: ids are SHA-256 of the plaintext.
type memRepo struct {
	mu       sync.Mutex
	blobs    map[blobKey][]byte
	newSaves int                // saves that added a blob
	corrupt  map[format.ID]bool // loads of these fail as damaged

	saveDelay   time.Duration // added to every SaveBlob, to observe parallelism
	inflight    atomic.Int64
	maxInflight atomic.Int64
}

func newMemRepo() *memRepo {
	return &memRepo{blobs: make(map[blobKey][]byte), corrupt: make(map[format.ID]bool)}
}

func (m *memRepo) SaveBlob(ctx context.Context, t format.BlobType, buf []byte) (format.ID, error) {
	if err := ctx.Err(); err != nil {
		return format.ID{}, err
	}
	n := m.inflight.Add(1)
	defer m.inflight.Add(-1)
	for {
		old := m.maxInflight.Load()
		if n <= old || m.maxInflight.CompareAndSwap(old, n) {
			break
		}
	}
	id := format.ID(sha256.Sum256(buf))
	if m.saveDelay > 0 {
		time.Sleep(m.saveDelay)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := blobKey{t, id}
	if _, ok := m.blobs[k]; !ok {
		m.blobs[k] = bytes.Clone(buf)
		m.newSaves++
	}
	return id, nil
}

func (m *memRepo) LoadBlob(ctx context.Context, t format.BlobType, id format.ID, dst []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.corrupt[id] {
		return nil, core.Corrupt("blob %s is damaged", id.Short())
	}
	b, ok := m.blobs[blobKey{t, id}]
	if !ok {
		return nil, core.NotFound("blob %s (%s) not found", id.Short(), t)
	}
	return append(dst[:0], b...), nil
}

// putRaw stores b as it is (for crafted trees) and returns its id.
func (m *memRepo) putRaw(t format.BlobType, b []byte) format.ID {
	id := format.ID(sha256.Sum256(b))
	m.mu.Lock()
	m.blobs[blobKey{t, id}] = bytes.Clone(b)
	m.mu.Unlock()
	return id
}

func (m *memRepo) counts() (blobs, newSaves int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.blobs), m.newSaves
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, data, mode))
	must(t, os.Chmod(path, mode)) // beyond the umask
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1, 2, 3})
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

// setTimes sets an entry's mtime (and atime) without following a symlink.
func setTimes(t testing.TB, path string, mt time.Time) {
	t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW))
}

// mountTmpfs mounts a tmpfs on dir until the test ends.
func mountTmpfs(t testing.TB, dir, opts string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Fatalf("mount -t tmpfs -o %s %s: %v (the tests need root)", opts, dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
}

// xattrDir returns a directory whose file system takes user.* extended
// attributes: the test's temporary directory, or a tmpfs mounted in it.
func xattrDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	writeFile(t, probe, nil, 0o644)
	err := unix.Setxattr(probe, "user.cairn-probe", []byte("1"), 0)
	must(t, os.Remove(probe))
	if err == nil {
		return dir
	}
	mnt := filepath.Join(dir, "tmpfs")
	must(t, os.Mkdir(mnt, 0o755))
	mountTmpfs(t, mnt, "size=256m")
	writeFile(t, filepath.Join(mnt, "probe"), nil, 0o644)
	if err := unix.Setxattr(filepath.Join(mnt, "probe"), "user.cairn-probe", []byte("1"), 0); err != nil {
		t.Fatalf("neither %s nor a tmpfs takes user xattrs: %v", dir, err)
	}
	must(t, os.Remove(filepath.Join(mnt, "probe")))
	return mnt
}

// lstat returns the raw stat of path.
func lstat(t testing.TB, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(path, &st))
	return st
}

// xattrsOf lists path's extended attributes as "name=value" strings.
func xattrsOf(t testing.TB, path string) []string {
	t.Helper()
	xs, err := readXattrs(path)
	must(t, err)
	var out []string
	for _, x := range xs {
		if strings.HasPrefix(x.Name, "user.") {
			out = append(out, x.Name+"="+string(x.Value))
		}
	}
	return out
}

// compareTrees checks that dst holds what src holds: types, modes, owners,
// mtimes (ns), symlink targets, contents, device numbers and user xattrs.
// Sockets in src are expected to be missing in dst.
func compareTrees(t *testing.T, src, dst string) {
	t.Helper()
	srcEntries, err := os.ReadDir(src)
	must(t, err)
	dstEntries, err := os.ReadDir(dst)
	must(t, err)
	var want, got []string
	for _, e := range srcEntries {
		if e.Type()&os.ModeSocket == 0 {
			want = append(want, e.Name())
		}
	}
	for _, e := range dstEntries {
		got = append(got, e.Name())
	}
	if !slices.Equal(want, got) {
		t.Errorf("%s: entries %q, want %q", dst, got, want)
		return
	}
	for _, name := range want {
		sp, dp := filepath.Join(src, name), filepath.Join(dst, name)
		ss, ds := lstat(t, sp), lstat(t, dp)
		if ss.Mode&unix.S_IFMT != ds.Mode&unix.S_IFMT {
			t.Errorf("%s: type %#o, want %#o", dp, ds.Mode&unix.S_IFMT, ss.Mode&unix.S_IFMT)
			continue
		}
		kind := ss.Mode & unix.S_IFMT
		if kind != unix.S_IFLNK && ss.Mode&07777 != ds.Mode&07777 {
			t.Errorf("%s: mode %#o, want %#o", dp, ds.Mode&07777, ss.Mode&07777)
		}
		if ss.Uid != ds.Uid || ss.Gid != ds.Gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", dp, ds.Uid, ds.Gid, ss.Uid, ss.Gid)
		}
		if ss.Mtim != ds.Mtim {
			t.Errorf("%s: mtime %v, want %v", dp, timeOf(ds.Mtim), timeOf(ss.Mtim))
		}
		if kind != unix.S_IFLNK {
			if x, y := xattrsOf(t, sp), xattrsOf(t, dp); !slices.Equal(x, y) {
				t.Errorf("%s: xattrs %q, want %q", dp, y, x)
			}
		}
		switch kind {
		case unix.S_IFREG:
			a, err := os.ReadFile(sp)
			must(t, err)
			b, err := os.ReadFile(dp)
			must(t, err)
			if !bytes.Equal(a, b) {
				t.Errorf("%s: content differs (%d bytes, want %d)", dp, len(b), len(a))
			}
		case unix.S_IFLNK:
			a, err := os.Readlink(sp)
			must(t, err)
			b, err := os.Readlink(dp)
			must(t, err)
			if a != b {
				t.Errorf("%s: target %q, want %q", dp, b, a)
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			if ss.Rdev != ds.Rdev {
				t.Errorf("%s: rdev %#x, want %#x", dp, ds.Rdev, ss.Rdev)
			}
		case unix.S_IFDIR:
			compareTrees(t, sp, dp)
		}
	}
}

// assertEmptyDir fails unless dir exists and is empty.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	es, err := os.ReadDir(dir)
	must(t, err)
	if len(es) != 0 {
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		t.Errorf("%s should be empty, holds %q", dir, names)
	}
}

// findTemporaries returns the restore temporaries left below dir.
func findTemporaries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	must(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(d.Name(), ".cairn-restore-") {
			out = append(out, p)
		}
		return nil
	}))
	return out
}

func kindOf(err error) core.Kind { return core.KindOf(err) }

func isKind(err error, k core.Kind) bool { return err != nil && kindOf(err) == k }

var errStop = errors.New("stop")

// backupPaths backs up src and returns the paths the backup holds, in walk
// order, and its stats.
func backupPaths(t *testing.T, repo *memRepo, src string, opts BackupOptions) ([]string, Stats) {
	t.Helper()
	ctx := context.Background()
	root, st, err := Backup(ctx, repo, []string{src}, opts)
	must(t, err)
	var got []string
	must(t, Walk(ctx, repo, root, func(p string, n *Node) error {
		got = append(got, p)
		return nil
	}))
	return got, st
}
