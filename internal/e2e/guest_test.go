package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/qemu"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// TestGuestAttachesWritableExport starts QEMU with the drive line the README
// shows, on a volume's writable export, and checks through QMP that the guest's
// disk is the volume; then a snapshot is taken while QEMU holds the export.
func TestGuestAttachesWritableExport(t *testing.T) {
	testenv.RequireTool(t, "qemu-system-x86_64")
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "web", Size: 8 << 20, Kind: apitypes.KindRoot}))
	et := waitOK(t, c)(c.CreateExport(ctx, "web", apitypes.ExportCreate{Writable: true}))
	e, err := c.GetExport(ctx, "web", et.ResourceID)
	if err != nil {
		t.Fatal(err)
	}
	runTool(t, "qemu-io", "-f", "raw", "-c", "write -P 0x61 0 64k", e.URI)

	sock := filepath.Join(t.TempDir(), "qmp.sock")
	vm := exec.Command("qemu-system-x86_64", "-S", "-m", "64", "-display", "none", "-nodefaults", "-accel", "tcg",
		"-qmp", "unix:"+sock+",server=on,wait=off",
		"-drive", "file="+e.URI+",format=raw,if=virtio,cache=none")
	var out strings.Builder
	vm.Stdout, vm.Stderr = &out, &out
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { vm.Process.Kill(); vm.Wait() }()
	var q *qemu.QMP
	for deadline := time.Now().Add(20 * time.Second); ; {
		q, err = qemu.DialQMP(ctx, sock)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("QMP of the guest: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer q.Close()
	var blocks []struct {
		Device   string `json:"device"`
		Inserted *struct {
			File  string `json:"file"`
			Image struct {
				VirtualSize int64 `json:"virtual-size"`
			} `json:"image"`
		} `json:"inserted"`
	}
	if err := q.Execute(ctx, "query-block", nil, &blocks); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range blocks {
		if b.Inserted != nil && strings.Contains(b.Inserted.File, e.URI[len("nbd://"):]) {
			found = b.Inserted.Image.VirtualSize == 8<<20
		}
	}
	if !found {
		t.Fatalf("the guest does not show the 8 MiB export %s: %+v", e.URI, blocks)
	}
	// The running guest holds the export; a snapshot goes through QMP meanwhile.
	if err := q.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitOK(t, c)(c.CreateSnapshot(ctx, "web", apitypes.SnapshotCreate{Name: "while-running"}))
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var status struct {
		Running bool `json:"running"`
	}
	if err := q.Execute(qctx, "query-status", nil, &status); err != nil || !status.Running {
		t.Fatalf("guest after the snapshot: running=%v %v", status.Running, err)
	}
	sid, suri := "", ""
	st := waitOK(t, c)(c.CreateExport(ctx, "web", apitypes.ExportCreate{Snapshot: "while-running"}))
	if se, err := c.GetExport(ctx, "web", st.ResourceID); err == nil {
		sid, suri = se.ID, se.URI
	}
	runTool(t, "qemu-io", "-r", "-f", "raw", "-c", fmt.Sprintf("read -P 0x61 0 %d", 64<<10), suri)
	waitOK(t, c)(c.DeleteExport(ctx, "web", sid))
}
