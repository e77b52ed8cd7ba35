package uncached_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/internal/uncached"
)

// writeFile writes n random bytes to a new file, synced and dropped from the
// page cache, and returns its path and bytes.
func writeFile(t *testing.T, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	p := filepath.Join(t.TempDir(), "image")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func TestReadAtReadsLikeOSFile(t *testing.T) {
	p, data := writeFile(t, 3<<20+123)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := uncached.New(f)
	for _, c := range []struct {
		off, n int64
		want   int
		err    error
	}{
		{0, 128 << 10, 128 << 10, nil},
		{1<<20 + 7, 1 << 20, 1 << 20, nil},
		{int64(len(data)) - 100, 4096, 100, io.EOF},
		{int64(len(data)), 10, 0, io.EOF},
		{int64(len(data)) + 5000, 10, 0, io.EOF},
	} {
		buf := make([]byte, c.n)
		n, err := u.ReadAt(buf, c.off)
		if n != c.want || !errors.Is(err, c.err) && !(c.err == nil && err == nil) {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v; want %d, %v", c.n, c.off, n, err, c.want, c.err)
			continue
		}
		if n > 0 && !bytes.Equal(buf[:n], data[c.off:c.off+int64(n)]) {
			t.Errorf("ReadAt(%d bytes at %d): wrong bytes", c.n, c.off)
		}
	}
	if _, err := u.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at a negative offset succeeded")
	}
}

// A file read through uncached is not left in the page cache (where the
// kernel supports it); a file that was cached stays cached.
func TestReadLeavesCacheAsItWas(t *testing.T) {
	p, data := writeFile(t, 8<<20)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := uncached.New(f)
	buf := make([]byte, len(data))
	if n, err := u.ReadAt(buf, 0); n != len(data) || err != nil || !bytes.Equal(buf, data) {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if !uncached.Supported(int(f.Fd())) {
		t.Logf("this kernel or file system refuses RWF_DONTCACHE: reads are ordinary reads")
		return
	}
	if cached, pages := testenv.CachedPages(t, p); cached > pages/10 {
		t.Errorf("%d of %d pages cached after an uncached read", cached, pages)
	}
	if _, err := f.ReadAt(buf, 0); err != nil { // an ordinary read caches it
		t.Fatal(err)
	}
	if _, err := u.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if cached, pages := testenv.CachedPages(t, p); cached < pages*9/10 {
		t.Errorf("%d of %d pages cached after an uncached read of a cached file, want them all", cached, pages)
	}
}

func TestPreadAtTheEnd(t *testing.T) {
	p, data := writeFile(t, 10000)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := uncached.NewFd(int(f.Fd()))
	buf := make([]byte, 8192)
	var got []byte
	for off := int64(0); ; {
		n, err := u.Pread(buf, off)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		got = append(got, buf[:n]...)
		off += int64(n)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, want the file's %d", len(got), len(data))
	}
	if n, err := u.Pread(buf, 1<<30); n != 0 || err != nil {
		t.Fatalf("Pread past the end: %d, %v; want 0, nil", n, err)
	}
}

// Where the kernel refuses RWF_DONTCACHE (tmpfs does: its files live in the
// page cache), reads fall back to ordinary ones and still read every byte.
func TestFallsBackWhereRefused(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "uncached-")
	if err != nil {
		t.Fatalf("a directory on tmpfs: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := bytes.Repeat([]byte("tmpfs "), 100000)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if uncached.Supported(int(f.Fd())) {
		t.Logf("tmpfs takes RWF_DONTCACHE on this kernel: the fallback is not reached")
	}
	u := uncached.New(f)
	for range 2 { // the first read finds out, the second reads the ordinary way
		buf := make([]byte, len(data)+10)
		n, err := u.ReadAt(buf, 0)
		if n != len(data) || !errors.Is(err, io.EOF) || !bytes.Equal(buf[:n], data) {
			t.Fatalf("ReadAt on tmpfs: %d bytes, %v; want %d and io.EOF", n, err, len(data))
		}
	}
	fd := uncached.NewFd(int(f.Fd()))
	if n, err := fd.Pread(make([]byte, 6), 6); n != 6 || err != nil {
		t.Fatalf("Pread on tmpfs: %d, %v", n, err)
	}
}
