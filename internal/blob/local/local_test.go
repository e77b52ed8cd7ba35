package local_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/blob/blobtest"
	"github.com/cairn-backup/cairn/internal/blob/local"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/testenv"
)

func open(t *testing.T, dir string) *local.Store {
	t.Helper()
	s, err := local.Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return open(t, filepath.Join(t.TempDir(), "repo")) })
}

func TestOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if _, err := local.Open(dir, false); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("Open of a missing directory: %v; want kind NotFound", err)
	}
	s := open(t, dir)
	if s.Root() != dir {
		t.Fatalf("Root = %s, want %s", s.Root(), dir)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := local.Open(file, true); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("Open of a file: %v; want kind Invalid", err)
	}
}

// A crash in the middle of a Save leaves a temporary file: List ignores it,
// the object does not exist, and RemoveTemp deletes it once it is old.
func TestTempFilesFromCrashes(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	if err := blob.SaveBytes(ctx, s, "data/ab/abcd", []byte("whole")); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(s.Root(), "data", "ab", ".tmp-abce-12345")
	if err := os.WriteFile(leftover, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := s.List(ctx, "", func(i blob.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "data/ab/abcd" {
		t.Fatalf("List = %v; want only data/ab/abcd", names)
	}
	if n, err := s.RemoveTemp(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("RemoveTemp of a fresh temp file: %d, %v; want 0 (it may belong to a running Save)", n, err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(leftover, old, old); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RemoveTemp(ctx, time.Hour); err != nil || n != 1 {
		t.Fatalf("RemoveTemp: %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover still there: %v", err)
	}
	// Failed Saves leave no temporary file behind.
	_ = s.Save(ctx, "data/ab/short", bytes.NewReader([]byte("abc")), 10)
	ents, _ := os.ReadDir(filepath.Join(s.Root(), "data", "ab"))
	if len(ents) != 1 {
		t.Fatalf("after a failed Save the directory holds %d entries; want 1", len(ents))
	}
}

func TestModes(t *testing.T) {
	s := open(t, t.TempDir())
	if err := blob.SaveBytes(context.Background(), s, "keys/k1", []byte("secret-ish")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(s.Root(), "keys", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("object mode %v; want 0600", fi.Mode().Perm())
	}
}

// TestFullDisk saves into a 1 MiB tmpfs (mounted in a private mount
// namespace by unshare, so nothing leaks when the test dies): the Save that
// does not fit fails with an error naming the object and wrapping ENOSPC,
// and leaves neither the object nor a temporary file. It needs root, as
// every test machine of this project has.
func TestFullDisk(t *testing.T) {
	if dir := os.Getenv("CAIRN_FULL_DISK_DIR"); dir != "" {
		fullDiskChild(t, dir)
		return
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("unshare (util-linux) not found: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("TestFullDisk mounts a small tmpfs and needs root (test machines run as root)")
	}
	dir := t.TempDir()
	script := `mount -t tmpfs -o size=1m tmpfs "$1" && exec "$2" -test.run='^TestFullDisk$' -test.v`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", dir, os.Args[0])
	cmd.Env = append(os.Environ(), "CAIRN_FULL_DISK_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestFullDisk")) {
		t.Fatalf("full-disk child: %v\n%s", err, out)
	}
}

func fullDiskChild(t *testing.T, dir string) {
	ctx := context.Background()
	s := open(t, dir)
	small := blobtest.Data(1, 100<<10)
	if err := blob.SaveBytes(ctx, s, "data/00/small", small); err != nil {
		t.Fatalf("a small Save on the tmpfs: %v", err)
	}
	big := blobtest.Data(2, 2<<20)
	err := blob.SaveBytes(ctx, s, "data/01/big", big)
	if err == nil {
		t.Fatal("a 2 MiB Save into a 1 MiB file system succeeded")
	}
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "data/01/big") || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("full disk error %q: want ENOSPC, the object's name and a plain explanation", err)
	}
	t.Logf("full disk: %v", err)
	if _, err := s.Stat(ctx, "data/01/big"); !blob.IsNotExist(err) {
		t.Fatalf("Stat after a full-disk Save: %v; want IsNotExist", err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "data", "01"))
	if len(ents) != 0 {
		t.Fatalf("temporary files left after a full-disk Save: %v", ents)
	}
	got, err := blob.LoadAll(ctx, s, "data/00/small")
	if err != nil || !bytes.Equal(got, small) {
		t.Fatalf("the earlier object after a full disk: %v", err)
	}
	// The space is back: the same Save of a smaller object works.
	if err := blob.SaveBytes(ctx, s, "data/01/big", big[:200<<10]); err != nil {
		t.Fatalf("Save after the failure: %v", err)
	}
}

// BenchmarkSaveLoad32MiB reports the throughput of saving (with fsync) and
// loading 32 MiB objects in a directory of the test machine's disk.
func BenchmarkSaveLoad32MiB(b *testing.B) {
	s, err := local.Open(b.TempDir(), true)
	if err != nil {
		b.Fatal(err)
	}
	blobtest.BenchmarkSaveLoad(b, s, 32<<20)
}

// A large object leaves the page cache once it is on disk; a small one
// (an index object, a manifest) stays for the reads that follow.
func TestSaveDropsLargeObjectsFromCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	s := open(t, dir)
	ctx := context.Background()
	large := bytes.Repeat([]byte("pack "), 1<<20) // 5 MiB
	small := bytes.Repeat([]byte("index "), 1000)
	if err := blob.SaveBytes(ctx, s, "data/aa/large", large); err != nil {
		t.Fatal(err)
	}
	if err := blob.SaveBytes(ctx, s, "index/small", small); err != nil {
		t.Fatal(err)
	}
	if cached, pages := testenv.CachedPages(t, filepath.Join(dir, "data", "aa", "large")); pages == 0 || cached > pages/10 {
		t.Errorf("large object: %d of %d pages still cached after Save", cached, pages)
	}
	if cached, pages := testenv.CachedPages(t, filepath.Join(dir, "index", "small")); cached != pages {
		t.Errorf("small object: %d of %d pages cached after Save, want all", cached, pages)
	}
	got, err := blob.LoadAll(ctx, s, "data/aa/large")
	if err != nil || !bytes.Equal(got, large) {
		t.Fatalf("the large object read back: %d bytes, %v", len(got), err)
	}
}
