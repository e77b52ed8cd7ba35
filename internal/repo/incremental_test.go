package repo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/cairn-backup/cairn/internal/chunker"
	"github.com/cairn-backup/cairn/internal/qcow2"
	"github.com/cairn-backup/cairn/internal/repo/format"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// countingReaderAt counts the bytes read through it, independently of the
// engine's own counters.
type countingReaderAt struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

func runTool(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func chunkerExtents(es []qcow2.Extent) []chunker.Extent {
	out := make([]chunker.Extent, len(es))
	for i, e := range es {
		out[i] = chunker.Extent{Offset: e.Offset, Length: e.Length}
	}
	return out
}

// TestIncrementalFromQcow2Snapshots backs up a chain of qcow2 snapshots made
// by QEMU's tools after random writes, each backup incremental from the one
// before (ChangedClusters between the two snapshots), and checks that every
// backup restores exactly what qemu-img reads from its snapshot, that an
// incremental reads only the changed chunks (counted outside the engine),
// and that after forgetting the middle backups and pruning the first and
// last still restore.
func TestIncrementalFromQcow2Snapshots(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	ctx := context.Background()
	r, store := newTestRepo(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "vol.qcow2")
	const size = 48 << 20
	runTool(t, "qemu-img", "create", "-q", "-f", "qcow2", img, fmt.Sprint(size))
	rng := rand.New(rand.NewPCG(4, 2))
	write := func(n int) {
		args := []string{"-f", "qcow2"}
		if rng.IntN(2) == 0 {
			args = append(args, "-t", "writeback")
		}
		for range n {
			off := rng.Int64N(size-(512<<10)) &^ 511
			ln := (1 + rng.Int64N(512)) * 512
			switch rng.IntN(5) {
			case 0:
				args = append(args, "-c", fmt.Sprintf("write -z %d %d", off, ln))
			case 1:
				args = append(args, "-c", fmt.Sprintf("discard %d %d", off, ln))
			default:
				args = append(args, "-c", fmt.Sprintf("write -P %d %d %d", 1+rng.IntN(250), off, ln))
			}
		}
		runTool(t, "qemu-io", append(args, img)...)
	}
	expected := func(snap string) []byte {
		out := filepath.Join(dir, "want-"+snap+".raw")
		runTool(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-l", "snapshot.name="+snap, img, out)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(out)
		return b
	}
	restore := func(m *format.Manifest) []byte {
		out := filepath.Join(dir, "restored.raw")
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(out)
		defer f.Close()
		f.Truncate(m.Image.Size)
		if err := reopen(t, store).RestoreImage(ctx, m, f, nil); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		return b
	}
	type step struct {
		m    *format.Manifest
		snap string
		want []byte
	}
	var steps []step
	for round := range 6 {
		write(5 + rng.IntN(30))
		snap := fmt.Sprintf("s%d", round)
		runTool(t, "qemu-img", "snapshot", "-c", snap, img)
		im, err := qcow2.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		l, err := im.Snapshot(snap)
		if err != nil {
			t.Fatal(err)
		}
		ext, err := l.Extents()
		if err != nil {
			t.Fatal(err)
		}
		cr := &countingReaderAt{r: l}
		src := ImageSource{R: cr, Size: l.Size(), Extents: chunkerExtents(ext), Format: "qcow2", Path: img}
		var changedBytes int64
		if round > 0 {
			prev := steps[len(steps)-1]
			from, err := im.Snapshot(prev.snap)
			if err != nil {
				t.Fatal(err)
			}
			changed, err := qcow2.ChangedClusters(from, l)
			if err != nil {
				t.Fatal(err)
			}
			src.Base, src.Changed = prev.m, chunkerExtents(changed)
			for _, n := range changedChunks(src.Changed, &format.ImageManifest{Size: l.Size(), ChunkSize: r.cfg.ImageChunkSize, SegmentChunks: r.cfg.SegmentChunks}) {
				changedBytes += int64(n) * int64(r.cfg.ImageChunkSize)
			}
		}
		m, err := r.BackupImage(ctx, src, BackupInfo{}, nil)
		im.Close()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if round > 0 {
			if m.Parent != steps[len(steps)-1].m.ID {
				t.Fatalf("round %d: parent %q, want the previous backup", round, m.Parent)
			}
			if got := cr.n.Load(); got > changedBytes {
				t.Fatalf("round %d: read %d bytes from the image, more than the %d bytes of changed chunks", round, got, changedBytes)
			}
			t.Logf("round %d: read %d bytes of %d (changed chunks %d)", round, cr.n.Load(), size, changedBytes)
		}
		want := expected(snap)
		if got := restore(m); !bytes.Equal(got, want) {
			t.Fatalf("round %d: the backup of %s does not restore what qemu-img reads from it", round, snap)
		}
		steps = append(steps, step{m, snap, want})
	}
	// Every backup is whole: forget the middle ones, prune, restore the ends.
	var forget []string
	for _, s := range steps[1 : len(steps)-1] {
		forget = append(forget, s.m.ID)
	}
	if err := r.Forget(ctx, forget); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx, PruneOptions{MaxUnusedPercent: 1}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []step{steps[0], steps[len(steps)-1]} {
		if got := restore(s.m); !bytes.Equal(got, s.want) {
			t.Fatalf("after prune, the backup of %s no longer restores", s.snap)
		}
	}
	if res, err := reopen(t, store).Verify(ctx, VerifyOptions{ReadDataPercent: 100}); err != nil || len(res.Problems) != 0 {
		t.Fatalf("verify after prune: %v %+v", err, res)
	}
}

// TestIncrementalIgnoresForeignBase reads the whole image when the base
// backup has another size.
func TestIncrementalIgnoresForeignBase(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t)
	dir := t.TempDir()
	small := filepath.Join(dir, "small.raw")
	writeImage(t, small, 1<<20, 1)
	src, done := rawSource(t, small)
	base, err := r.BackupImage(ctx, src, BackupInfo{}, nil)
	done()
	if err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.raw")
	want := writeImage(t, big, 3<<20, 2)
	src, done = rawSource(t, big)
	defer done()
	src.Base, src.Changed = base, nil // "nothing changed", but base does not fit
	m, err := r.BackupImage(ctx, src, BackupInfo{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Parent != "" {
		t.Fatalf("parent %q: a base that does not fit is not a parent", m.Parent)
	}
	out := filepath.Join(dir, "out.raw")
	f, _ := os.Create(out)
	f.Truncate(m.Image.Size)
	if err := r.RestoreImage(ctx, m, f, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatal("restored image differs")
	}
}
