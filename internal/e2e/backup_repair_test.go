package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

// flipBit flips one bit of a file at fraction at of its length.
func flipBit(t *testing.T, path string, at float64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[int(float64(len(b))*at)] ^= 0x08
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBackupVerifyRepair: a damaged chunk of a backup is rewritten from the
// volume's system snapshot, which holds the same bytes; a later verify
// passes and the backup restores exactly. Damage that no snapshot or live
// disk can replace stays, is named, and the backup is corrupt.
func TestBackupVerifyRepair(t *testing.T) {
	requireQEMU(t)
	data := t.TempDir()
	srv := startServer(t, serverOpts{data: data})
	c := srv.Client(t)
	ctx := testCtx(t)
	rp, pw := defaultRepoEnv(t, c)

	img := filepath.Join(t.TempDir(), "disk.raw")
	randomImage(t, img, 32<<20, 7)
	task := waitOK(t, c)(c.ImportVolume(ctx, apitypes.VolumeImport{Name: "db", Path: img, Format: "raw"}))
	vol, _ := c.GetVolume(ctx, task.ResourceID)
	file := filepath.Join(data, "volumes", vol.ID+".qcow2")
	var first apitypes.Backup
	cliJSON(t, srv, &first, "backup", "create", "db")
	pack := biggestPack(t, pw.URL)

	flipBit(t, pack, 0.5)
	_, errs, code := cli(t, srv, "backup", "verify", first.ID)
	if code != 7 {
		t.Fatalf("verify of a damaged backup: exit %d %s", code, errs)
	}
	var rt apitypes.Task
	cliJSON(t, srv, &rt, "backup", "verify", first.ID, "--repair")
	if rt.State != apitypes.TaskSucceeded || rt.Result["repaired"] == "" || rt.Result["repaired"] == "0" || rt.Result["not_repaired"] != "" {
		t.Fatalf("verify --repair: %+v", rt)
	}
	if b, _ := c.GetBackup(ctx, first.ID); b.State != apitypes.BackupReady {
		t.Fatalf("after a repair the backup is %s", b.State)
	}
	cliOK(t, srv, "backup", "verify", first.ID)
	rp.ok("verify", "--read-data")
	want := filepath.Join(t.TempDir(), "want.raw")
	runTool(t, "qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", "-l", "snapshot.name=cairn-sys-"+first.ID, file, want)
	got := filepath.Join(t.TempDir(), "got.raw")
	cliOK(t, srv, "backup", "restore", first.ID, "--to-file", got)
	runTool(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", want, got)

	// Every byte of the volume changes and a second backup replaces the
	// base: nothing holds the first backup's bytes any more.
	runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 32M", file)
	var second apitypes.Backup
	cliJSON(t, srv, &second, "backup", "create", "db")
	flipBit(t, pack, 0.25)
	_, errs, code = cli(t, srv, "backup", "verify", first.ID, "--repair")
	if code != 7 || !strings.Contains(errs, "no good copy") || !strings.Contains(errs, "holds the same bytes") {
		t.Fatalf("verify --repair without a source: exit %d %s", code, errs)
	}
	if b, _ := c.GetBackup(ctx, first.ID); b.State != apitypes.BackupCorrupt {
		t.Fatalf("unrepaired backup is %s, want corrupt", b.State)
	}
	cliOK(t, srv, "backup", "verify", second.ID, "--repair")
	if _, errs, code = cli(t, srv, "backup", "verify", "--all", "--repair"); code != 2 {
		t.Fatalf("--all --repair: exit %d %s", code, errs)
	}
}
