package repo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/blob/local"
	"github.com/cairn-backup/cairn/internal/blob/location"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// backupImageFile backs up a raw image file.
func backupImageFile(t testing.TB, r *Repository, path string, tags ...string) *format.Manifest {
	t.Helper()
	src, done := rawSource(t, path)
	defer done()
	m, err := r.BackupImage(context.Background(), src, BackupInfo{Tags: tags}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// restoreBytes restores an image backup into memory through a temp file.
func restoreBytes(t testing.TB, r *Repository, m *format.Manifest) ([]byte, error) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "out.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(m.Image.Size)
	if err := r.RestoreImage(context.Background(), m, f, nil); err != nil {
		return nil, err
	}
	return os.ReadFile(f.Name())
}

func TestImageDedup(t *testing.T) {
	r, store := newTestRepo(t)
	path := filepath.Join(t.TempDir(), "img.raw")
	writeImage(t, path, 12<<20, 7)
	m1 := backupImageFile(t, r, path)
	if m1.Summary.BlobsNew == 0 {
		t.Fatal("first backup stored nothing")
	}
	before := storeSize(t, store)
	m2 := backupImageFile(t, reopen(t, store), path)
	if m2.Summary.BlobsNew != 0 || m2.Summary.BytesAdded != 0 {
		t.Fatalf("second backup of the same image added %d blobs, %d bytes", m2.Summary.BlobsNew, m2.Summary.BytesAdded)
	}
	// Only the manifest is new.
	if grew := storeSize(t, store) - before; grew > 4096 {
		t.Fatalf("repository grew by %d bytes for an identical backup", grew)
	}
	if m2.Image.Segments[0] != m1.Image.Segments[0] {
		t.Fatal("identical segments got different ids")
	}
}

func storeSize(t testing.TB, s blob.Store) int64 {
	var n int64
	if err := s.List(context.Background(), "", func(i blob.Info) error { n += i.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWrongPassword(t *testing.T) {
	_, store := newTestRepo(t)
	_, err := Open(context.Background(), store, []byte("wrong"), testOptions())
	if core.KindOf(err) != core.KindUnauthorized || !strings.Contains(err.Error(), "wrong password") {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestKeys(t *testing.T) {
	ctx := context.Background()
	r, store := newTestRepo(t)
	id2, err := r.AddKey(ctx, []byte("second"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, store, []byte("second"), testOptions())
	if err != nil {
		t.Fatalf("second password: %v", err)
	}
	if err := r2.RemoveKey(ctx, id2); core.CodeOf(err) != "key_in_use" {
		t.Fatalf("removing the key in use: %v", err)
	}
	if err := r2.RemoveKey(ctx, r.KeyID()); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, store, testPassword, testOptions()); core.KindOf(err) != core.KindUnauthorized {
		t.Fatalf("removed password still opens: %v", err)
	}
	if err := r2.RemoveKey(ctx, "nope"); !core.IsNotFound(err) {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestNewerVersionRefused(t *testing.T) {
	ctx := context.Background()
	_, store := newTestRepo(t)
	b, _ := loadAll(ctx, store, format.ConfigName, 1<<20)
	b = bytes.Replace(b, []byte(`"version": 1`), []byte(`"version": 2`), 1)
	store.Save(ctx, format.ConfigName, bytes.NewReader(b), int64(len(b)))
	_, err := Open(ctx, store, testPassword, testOptions())
	if err == nil || !strings.Contains(err.Error(), "repository format version 2 is newer than this cairn supports (1): upgrade cairn") {
		t.Fatalf("newer repository: %v", err)
	}
}

func TestInitRefusesNonEmpty(t *testing.T) {
	ctx := context.Background()
	_, store := newTestRepo(t)
	if _, err := Init(ctx, store, testPassword, InitOptions{}, testOptions()); core.KindOf(err) != core.KindConflict {
		t.Fatalf("init over a repository: %v", err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o600)
	s, _ := local.Open(dir, false)
	if _, err := Init(ctx, s, testPassword, InitOptions{}, testOptions()); core.CodeOf(err) != "not_empty" {
		t.Fatalf("init in a non-empty dir: %v", err)
	}
}

// localRepo makes a repository in a temporary directory.
func localRepo(t testing.TB) (*Repository, blob.Store, string) {
	dir := t.TempDir()
	store, err := local.Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Init(context.Background(), store, testPassword, InitOptions{}, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	return r, store, dir
}

func packFiles(t testing.TB, dir string) []string {
	var out []string
	filepath.Walk(filepath.Join(dir, "data"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && !strings.HasPrefix(fi.Name(), ".") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestVerifyFindsBitFlips(t *testing.T) {
	ctx := context.Background()
	r, store, dir := localRepo(t)
	img := filepath.Join(t.TempDir(), "img.raw")
	writeImage(t, img, 6<<20, 3)
	m := backupImageFile(t, r, img)
	res, err := reopen(t, store).Verify(ctx, VerifyOptions{ReadDataPercent: 100})
	if err != nil || !res.OK() {
		t.Fatalf("clean repository: %+v %v", res, err)
	}
	// Flip one bit at many places of the data pack: every flip is found,
	// names a blob and the backup, and restore refuses.
	var data string
	for _, p := range packFiles(t, dir) {
		if fi, _ := os.Stat(p); data == "" || fi.Size() > mustSize(data) {
			data = p
		}
	}
	orig, _ := os.ReadFile(data)
	for _, at := range []int{0, 1000, len(orig) / 2, len(orig) - 200, len(orig) - 20, len(orig) - 3} {
		b := bytes.Clone(orig)
		b[at] ^= 0x10
		os.WriteFile(data, b, 0o600)
		res, err := reopen(t, store).Verify(ctx, VerifyOptions{ReadDataPercent: 100})
		if err != nil {
			t.Fatalf("flip at %d: %v", at, err)
		}
		if res.OK() {
			t.Fatalf("flip at %d of %d not found", at, len(orig))
		}
		named := false
		for _, p := range res.Problems {
			for _, b := range p.Backups {
				named = named || b == m.ID
			}
		}
		if at < len(orig)-300 && !named {
			t.Fatalf("flip at %d: problems do not name the backup: %+v", at, res.Problems)
		}
		if at < len(orig)-300 {
			if _, err := restoreBytes(t, reopen(t, store), m); core.KindOf(err) != core.KindCorrupt {
				t.Fatalf("restore over a flipped bit at %d: %v", at, err)
			}
		}
	}
	os.WriteFile(data, orig, 0o600)
}

func mustSize(p string) int64 { fi, _ := os.Stat(p); return fi.Size() }

func TestMissingAndTruncatedObjects(t *testing.T) {
	ctx := context.Background()
	r, store, dir := localRepo(t)
	img := filepath.Join(t.TempDir(), "img.raw")
	writeImage(t, img, 3<<20, 4)
	m := backupImageFile(t, r, img)
	packs := packFiles(t, dir)
	// Truncate every pack: structure check finds it.
	for _, p := range packs {
		os.Truncate(p, mustSize(p)/2)
	}
	res, err := reopen(t, store).Verify(ctx, VerifyOptions{})
	if err != nil || res.OK() || !strings.Contains(res.Problems[0].Message, "truncated") {
		t.Fatalf("truncated packs: %+v %v", res, err)
	}
	for _, p := range packs {
		os.Remove(p)
	}
	res, err = reopen(t, store).Verify(ctx, VerifyOptions{})
	if err != nil || res.OK() || !strings.Contains(res.Problems[0].Message, "missing") {
		t.Fatalf("missing packs: %+v %v", res, err)
	}
	if _, err := restoreBytes(t, reopen(t, store), m); core.KindOf(err) != core.KindCorrupt && !core.IsNotFound(err) {
		t.Fatalf("restore from missing packs: %v", err)
	}
	// A truncated manifest and index.
	mpath := filepath.Join(dir, "backups", m.ID)
	os.Truncate(mpath, 10)
	if _, err := reopen(t, store).LoadManifest(ctx, m.ID); core.KindOf(err) != core.KindCorrupt || !strings.Contains(err.Error(), m.ID) {
		t.Fatalf("truncated manifest: %v", err)
	}
	idx, _ := filepath.Glob(filepath.Join(dir, "index", "*"))
	os.Truncate(idx[0], 40)
	r2, _ := Open(ctx, store, testPassword, testOptions())
	if err := r2.LoadIndex(ctx); core.KindOf(err) != core.KindCorrupt || !strings.Contains(err.Error(), "index") {
		t.Fatalf("truncated index: %v", err)
	}
}

func TestForgetAndPrune(t *testing.T) {
	ctx := context.Background()
	r, store, _ := localRepo(t)
	img := filepath.Join(t.TempDir(), "img.raw")
	var ms []*format.Manifest
	var imgs [][]byte
	for i := range 4 {
		imgs = append(imgs, writeImage(t, img, 8<<20, uint64(100+i)))
		ms = append(ms, backupImageFile(t, reopen(t, store), img))
	}
	before := storeSize(t, store)
	r = reopen(t, store)
	if err := r.Forget(ctx, []string{ms[1].ID, ms[2].ID}); err != nil {
		t.Fatal(err)
	}
	res, err := r.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksDeleted+res.PacksRepacked == 0 || res.BytesFreed == 0 {
		t.Fatalf("prune freed nothing: %+v", res)
	}
	after := storeSize(t, store)
	if after >= before {
		t.Fatalf("repository did not shrink: %d -> %d", before, after)
	}
	r = reopen(t, store)
	v, err := r.Verify(ctx, VerifyOptions{ReadDataPercent: 100})
	if err != nil || !v.OK() || v.Unreferenced != 0 {
		t.Fatalf("verify after prune: %+v %v", v, err)
	}
	for _, i := range []int{0, 3} {
		got, err := restoreBytes(t, r, ms[i])
		if err != nil || !bytes.Equal(got, imgs[i]) {
			t.Fatalf("backup %d after prune: %v", i, err)
		}
	}
	// A second prune has nothing to do.
	res, err = r.Prune(ctx, PruneOptions{})
	if err != nil || res.PacksDeleted+res.PacksRepacked+res.PacksLeftover != 0 {
		t.Fatalf("second prune: %+v %v", res, err)
	}
}

func TestPruneStopsOnMissingBlob(t *testing.T) {
	ctx := context.Background()
	r, store, dir := localRepo(t)
	img := filepath.Join(t.TempDir(), "img.raw")
	writeImage(t, img, 3<<20, 9)
	backupImageFile(t, r, img)
	idx, _ := filepath.Glob(filepath.Join(dir, "index", "*"))
	for _, p := range idx {
		os.Remove(p)
	}
	before := storeSize(t, store)
	_, err := reopen(t, store).Prune(ctx, PruneOptions{})
	if core.KindOf(err) != core.KindCorrupt || !strings.Contains(err.Error(), "changed nothing") {
		t.Fatalf("prune with an unindexed used blob: %v", err)
	}
	if storeSize(t, store) != before {
		t.Fatal("prune changed the repository")
	}
}

func TestLocks(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t)
	shared, err := r.Lock(ctx, false, "backup")
	if err != nil {
		t.Fatal(err)
	}
	shared2, err := r.Lock(ctx, false, "backup")
	if err != nil {
		t.Fatalf("two shared locks: %v", err)
	}
	_, err = r.Lock(ctx, true, "prune")
	if core.CodeOf(err) != "locked" || !strings.Contains(err.Error(), `"backup"`) {
		t.Fatalf("exclusive over shared: %v", err)
	}
	shared.Release()
	shared2.Release()
	ex, err := r.Lock(ctx, true, "prune")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lock(ctx, false, "backup"); core.CodeOf(err) != "locked" {
		t.Fatalf("shared over exclusive: %v", err)
	}
	ex.Release()
	// A lock of a process that is gone is stale.
	l := &format.Lock{Version: 1, Exclusive: true, Host: hostname(), PID: deadPID(t), Command: "prune", Time: time.Now(), Refreshed: time.Now()}
	r.writeLock(ctx, format.LockPrefix+"dead", l)
	got, err := r.Lock(ctx, false, "backup")
	if err != nil {
		t.Fatalf("stale exclusive lock blocks: %v", err)
	}
	got.Release()
	removed, err := r.Unlock(ctx, false)
	if err != nil || len(removed) != 1 || removed[0] != "dead" {
		t.Fatalf("unlock: %v %v", removed, err)
	}
}

// deadPID returns the pid of a process that has exited.
func deadPID(t testing.TB) int {
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	return p.Pid
}

// TestFaultsAndLaggingLists runs backup, restore and verify through a store
// whose calls fail transiently (hidden by Retry) and whose listings lag.
func TestFaultsAndLaggingLists(t *testing.T) {
	ctx := context.Background()
	_, base := newTestRepo(t)
	faulty := &blob.Faulty{Store: base, FailEvery: 3, Ops: blob.OpSave | blob.OpLoad}
	store := &blob.DelayedList{Store: blob.Retry(faulty, blob.RetryPolicy{Attempts: 10, Initial: time.Millisecond, Max: 5 * time.Millisecond}), Delay: time.Hour}
	r, err := Open(ctx, store, testPassword, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img.raw")
	want := writeImage(t, img, 5<<20, 11)
	m := backupImageFile(t, r, img)
	if faulty.Injected() == 0 {
		t.Fatal("no faults were injected")
	}
	// The index lists nothing yet (listing lags): restore still works from
	// the index this process holds, and LoadManifest does not list.
	m2, err := r.LoadManifest(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := restoreBytes(t, r, m2)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("restore through faults: %v", err)
	}
	// A second backup that cannot list the first one's index stores
	// duplicates, never a broken backup.
	r2, _ := Open(ctx, store, testPassword, testOptions())
	if err := r2.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	m3 := backupImageFile(t, r2, img)
	got, err = restoreBytes(t, r2, m3)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("restore of the second backup: %v", err)
	}
	// Once listings catch up, everything verifies.
	v, err := reopen(t, base).Verify(ctx, VerifyOptions{ReadDataPercent: 100})
	if err != nil || !v.OK() {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// TestS3 runs the engine against a real S3 server.
func TestS3(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartS3(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	loc := "s3:http://" + srv.Endpoint + "/" + srv.Bucket + "/repo"
	store, err := location.Open(ctx, loc, location.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r, err := Init(ctx, store, testPassword, InitOptions{}, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img.raw")
	want := writeImage(t, img, 10<<20, 12)
	m1 := backupImageFile(t, r, img)
	writeImage(t, img, 10<<20, 13)
	m2 := backupImageFile(t, reopen(t, store), img)
	r = reopen(t, store)
	got, err := restoreBytes(t, r, m1)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("restore from S3: %v", err)
	}
	if err := r.Forget(ctx, []string{m2.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := reopen(t, store).Verify(ctx, VerifyOptions{ReadDataPercent: 100})
	if err != nil || !v.OK() || v.Backups != 1 {
		t.Fatalf("verify on S3: %+v %v", v, err)
	}
	// Refused credentials: a clear error, not a hang.
	bad, err := location.Open(ctx, loc, location.Options{AccessKey: "nobody", SecretKey: "wrong-secret-key"})
	if err == nil {
		_, err = ReadConfig(ctx, bad)
		bad.Close()
	}
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("refused credentials: %v", err)
	}
	t.Logf("refused credentials: %v", err)
}

// TestKeyCache: a cached key opens the repository without its key file
// being unlocked again; a wrong password is refused all the same; a key
// removed from the repository no longer opens it, cached or not.
func TestKeyCache(t *testing.T) {
	ctx := context.Background()
	r, store := newTestRepo(t)
	id2, err := r.AddKey(ctx, []byte("second"))
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	opts.Keys = &KeyCache{}
	for range 2 {
		if _, err := Open(ctx, store, testPassword, opts); err != nil {
			t.Fatal(err)
		}
	}
	if len(opts.Keys.m) != 1 {
		t.Fatalf("cache holds %d keys, want 1", len(opts.Keys.m))
	}
	if _, err := Open(ctx, store, []byte("wrong"), opts); core.KindOf(err) != core.KindUnauthorized {
		t.Fatalf("wrong password with a cache: %v", err)
	}
	r2, err := Open(ctx, store, []byte("second"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.RemoveKey(ctx, r.KeyID()); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, store, testPassword, opts); core.KindOf(err) != core.KindUnauthorized {
		t.Fatalf("a removed key still opens from the cache: %v", err)
	}
	_ = id2
}

// TestLockExclusionWithoutSettle: on a local directory (which lists
// consistently, so no settle wait is made) many openers racing for the
// exclusive lock never hold it two at a time, and each gets it in the end.
func TestLockExclusionWithoutSettle(t *testing.T) {
	ctx := context.Background()
	_, store, _ := localRepo(t)
	if !blob.ListsConsistently(store) {
		t.Fatal("a local store does not promise consistent listings")
	}
	var holders, most atomic.Int32
	var g errgroup.Group
	for range 4 {
		g.Go(func() error {
			opts := testOptions()
			opts.LockWait = time.Minute
			r, err := Open(ctx, store, testPassword, opts)
			if err != nil {
				return err
			}
			for range 3 {
				l, err := r.Lock(ctx, true, "prune")
				if err != nil {
					return err
				}
				n := holders.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(time.Millisecond)
				holders.Add(-1)
				if err := l.Release(); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if most.Load() != 1 {
		t.Fatalf("%d exclusive holders at once", most.Load())
	}
}
