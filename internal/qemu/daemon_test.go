package qemu

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// startDaemon starts a storage daemon on a fresh image and stops it at the
// end of the test.
func startDaemon(t *testing.T, ctx context.Context, cfg DaemonConfig) *StorageDaemon {
	t.Helper()
	sd, err := StartStorageDaemon(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sd.Stop(context.Background()) })
	return sd
}

func newImage(t *testing.T, ctx context.Context, dir string, size int64) string {
	t.Helper()
	img := filepath.Join(dir, "v.qcow2")
	if err := Create(ctx, img, size); err != nil {
		t.Fatal(err)
	}
	return img
}

func nbdSize(t *testing.T, uri string) int64 { return testenv.NBDSize(t, uri) }

// TestStorageDaemonSnapshotWhileWriting is the live-export story: a writer
// keeps writing through NBD while a snapshot is taken through QMP; the
// snapshot holds exactly what was written before it, and the daemon comes
// back on the same URI after a stop.
func TestStorageDaemonSnapshotWhileWriting(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	dir := shortTempDir(t)
	img := newImage(t, ctx, dir, 32*mib)
	runDir := filepath.Join(dir, "run")
	sd := startDaemon(t, ctx, DaemonConfig{Image: img, RunDir: runDir, ID: "vol-1", ExportName: "live-x", Writable: true})
	if want := "nbd://127.0.0.1:" + strconv.Itoa(sd.Port()) + "/live-x"; sd.URI() != want {
		t.Fatalf("URI %s, want %s", sd.URI(), want)
	}
	if pid, ok := readPid(filepath.Join(runDir, "vol-1.pid")); !ok || pid != sd.Pid() {
		t.Fatalf("pidfile holds %d, daemon is %d", pid, sd.Pid())
	}
	if _, err := os.Stat(filepath.Join(runDir, "vol-1.qmp")); err != nil {
		t.Fatal(err)
	}

	writeNBD(t, sd.URI(), "0xAB", "0", "1M")

	// A background writer rewrites another range in a loop.
	stop := make(chan struct{})
	var writes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			out, err := exec.Command("qemu-io", "-f", "raw", "-t", "writeback", "-c", "write -P 0x"+strconv.FormatInt(int64(0x10+i%64), 16)+" 8M 4M", sd.URI()).CombinedOutput()
			if err != nil {
				t.Errorf("background writer: %v\n%s", err, out)
				return
			}
			writes.Add(1)
		}
	}()
	for writes.Load() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	if err := sd.SnapshotCreate(ctx, tagA); err != nil {
		t.Fatal(err)
	}
	for n := writes.Load(); writes.Load() < n+2; {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	writeNBD(t, sd.URI(), "0xEE", "0", "1M")

	// Info with -U sees the new snapshot while the daemon runs.
	info, err := Info(ctx, img, true)
	if err != nil || info.Snapshot(tagA) == nil {
		t.Fatalf("shared info: %+v %v", info, err)
	}

	port := sd.Port()
	if err := sd.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sd.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	for _, f := range []string{"vol-1.pid", "vol-1.qmp"} {
		if _, err := os.Stat(filepath.Join(runDir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left after Stop", f)
		}
	}
	if !strings.Contains(snapshotList(t, img), tagA) {
		t.Fatal("qemu-img snapshot -l does not list the tag")
	}
	if res, err := Check(ctx, img, false); err != nil || !res.Clean() {
		t.Fatalf("image after stop: %+v %v", res, err)
	}

	ss, err := StartSnapshotServer(ctx, SnapshotServerConfig{Image: img, Tag: tagA, RunDir: runDir, ID: "snap-1", ExportName: "snap-x"})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Stop(ctx)
	if !readNBD(t, ss.URI(), "0xAB", "0", "1M") {
		t.Fatal("the snapshot does not hold the bytes written before it")
	}
	// The writer's range holds one whole write in the snapshot: all 4 MiB
	// carry the same byte.
	consistent := false
	for i := 0; i < 64 && !consistent; i++ {
		consistent = patternMatches(t, "-r", "-f", "raw", "-c", "read -P 0x"+strconv.FormatInt(int64(0x10+i), 16)+" 8M 4M", ss.URI())
	}
	if !consistent {
		t.Fatal("the snapshot holds a torn write")
	}
	if err := ss.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// Back on exactly the same port and name.
	sd2 := startDaemon(t, ctx, DaemonConfig{Image: img, RunDir: runDir, ID: "vol-1", Port: port, ExportName: "live-x", Writable: false})
	if sd2.Port() != port {
		t.Fatalf("restarted on %d, want %d", sd2.Port(), port)
	}
	if !readNBD(t, sd2.URI(), "0xEE", "0", "1M") {
		t.Fatal("writes made after the snapshot were lost")
	}
	// Read-only export: writes refused, snapshots still possible.
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write 0 64k", sd2.URI()).CombinedOutput(); err == nil && !strings.Contains(string(out), "failed") {
		t.Fatalf("a read-only export accepted a write: %s", out)
	}
	if err := sd2.SnapshotCreate(ctx, tagB); err != nil {
		t.Fatal(err)
	}
	if err := sd2.SnapshotDelete(ctx, tagB); err != nil {
		t.Fatal(err)
	}
	if err := sd2.SnapshotDelete(ctx, tagB); !core.IsNotFound(err) {
		t.Fatalf("deleting a missing tag through QMP: got %v, want not found", err)
	}
}

