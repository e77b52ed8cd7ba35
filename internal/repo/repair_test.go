package repo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/internal/repo/format"
)

// TestRepairBlobs flips a bit in a data pack, hands RepairBlobs the damaged
// blobs' content read from the source image, and checks that verify then
// passes, the backup restores byte for byte, and a prune keeps it so.
func TestRepairBlobs(t *testing.T) {
	ctx := context.Background()
	r, store, dir := localRepo(t)
	img := filepath.Join(t.TempDir(), "img.raw")
	want := writeImage(t, img, 6<<20, 5)
	m := backupImageFile(t, r, img)
	var data string
	for _, p := range packFiles(t, dir) {
		if fi, _ := os.Stat(p); data == "" || fi.Size() > mustSize(data) {
			data = p
		}
	}
	b, _ := os.ReadFile(data)
	b[len(b)/3] ^= 0x04
	os.WriteFile(data, b, 0o600)
	r = reopen(t, store)
	res, err := r.Verify(ctx, VerifyOptions{ReadDataPercent: 100})
	if err != nil || res.OK() {
		t.Fatalf("the flipped bit is not found: %+v %v", res, err)
	}
	bad := map[format.ID]bool{}
	for _, p := range res.Problems {
		id, err := format.ParseID(p.Blob)
		if err != nil {
			t.Fatalf("problem without a blob: %+v", p)
		}
		bad[id] = true
	}
	// The good content, from the source, at the chunks that use the blobs.
	good := map[format.ID][]byte{}
	cs := int64(m.Image.ChunkSize)
	err = r.ImageChunks(ctx, m, func(idx int64, id format.ID) error {
		if bad[id] {
			end := min((idx+1)*cs, int64(len(want)))
			good[id] = bytes.Clone(want[idx*cs : end])
		}
		return nil
	})
	if err != nil || len(good) != len(bad) {
		t.Fatalf("chunks of the damaged blobs: %d of %d (%v)", len(good), len(bad), err)
	}
	// Wrong bytes are refused and change nothing.
	for id := range good {
		if err := r.RepairBlobs(ctx, map[format.ID][]byte{id: []byte("not the content")}); err == nil {
			t.Fatal("a repair with the wrong bytes was accepted")
		}
	}
	if err := r.RepairBlobs(ctx, good); err != nil {
		t.Fatal(err)
	}
	r = reopen(t, store)
	if res, err := r.Verify(ctx, VerifyOptions{ReadDataPercent: 100}); err != nil || !res.OK() {
		t.Fatalf("after repair: %+v %v", res, err)
	}
	if got, err := restoreBytes(t, r, m); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("restore after repair: %v (equal %v)", err, bytes.Equal(got, want))
	}
	if _, err := r.Prune(ctx, PruneOptions{MaxUnusedPercent: 1}); err != nil {
		t.Fatal(err)
	}
	r = reopen(t, store)
	if res, err := r.Verify(ctx, VerifyOptions{ReadDataPercent: 100}); err != nil || !res.OK() {
		t.Fatalf("after repair and prune: %+v %v", res, err)
	}
	if got, err := restoreBytes(t, r, m); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("restore after repair and prune: %v", err)
	}
}

// TestSegmentCacheNotUsedByVerify: segments a cache remembers are still
// read from the repository by verify, so damage to them is found.
func TestSegmentCacheNotUsedByVerify(t *testing.T) {
	ctx := context.Background()
	r, store, dir := localRepo(t)
	img := filepath.Join(t.TempDir(), "img.raw")
	writeImage(t, img, 6<<20, 9)
	backupImageFile(t, r, img)
	opts := testOptions()
	opts.Segments = &SegmentCache{}
	r2, err := Open(ctx, store, testPassword, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if len(opts.Segments.m) == 0 {
		t.Fatal("stats cached no segment")
	}
	// Damage the metadata pack (the smallest: segments, no data).
	var meta string
	for _, p := range packFiles(t, dir) {
		if meta == "" || mustSize(p) < mustSize(meta) {
			meta = p
		}
	}
	b, _ := os.ReadFile(meta)
	b[len(b)/4] ^= 0x20
	os.WriteFile(meta, b, 0o600)
	if res, err := r2.Verify(ctx, VerifyOptions{}); err == nil && res.OK() {
		t.Fatal("verify trusted the segment cache over the damaged pack")
	}
}

// TestSegmentCacheCopies: the cache keeps a copy of what it is given, so
// that the caller (a backup filling its segments) may go on changing it.
func TestSegmentCacheCopies(t *testing.T) {
	var c SegmentCache
	id := format.ID{1}
	in := []format.ID{{2}, {3}}
	c.put(id, in)
	in[0] = format.ID{9}
	if again := c.get(id); again[0] != (format.ID{2}) || again[1] != (format.ID{3}) {
		t.Fatalf("the cache's segment changed: %v", again)
	}
}
