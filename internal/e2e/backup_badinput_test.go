package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

// TestBackupBadInput: a restore onto a full disk fails clearly and leaves
// nothing; a restore onto an existing file is refused; a corrupt volume
// file fails the backup and keeps the previous backup and its base; a
// volume deleted while its backup runs loses nothing: the backup outlives
// it and restores.
func TestBackupBadInput(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs and needs root (CI runs as root)")
	}
	data := t.TempDir()
	srv := startServer(t, serverOpts{data: data})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitRepositoryReady(t, c, "default")
	img := filepath.Join(t.TempDir(), "disk.raw")
	randomImage(t, img, 24<<20, 3)
	task := waitOK(t, c)(c.ImportVolume(ctx, apitypes.VolumeImport{Name: "db", Path: img, Format: "raw"}))
	file := filepath.Join(data, "volumes", task.ResourceID+".qcow2")
	var b apitypes.Backup
	cliJSON(t, srv, &b, "backup", "create", "db")

	// A full disk.
	small := filepath.Join(t.TempDir(), "small")
	os.Mkdir(small, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", small).Run() })
	_, errs, code := cli(t, srv, "backup", "restore", b.ID, "--to-file", filepath.Join(small, "out.raw"))
	if code != 5 || !strings.Contains(errs, "disk is full") {
		t.Fatalf("restore onto a full disk: exit %d %s", code, errs)
	}
	if entries, _ := os.ReadDir(small); len(entries) != 0 {
		t.Fatalf("a failed restore left %v", entries)
	}
	// An existing target.
	exists := filepath.Join(t.TempDir(), "exists.raw")
	os.WriteFile(exists, []byte("keep me"), 0o600)
	_, errs, code = cli(t, srv, "backup", "restore", b.ID, "--to-file", exists)
	if got, _ := os.ReadFile(exists); code == 0 || !strings.Contains(errs, "exists") || string(got) != "keep me" {
		t.Fatalf("restore onto an existing file: exit %d %s (file now %q)", code, errs, got)
	}

	// A corrupt volume file: the backup fails and names the damage; the
	// previous backup's base snapshot stays.
	srv.Stop()
	orig, _ := os.ReadFile(file)
	bad := append([]byte(nil), orig...)
	copy(bad[4:8], []byte{0, 0, 0, 9}) // qcow2 version 9
	os.WriteFile(file, bad, 0o600)
	srv = startServer(t, serverOpts{data: data, listen: srv.Listen})
	c = srv.Client(t)
	_, errs, code = cli(t, srv, "backup", "create", "db")
	if code == 0 || !strings.Contains(strings.ToLower(errs), "version") {
		t.Fatalf("backup of a corrupt volume file: exit %d %s", code, errs)
	}
	srv.Stop()
	os.WriteFile(file, orig, 0o600)
	srv = startServer(t, serverOpts{data: data, listen: srv.Listen})
	c = srv.Client(t)
	if tags := systemTags(t, file); len(tags) != 1 || tags[0] != "cairn-sys-"+b.ID {
		t.Fatalf("system snapshots after a failed backup: %v", tags)
	}

	// Delete the volume while its backup runs.
	bt, err := c.CreateBackup(ctx, "db", apitypes.BackupCreate{})
	if err != nil {
		t.Fatal(err)
	}
	_, derrs, dcode := cli(t, srv, "volume", "delete", "db", "--purge")
	bt, err = c.WaitTask(ctx, bt.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("volume delete during a backup: exit %d %s; the backup %s", dcode, strings.TrimSpace(derrs), bt.State)
	if dcode != 0 && dcode != 4 {
		t.Fatalf("volume delete during a backup: exit %d %s", dcode, derrs)
	}
	if bt.State == apitypes.TaskSucceeded {
		got := filepath.Join(t.TempDir(), "got.raw")
		cliOK(t, srv, "backup", "restore", bt.ResourceID, "--to-file", got)
		if !sameFile(t, img, got) {
			t.Fatal("the backup of a volume deleted meanwhile does not restore the volume's data")
		}
	} else if !strings.Contains(bt.Error, "volume") {
		t.Fatalf("a backup that failed because its volume went: %+v", bt)
	}
	got := filepath.Join(t.TempDir(), "first.raw")
	cliOK(t, srv, "backup", "restore", b.ID, "--to-file", got)
	if !sameFile(t, img, got) {
		t.Fatal("the first backup no longer restores the volume's data")
	}
}
