package ext4

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/internal/fsimage/fsimagetest"
)

var (
	srcOnce sync.Once
	srcDir  string
	srcErr  string
)

// sourceTree returns the standard source tree (fsimagetest.MakeTree), built
// once per test binary in a directory removed by TestMain.
func sourceTree(t testing.TB) string {
	t.Helper()
	srcOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-ext4-src-")
		if err != nil {
			srcErr = err.Error()
			return
		}
		srcDir = filepath.Join(dir, "src")
		if err := os.Mkdir(srcDir, 0o755); err != nil {
			srcErr = err.Error()
			return
		}
		cleanups = append(cleanups, func() { fsimagetest.MakeWritable(dir); os.RemoveAll(dir) })
		fsimagetest.MakeTree(t, srcDir)
	})
	if srcErr != "" {
		t.Fatal(srcErr)
	}
	return srcDir
}

var cleanups []func()

func TestMain(m *testing.M) {
	code := m.Run()
	for _, c := range cleanups {
		c()
	}
	os.Exit(code)
}

// mkfs is fsimagetest.Mkfs.
func mkfs(t testing.TB, kind, src, size string, opts ...string) string {
	t.Helper()
	return fsimagetest.Mkfs(t, kind, src, size, opts...)
}

// openImage opens the image at p with Open.
func openImage(t testing.TB, p string) *FS {
	t.Helper()
	r, size := openFile(t, p)
	f, err := Open(r, size)
	if err != nil {
		t.Fatalf("Open(%s): %v", p, err)
	}
	return f
}

func openFile(t testing.TB, p string) (*os.File, int64) {
	t.Helper()
	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	fi, err := r.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return r, fi.Size()
}
