package repo

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/internal/atomicfile"
)

// TestImageRoundTrip restores images of several sizes (empty, shorter than a
// block, a partial last chunk, over a hundred chunks) both into a plain file
// and through atomicfile.WriteBehind, as the commands restore.
func TestImageRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, store := newTestRepo(t)
	dir := t.TempDir()
	for _, size := range []int64{0, 1, 4095, 128<<10 + 17, 9 << 20, 21<<20 + 4097} {
		path := filepath.Join(dir, "img.raw")
		want := writeImage(t, path, size, uint64(size))
		src, done := rawSource(t, path)
		m, err := r.BackupImage(ctx, src, BackupInfo{Tags: []string{"t"}}, nil)
		done()
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		r2 := reopen(t, store)
		m2, err := r2.LoadManifest(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, behind := range []bool{false, true} {
			out := filepath.Join(dir, "out.raw")
			f, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(m2.Image.Size); err != nil {
				t.Fatal(err)
			}
			var w io.WriterAt = f
			var wb *atomicfile.WriteBehind
			if behind {
				wb = atomicfile.NewWriteBehind(f, 0)
				w = wb
			}
			if err := r2.RestoreImage(ctx, m2, w, nil); err != nil {
				t.Fatal(err)
			}
			if wb != nil {
				if err := wb.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			f.Close()
			got, _ := os.ReadFile(out)
			if !bytes.Equal(got, want) {
				t.Fatalf("size %d (write-behind %v): restored image differs", size, behind)
			}
		}
	}
}
