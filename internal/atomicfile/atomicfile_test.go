package atomicfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/internal/testenv"
)

func TestWriteReplacesWithMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	st, _ := os.Stat(p)
	if string(b) != "new" || st.Mode().Perm() != 0o600 {
		t.Fatalf("content %q mode %v", b, st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestWriteIntoMissingDirFails(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "no", "such", "file"), []byte("x"), 0o600)
	if err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestWriteBehindConcurrentWrites(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const piece, pieces = 4096, 256
	w := NewWriteBehind(f, 3*piece) // write-outs start every third piece
	done := make(chan error)
	for g := range 4 {
		go func() {
			for i := g; i < pieces; i += 4 {
				p := make([]byte, piece)
				for j := range p {
					p[j] = byte(i + j)
				}
				if _, err := w.WriteAt(p, int64(i)*piece); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	w.Stop() // a second stop is harmless
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != piece*pieces {
		t.Fatalf("file is %d bytes, want %d", len(b), piece*pieces)
	}
	for i := range pieces {
		for j := range piece {
			if b[i*piece+j] != byte(i+j) {
				t.Fatalf("byte %d of piece %d is %d, want %d", j, i, b[i*piece+j], byte(i+j))
			}
		}
	}
}

func TestWriteBehindReportsErrors(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriteBehind(f, 0)
	f.Close()
	if _, err := w.WriteAt([]byte("x"), 0); err == nil {
		t.Fatal("WriteAt on a closed file succeeded")
	}
	if err := w.Sync(); err == nil {
		t.Fatal("Sync of a closed file succeeded")
	}
}

// TestWriteBehindKeepsFlushErrors: a flush that fails in the background is
// what Sync reports, even if the final flush succeeds (the kernel reports a
// failed write-out once per open file).
func TestWriteBehindKeepsFlushErrors(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flushed := make(chan struct{}, 2)
	failed := false
	w := newWriteBehind(f, 4096, func() error {
		defer func() { flushed <- struct{}{} }()
		if !failed { // only the background flush runs before Sync
			failed = true
			return errors.New("write-out failed")
		}
		return nil
	})
	if _, err := w.WriteAt(make([]byte, 8192), 0); err != nil {
		t.Fatal(err)
	}
	<-flushed // the background flush the write started
	if err := w.Sync(); err == nil || err.Error() != "write-out failed" {
		t.Fatalf("Sync after a failed background flush: %v", err)
	}
}

// The write-behind's flushes drop what they wrote from the page cache: after
// Sync nothing of the file is left there, and its bytes read back whole.
func TestWriteBehindLeavesNothingCached(t *testing.T) {
	p := filepath.Join(t.TempDir(), "image")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := NewWriteBehind(f, 1<<20)
	chunk := bytes.Repeat([]byte{0xa5}, 128<<10)
	for off := int64(0); off < 8<<20; off += int64(len(chunk)) {
		if _, err := w.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if cached, pages := testenv.CachedPages(t, p); pages != 2048 || cached > pages/10 {
		t.Errorf("%d of %d pages still cached after Sync", cached, pages)
	}
	got, err := os.ReadFile(p)
	if err != nil || len(got) != 8<<20 || !bytes.Equal(got[len(got)-len(chunk):], chunk) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
}