func TestStorageDaemonResizeAndFlush(t *testing.T) {
	requireQEMU(t)
	testenv.RequireTool(t, "nbdcopy")
	ctx := testCtx(t)
	dir := shortTempDir(t)
	img := newImage(t, ctx, dir, 16*mib)
	sd := startDaemon(t, ctx, DaemonConfig{Image: img, RunDir: filepath.Join(dir, "run"), ID: "v", ExportName: "e", Writable: true})

	if err := sd.Resize(ctx, 8*mib); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("shrink: %v", err)
	}
	if err := sd.Resize(ctx, 48*mib); err != nil {
		t.Fatal(err)
	}
	if n := nbdSize(t, sd.URI()); n != 48*mib {
		t.Fatalf("export size after resize: %d", n)
	}
	writeNBD(t, sd.URI(), "0x42", "40M", "1M")

	// nbdcopy does not flush unless asked: after Flush the file holds the
	// write, metadata included, whatever the daemon cached.
	raw := filepath.Join(dir, "in.raw")
	if err := os.WriteFile(raw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, 48*mib); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, "-f", "raw", "-c", "write -P 0x77 20M 64k", "-c", "write -P 0x42 40M 1M", raw)
	if out, err := exec.Command("nbdcopy", raw, sd.URI()).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy: %v\n%s", err, out)
	}
	if err := sd.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !readFile(t, img, "qcow2", "0x77", "20M", "64k") {
		t.Fatal("after Flush the image file does not hold the write")
	}
}

func TestStorageDaemonRestartWaitsForPort(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	dir := shortTempDir(t)
	img := newImage(t, ctx, dir, 8*mib)
	port := testenv.FreePort(t)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(500*time.Millisecond, func() { l.Close() })
	sd := startDaemon(t, ctx, DaemonConfig{Image: img, RunDir: filepath.Join(dir, "run"), ID: "v", Port: port, ExportName: "e"})
	if sd.Port() != port {
		t.Fatalf("port %d, want %d", sd.Port(), port)
	}
	if n := nbdSize(t, sd.URI()); n != 8*mib {
		t.Fatalf("size %d", n)
	}
}

func TestStorageDaemonStartErrors(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	dir := shortTempDir(t)
	_, err := StartStorageDaemon(ctx, DaemonConfig{Image: filepath.Join(dir, "missing.qcow2"), RunDir: dir, ID: "v", ExportName: "e"})
	if err == nil || !strings.Contains(err.Error(), "No such file or directory") {
		t.Fatalf("missing image: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "v.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("failed start left a pidfile")
	}
	img := newImage(t, ctx, dir, 8*mib)
	sd := startDaemon(t, ctx, DaemonConfig{Image: img, RunDir: dir, ID: "v", ExportName: "e"})
	// A second daemon on the same image is refused by QEMU's lock.
	_, err = StartStorageDaemon(ctx, DaemonConfig{Image: img, RunDir: dir, ID: "w", ExportName: "e"})
	if err == nil || !strings.Contains(err.Error(), "lock") {
		t.Fatalf("second daemon on one image: %v", err)
	}
	// Its port is taken and stays taken: a fixed port gives up after a while.
	defer func(d time.Duration) { bindRetry = d }(bindRetry)
	bindRetry = 300 * time.Millisecond
	_, err = StartStorageDaemon(ctx, DaemonConfig{Image: newImage(t, ctx, t.TempDir(), mib), RunDir: dir, ID: "x", Port: sd.Port(), ExportName: "e"})
	if err == nil || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("taken port: %v", err)
	}
}

