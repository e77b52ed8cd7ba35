package repo

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/internal/repo/format"
)

// TestStatsOnlyBytes: the bytes only one backup holds, against a count
// made here from each backup's segments and chunks: two identical backups
// hold nothing alone, a changed third holds its changed chunks and the
// segments that list them.
func TestStatsOnlyBytes(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "a.raw")
	data := writeImage(t, img, 6<<20, 3)
	a := backupImageFile(t, r, img)
	b := backupImageFile(t, r, img)
	for off := 1 << 20; off < len(data); off += 2 << 20 {
		data[off] ^= 0xff
	}
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c := backupImageFile(t, r, img)
	backups := []*format.Manifest{a, b, c}
	users := map[format.ID]map[int]bool{}
	for i, m := range backups {
		use := func(id format.ID) {
			if id.IsZero() {
				return
			}
			if users[id] == nil {
				users[id] = map[int]bool{}
			}
			users[id][i] = true
		}
		for _, sid := range m.Image.Segments {
			use(sid)
		}
		if err := r.ImageChunks(ctx, m, func(_ int64, id format.ID) error { use(id); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]int64{}
	for id, us := range users {
		if len(us) != 1 {
			continue
		}
		for i := range us {
			loc, ok := r.Lookup(id)
			if !ok {
				t.Fatalf("blob %s not indexed", id.Short())
			}
			want[backups[i].ID] += int64(loc.Length)
		}
	}
	if want[a.ID] != 0 || want[b.ID] != 0 || want[c.ID] == 0 {
		t.Fatalf("the test's own count is off: %v", want)
	}
	st, err := r.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, pb := range st.PerBackup {
		if pb.OnlyBytes != want[pb.ID] {
			t.Errorf("backup %s: only_bytes %d, want %d", pb.ID, pb.OnlyBytes, want[pb.ID])
		}
	}
	if len(st.PerBackup) != 3 {
		t.Fatalf("%d backups in the stats", len(st.PerBackup))
	}
}
