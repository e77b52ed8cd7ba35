package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

// TestBackupUnsupportedQcow2: a volume file with a qcow2 feature cairn's
// reader refuses (extended L2 entries) is backed up whole through a
// read-only qemu-nbd export, and the backup restores exactly.
func TestBackupUnsupportedQcow2(t *testing.T) {
	requireQEMU(t)
	data := t.TempDir()
	srv := startServer(t, serverOpts{data: data})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitRepositoryReady(t, c, "default")
	task := waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "el2", Size: 32 << 20}))
	file := filepath.Join(data, "volumes", task.ResourceID+".qcow2")
	srv.Stop()

	// The same volume, rewritten with extended L2 entries, holding data.
	tmp := file + ".el2"
	runTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", tmp, "32M")
	runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x61 0 3M", "-c", "write -P 0x62 17M 100k", tmp)
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	srv = startServer(t, serverOpts{data: data, listen: srv.Listen})
	c = srv.Client(t)
	bt := waitOK(t, c)(c.CreateBackup(ctx, "el2", apitypes.BackupCreate{}))
	if why := bt.Result["full_read"]; !strings.Contains(why, "extended L2") || !strings.Contains(why, "read-only export") {
		t.Fatalf("backup of an extended-L2 volume: result %+v", bt.Result)
	}
	b, err := c.GetBackup(ctx, bt.ResourceID)
	if err != nil || b.State != apitypes.BackupReady || b.BytesRead < 3<<20 || b.BytesRead > 5<<20 {
		t.Fatalf("backup: %+v %v (want about 3.1 MiB read: holes skipped)", b, err)
	}
	want := filepath.Join(t.TempDir(), "want.raw")
	runTool(t, "qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", "-l", "snapshot.name=cairn-sys-"+b.ID, file, want)
	got := filepath.Join(t.TempDir(), "got.raw")
	cliOK(t, srv, "backup", "restore", b.ID, "--to-file", got)
	runTool(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", want, got)
	runTool(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x62 17M 100k", got)
	// The next backup reads it whole again, and works.
	bt = waitOK(t, c)(c.CreateBackup(ctx, "el2", apitypes.BackupCreate{}))
	if bt.Result["full_read"] == "" {
		t.Fatalf("second backup: %+v", bt.Result)
	}
}