// TestSnapshotServerBesideWritableDaemon serves a snapshot with qemu-nbd while
// qemu-storage-daemon holds the image writable and keeps changing it.
func TestSnapshotServerBesideWritableDaemon(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	dir := shortTempDir(t)
	img := newImage(t, ctx, dir, 16*mib)
	runDir := filepath.Join(dir, "run")
	sd := startDaemon(t, ctx, DaemonConfig{Image: img, RunDir: runDir, ID: "v", ExportName: "live", Writable: true})
	writeNBD(t, sd.URI(), "0xAB", "0", "1M")
	if err := sd.SnapshotCreate(ctx, tagA); err != nil {
		t.Fatal(err)
	}
	writeNBD(t, sd.URI(), "0xCD", "0", "1M")
	if err := sd.Resize(ctx, 32*mib); err != nil {
		t.Fatal(err)
	}

	ss, err := StartSnapshotServer(ctx, SnapshotServerConfig{Image: img, Tag: tagA, RunDir: runDir, ID: "s", ExportName: "snap"})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Stop(ctx)
	if pid, ok := readPid(filepath.Join(runDir, "s.pid")); !ok || pid != ss.Pid() {
		t.Fatalf("pidfile holds %d, server is %d", pid, ss.Pid())
	}
	// QEMU 7.2 exports a snapshot with the image's current size (see
	// SnapshotServer); the part past the snapshot's end reads as zeros.
	if n := nbdSize(t, ss.URI()); n != 32*mib {
		t.Fatalf("snapshot export size %d, want the image's current 32 MiB", n)
	}
	if !readNBD(t, ss.URI(), "0", "16M", "16M") {
		t.Fatal("past the snapshot's end should read zeros")
	}
	// Several clients at once (-e 0), each holding its connection open.
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.Command("qemu-io", "-r", "-f", "raw", "-c", "read -P 0xAB 0 1M", "-c", "sleep 300", "-c", "read -P 0xAB 0 1M", ss.URI()).CombinedOutput()
			if err != nil || strings.Contains(string(out), "failed") {
				t.Errorf("client %d: %v\n%s", i, err, out)
			}
		}()
	}
	wg.Wait()
	if !readNBD(t, sd.URI(), "0xCD", "0", "1M") {
		t.Fatal("live export changed")
	}

	// Convert reads the snapshot too while the daemon holds the image.
	out := filepath.Join(dir, "snap.raw")
	if err := Convert(ctx, ConvertRequest{Source: img, SourceFormat: "qcow2", SourceSnapshot: tagA, SourceShared: true, Dest: out, DestFormat: "raw"}, func(d, tot int64) {
		if tot != 16*mib {
			t.Errorf("progress total %d, want the snapshot's size", tot)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if !readFile(t, out, "raw", "0xAB", "0", "1M") {
		t.Fatal("converted snapshot differs")
	}
	if st, err := os.Stat(out); err != nil || st.Size() != 16*mib {
		t.Fatalf("converted snapshot size: %v %v", st, err)
	}

	// A snapshot that does not exist: qemu-nbd's message, nothing left behind.
	_, err = StartSnapshotServer(ctx, SnapshotServerConfig{Image: img, Tag: tagB, RunDir: runDir, ID: "s2", ExportName: "snap2"})
	if err == nil || !strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("missing tag: %v", err)
	}
	if _, err := os.Stat(filepath.Join(runDir, "s2.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("failed start left a pidfile")
	}

	if err := ss.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(runDir, "s.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("pidfile left after Stop")
	}
	if !processGone(ss.Pid()) {
		t.Fatal("qemu-nbd still running after Stop")
	}
}
