package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
)

const (
	mib  = int64(1) << 20
	tagA = "7b0a4c56-2d1e-4f3b-9a8c-111111111111"
	tagB = "7b0a4c56-2d1e-4f3b-9a8c-222222222222"
)

func TestCreateInfoSnapshotRoundTrip(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	img := filepath.Join(t.TempDir(), "v.qcow2")

	if err := Create(ctx, img, 16*mib); err != nil {
		t.Fatal(err)
	}
	if err := Create(ctx, img, 16*mib); core.CodeOf(err) != "exists" {
		t.Fatalf("second Create: got %v, want an 'exists' conflict", err)
	}
	info, err := Info(ctx, img, false)
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.VirtualSize != 16*mib || info.ClusterSize != ClusterSize || len(info.Snapshots) != 0 || info.Corrupt {
		t.Fatalf("fresh image info: %+v", info)
	}

	writeFile(t, img, "0xAB", "0", "64k")
	before := time.Now().Add(-2 * time.Second)
	if err := SnapshotCreate(ctx, img, tagA); err != nil {
		t.Fatal(err)
	}
	writeFile(t, img, "0xCD", "0", "64k")
	if readFile(t, img, "qcow2", "0xAB", "0", "64k") {
		t.Fatal("the active layer still reads the old bytes after a write")
	}

	info, err = Info(ctx, img, false)
	if err != nil {
		t.Fatal(err)
	}
	s := info.Snapshot(tagA)
	if len(info.Snapshots) != 1 || s == nil {
		t.Fatalf("snapshots after create: %+v", info.Snapshots)
	}
	if s.ID != "1" || s.VirtualSize != 16*mib || s.Date.Before(before) || s.Date.After(time.Now().Add(2*time.Second)) {
		t.Fatalf("snapshot info: %+v", s)
	}

	if err := SnapshotApply(ctx, img, tagA); err != nil {
		t.Fatal(err)
	}
	if !readFile(t, img, "qcow2", "0xAB", "0", "64k") {
		t.Fatal("apply did not restore the snapshot's bytes")
	}

	if err := SnapshotDelete(ctx, img, tagA); err != nil {
		t.Fatal(err)
	}
	if info, err = Info(ctx, img, false); err != nil || len(info.Snapshots) != 0 {
		t.Fatalf("after delete: %+v, %v", info, err)
	}
	err = SnapshotDelete(ctx, img, tagA)
	if !core.IsNotFound(err) || !strings.Contains(err.Error(), "qemu-img snapshot -d: Could not delete snapshot") {
		t.Fatalf("deleting a missing tag: got %v, want not found with qemu-img's message", err)
	}
	if err := SnapshotApply(ctx, img, tagA); err == nil || !strings.HasPrefix(err.Error(), "qemu-img snapshot -a: ") {
		t.Fatalf("applying a missing tag: got %v", err)
	}
	if err := SnapshotCreate(ctx, img, "12"); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("numeric tag: got %v, want invalid", err)
	}
}

func TestInfoOfMissingFileHasToolMessage(t *testing.T) {
	requireQEMU(t)
	_, err := Info(testCtx(t), filepath.Join(t.TempDir(), "nope.qcow2"), false)
	var te *ToolError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "qemu-img info: Could not open") {
		t.Fatalf("got %v", err)
	}
}

func TestResizeGrowsAndApplyRestoresSize(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	img := filepath.Join(t.TempDir(), "v.qcow2")
	if err := Create(ctx, img, 8*mib); err != nil {
		t.Fatal(err)
	}
	if err := SnapshotCreate(ctx, img, tagA); err != nil {
		t.Fatal(err)
	}
	if err := Resize(ctx, img, 24*mib); err != nil {
		t.Fatal(err)
	}
	if err := Resize(ctx, img, 4*mib); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("shrink: got %v, want invalid", err)
	}
	if err := Resize(ctx, img, 24*mib); err != nil {
		t.Fatalf("same size: %v", err)
	}
	info, err := Info(ctx, img, false)
	if err != nil || info.VirtualSize != 24*mib {
		t.Fatalf("after grow: %+v %v", info, err)
	}
	if s := info.Snapshot(tagA); s == nil || s.VirtualSize != 8*mib {
		t.Fatalf("snapshot should record the size it was taken at: %+v", info.Snapshots)
	}
	if err := SnapshotApply(ctx, img, tagA); err != nil {
		t.Fatal(err)
	}
	if info, err = Info(ctx, img, false); err != nil || info.VirtualSize != 8*mib {
		t.Fatalf("apply should restore the snapshot's size: %+v %v", info, err)
	}
}

