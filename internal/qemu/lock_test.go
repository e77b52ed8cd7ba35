package qemu

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
)

// qemuWrite tries a write with qemu-io, which takes QEMU's locks, and
// returns its output and whether it succeeded.
func qemuWrite(t *testing.T, img string) (string, bool) {
	t.Helper()
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 4k", img).CombinedOutput()
	return string(out), err == nil
}

// LockImageForReading speaks QEMU's lock protocol: QEMU cannot write an
// image while cairn reads it, readers are not kept out, and an image that
// a QEMU process holds writable is refused as in use.
func TestLockImageForReading(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	dir := shortTempDir(t)
	img := newImage(t, ctx, dir, 16<<20)

	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := LockImageForReading(f); err != nil {
		t.Fatalf("an image no one holds: %v", err)
	}
	if out, ok := qemuWrite(t, img); ok || !strings.Contains(out, `Failed to get "write" lock`) {
		t.Fatalf("qemu-io wrote while cairn read the image (ok %v):\n%s", ok, out)
	}
	if out, err := exec.Command("qemu-img", "info", img).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img info, a reader, was kept out: %v\n%s", err, out)
	}
	// A second reader (another cairn) shares the image.
	g, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := LockImageForReading(g); err != nil {
		t.Fatalf("a second reader: %v", err)
	}
	g.Close()
	UnlockImage(f)
	if out, ok := qemuWrite(t, img); !ok {
		t.Fatalf("qemu-io could not write after UnlockImage:\n%s", out)
	}
	if err := LockImageForReading(f); err != nil {
		t.Fatal(err)
	}
	f.Close() // closing drops the locks too
	if out, ok := qemuWrite(t, img); !ok {
		t.Fatalf("qemu-io could not write after the file was closed:\n%s", out)
	}

	// A qemu-storage-daemon holds the image read-write, as a VM's QEMU does.
	sd := startDaemon(t, ctx, DaemonConfig{Image: img, RunDir: dir, ID: "v", ExportName: "e"})
	f, err = os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = LockImageForReading(f)
	if core.KindOf(err) != core.KindConflict || core.CodeOf(err) != "in_use" || !strings.Contains(err.Error(), img+" is in use") {
		t.Fatalf("an image a daemon holds writable: %v (kind %v, code %s); want the conflict in_use", err, core.KindOf(err), core.CodeOf(err))
	}
	// The refusal took no lock: the daemon stops and QEMU writes again.
	if err := sd.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if out, ok := qemuWrite(t, img); !ok {
		t.Fatalf("qemu-io could not write after a refused lock:\n%s", out)
	}
	if err := LockImageForReading(f); err != nil {
		t.Fatalf("after the daemon stopped: %v", err)
	}
}
