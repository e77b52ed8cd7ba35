package repo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestImageRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, store := newTestRepo(t)
	dir := t.TempDir()
	for _, size := range []int64{0, 1, 4095, 128<<10 + 17, 9 << 20} {
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
		out := filepath.Join(dir, "out.raw")
		f, _ := os.Create(out)
		f.Truncate(m2.Image.Size)
		if err := r2.RestoreImage(ctx, m2, f, nil); err != nil {
			t.Fatal(err)
		}
		f.Close()
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, want) {
			t.Fatalf("size %d: restored image differs", size)
		}
	}
}