func TestCheckReportsCorruption(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	img := filepath.Join(t.TempDir(), "v.qcow2")
	if err := Create(ctx, img, 8*mib); err != nil {
		t.Fatal(err)
	}
	writeFile(t, img, "0xAB", "0", "256k")
	res, err := Check(ctx, img, false)
	if err != nil || !res.Clean() {
		t.Fatalf("fresh image check: %+v %v", res, err)
	}

	// Zero the first refcount block: every cluster in use then has
	// refcount 0 while referenced, which qemu-img check reports.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [56]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		t.Fatal(err)
	}
	var entry [8]byte
	if _, err := f.ReadAt(entry[:], int64(binary.BigEndian.Uint64(hdr[48:56]))); err != nil {
		t.Fatal(err)
	}
	block := int64(binary.BigEndian.Uint64(entry[:]))
	if _, err := f.WriteAt(make([]byte, 64), block); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()

	res, err = Check(ctx, img, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Clean() || res.Corruptions == 0 || len(res.Messages) == 0 || !strings.Contains(res.Messages[0], "refcount=0") {
		t.Fatalf("check of a corrupted image: %+v", res)
	}
}

func TestInfoReportsCorruptFlag(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	img := filepath.Join(t.TempDir(), "v.qcow2")
	if err := Create(ctx, img, 8*mib); err != nil {
		t.Fatal(err)
	}
	// Incompatible feature bit 1 is qcow2's "corrupt" flag.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var feat [8]byte
	binary.BigEndian.PutUint64(feat[:], 2)
	if _, err := f.WriteAt(feat[:], 72); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	info, err := Info(ctx, img, false)
	if err != nil || !info.Corrupt {
		t.Fatalf("info: %+v %v", info, err)
	}
	err = SnapshotCreate(ctx, img, tagA)
	if core.KindOf(err) != core.KindCorrupt || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("writing to a corrupt image: got %v, want a corrupt error with qemu's message", err)
	}
}

func TestConvertForeignFormats(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.qcow2")
	if err := Create(ctx, src, 32*mib); err != nil {
		t.Fatal(err)
	}
	writeFile(t, src, "0xAB", "1M", "1M")
	for _, tc := range []struct{ format, given string }{{"vmdk", ""}, {"vhdx", "vhdx"}} {
		t.Run(tc.format, func(t *testing.T) {
			foreign := filepath.Join(dir, "src."+tc.format)
			if out, err := exec.Command("qemu-img", "convert", "-O", tc.format, src, foreign).CombinedOutput(); err != nil {
				t.Fatalf("making %s: %v\n%s", tc.format, err, out)
			}
			dst := filepath.Join(dir, "from-"+tc.format+".qcow2")
			var mu sync.Mutex
			var calls int
			var last, total int64
			err := Convert(ctx, ConvertRequest{Source: foreign, SourceFormat: tc.given, Dest: dst}, func(d, tot int64) {
				mu.Lock()
				defer mu.Unlock()
				if d < last {
					t.Errorf("progress went back: %d after %d", d, last)
				}
				calls, last, total = calls+1, d, tot
			})
			if err != nil {
				t.Fatal(err)
			}
			if calls == 0 || total != 32*mib || last != total {
				t.Fatalf("progress: %d calls, last %d of %d", calls, last, total)
			}
			info, err := Info(ctx, dst, false)
			if err != nil || info.Format != "qcow2" || info.ClusterSize != ClusterSize || info.VirtualSize != 32*mib {
				t.Fatalf("converted image: %+v %v", info, err)
			}
			if info.ActualSize > 8*mib {
				t.Fatalf("output is not sparse: %d bytes allocated", info.ActualSize)
			}
			if !readFile(t, dst, "qcow2", "0xAB", "1M", "1M") || !readFile(t, dst, "qcow2", "0", "0", "1M") {
				t.Fatal("converted bytes differ")
			}
		})
	}
	if err := Convert(ctx, ConvertRequest{Source: src, Dest: filepath.Join(dir, "from-vmdk.qcow2")}, nil); core.CodeOf(err) != "exists" {
		t.Fatalf("convert onto an existing file: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.vmdk")
	if err := os.WriteFile(garbage, []byte("# Disk DescriptorFile\nnot really\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "never.qcow2")
	err := Convert(ctx, ConvertRequest{Source: garbage, SourceFormat: "vmdk", Dest: dst}, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "qemu-img convert: ") {
		t.Fatalf("convert of garbage: %v", err)
	}
	if _, serr := os.Stat(dst); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("a failed convert left %s behind", dst)
	}
}

func TestConvertCancelRemovesPartialOutput(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "big.raw")
	// 256 MiB of non-zero data: far more than qemu-img copies in the moment
	// between its first progress report and the kill.
	if err := os.WriteFile(src, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src, 256*mib); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, "-f", "raw", "-c", "write -P 0x5A 0 256M", src)

	dst := filepath.Join(dir, "out.qcow2")
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	start := time.Now()
	err := Convert(cctx, ConvertRequest{Source: src, SourceFormat: "raw", Dest: dst}, func(done, total int64) {
		once.Do(cancel) // cancel as soon as qemu-img reports it started
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("cancel took %v", time.Since(start))
	}
	if _, serr := os.Stat(dst); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("cancelled convert left %s behind", dst)
	}
}
