package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
)

// systemTags lists the cairn-sys- tags inside a volume's qcow2 file.
func systemTags(t *testing.T, file string) []string {
	t.Helper()
	var tags []string
	for _, f := range strings.Fields(runTool(t, "qemu-img", "snapshot", "-U", "-l", file)) {
		if strings.HasPrefix(f, "cairn-sys-") {
			tags = append(tags, f)
		}
	}
	return tags
}

// TestVolumeBackups backs up a volume through the server into its default
// repository, full then incremental while a client writes through a
// writable export (the QMP path), and checks with QEMU's tools that each
// backup restores (with `cairn repo` alone) exactly the volume at its
// system snapshot, that the incremental read little, that one system
// snapshot is left, and that a crash during a backup leaves the previous
// backup and its base in place.
// defaultRepoEnv waits for the project's default repository and returns a
// `cairn repo` environment on it, with its password, and the repository.
func defaultRepoEnv(t *testing.T, c *client.Client) (*repoEnv, apitypes.Repository) {
	t.Helper()
	waitRepositoryReady(t, c, "default")
	pw, err := c.GetRepository(testCtx(t), "default", true)
	if err != nil {
		t.Fatal(err)
	}
	rp := newRepoEnv(t, pw.URL)
	rp.env[1] = "CAIRN_PASSWORD=" + pw.Password
	return rp, pw
}

func TestVolumeBackups(t *testing.T) {
	requireQEMU(t)
	data := t.TempDir()
	srv := startServer(t, serverOpts{data: data})
	c := srv.Client(t)
	ctx := testCtx(t)
	rp, pw := defaultRepoEnv(t, c)

	// A volume with data: imported from a qcow2 image made with qemu-io.
	src := filepath.Join(t.TempDir(), "src.qcow2")
	const size = 64 << 20
	runTool(t, "qemu-img", "create", "-q", "-f", "qcow2", src, fmt.Sprint(size))
	runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", "-c", "write -P 0x22 20M 3M", "-c", "write -z 30M 1M", src)
	task := waitOK(t, c)(c.ImportVolume(ctx, apitypes.VolumeImport{Name: "db", Path: src}))
	vol, _ := c.GetVolume(ctx, task.ResourceID)
	file := filepath.Join(data, "volumes", vol.ID+".qcow2")

	// restoredMatches restores a backup with `cairn repo` alone and compares
	// it with what qemu-img reads from the volume's system snapshot.
	restoredMatches := func(b apitypes.Backup) {
		t.Helper()
		dir := t.TempDir()
		want := filepath.Join(dir, "want.raw")
		runTool(t, "qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", "-l", "snapshot.name=cairn-sys-"+b.ID, file, want)
		got := filepath.Join(dir, "got.qcow2")
		rp.ok("restore", b.ID, "--to-file", got)
		runTool(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", want, got)
	}

	// A full backup.
	var first apitypes.Backup
	cliJSON(t, srv, &first, "backup", "create", "db")
	if first.State != apitypes.BackupReady || first.VolumeID != vol.ID || first.Repository != "default" || first.ParentBackupID != "" ||
		first.LogicalSize != size || first.BytesRead < 7<<20 || first.BytesRead > 8<<20 {
		t.Fatalf("first backup: %+v", first)
	}
	restoredMatches(first)
	if bs := rp.backups(); len(bs) != 1 || bs[0].ID != first.ID {
		t.Fatalf("the repository's backups: %+v (want the server's id)", bs)
	}

	// Writes through a writable export, then an incremental backup while
	// the export (qemu-storage-daemon) holds the volume.
	et := waitOK(t, c)(c.CreateExport(ctx, "db", apitypes.ExportCreate{Writable: true}))
	exp, _ := c.GetExport(ctx, "db", et.ResourceID)
	runTool(t, "qemu-io", "-f", "raw", "-c", "write -P 0x33 1M 64k", "-c", "write -P 0x44 40M 128k", "-c", "write -z 20M 64k", exp.URI)
	var second apitypes.Backup
	cliJSON(t, srv, &second, "backup", "create", "db")
	if second.ParentBackupID != first.ID || second.BytesRead == 0 || second.BytesRead > 1<<20 || second.LogicalSize != size {
		t.Fatalf("incremental backup: %+v", second)
	}
	restoredMatches(second)
	if tags := systemTags(t, file); len(tags) != 1 || tags[0] != "cairn-sys-"+second.ID {
		t.Fatalf("system snapshots in the file: %v, want only the newest backup's", tags)
	}
	var snaps []apitypes.Snapshot
	cliJSON(t, srv, &snaps, "snapshot", "list", "db")
	if len(snaps) != 0 {
		t.Fatalf("system snapshots shown as snapshots: %+v", snaps)
	}
	// Every backup restores alone: forget the first, prune, restore the second.
	rp.ok("forget", first.ID, "--prune")
	restoredMatches(second)

	// Restores through the server: into a new volume, into raw and qcow2
	// files; each equals the volume at the backup's system snapshot.
	want := filepath.Join(t.TempDir(), "want.raw")
	runTool(t, "qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", "-l", "snapshot.name=cairn-sys-"+second.ID, file, want)
	var nv apitypes.Volume
	cliJSON(t, srv, &nv, "backup", "restore", second.ID[:8], "--to-volume", "db-copy")
	if nv.Name != "db-copy" || nv.State != apitypes.VolumeReady || nv.Size != size {
		t.Fatalf("restored volume: %+v", nv)
	}
	nfile := filepath.Join(data, "volumes", nv.ID+".qcow2")
	runTool(t, "qemu-img", "check", "-q", nfile)
	runTool(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", want, nfile)
	outDir := t.TempDir()
	for _, name := range []string{"db.raw", "db.qcow2"} {
		out := filepath.Join(outDir, name)
		cliOK(t, srv, "backup", "restore", second.ID, "--to-file", out)
		runTool(t, "qemu-img", "compare", "-q", "-f", "raw", want, out)
		if entries, _ := os.ReadDir(outDir); len(entries) > 2 {
			t.Fatalf("restore left temporary files: %v", entries)
		}
	}
	if st, err := os.Stat(filepath.Join(outDir, "db.raw")); err != nil || st.Size() != size {
		t.Fatalf("raw restore: %v %v", st, err)
	}
	// In place, while the writable export is live: a safety snapshot, the
	// export back on its URI with the backup's content, a revert undoes it.
	runTool(t, "qemu-io", "-f", "raw", "-c", "write -P 0x66 0 8M", exp.URI)
	beforeIn := filepath.Join(t.TempDir(), "before.raw")
	runTool(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", exp.URI, beforeIn)
	cliOK(t, srv, "backup", "restore", second.ID, "--in-place")
	runTool(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", want, exp.URI)
	var snapsIn []apitypes.Snapshot
	cliJSON(t, srv, &snapsIn, "snapshot", "list", "db")
	dbv, _ := c.GetVolume(ctx, "db")
	if len(snapsIn) != 1 || !strings.HasPrefix(snapsIn[0].Name, "before-restore") || dbv.HeadParentID == nil || *dbv.HeadParentID != snapsIn[0].ID {
		t.Fatalf("after an in-place restore: snapshots %+v, head %v", snapsIn, dbv.HeadParentID)
	}
	waitOK(t, c)(c.RevertVolume(ctx, "db"))
	runTool(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", beforeIn, exp.URI)
	waitOK(t, c)(c.DeleteSnapshot(ctx, "db", snapsIn[0].ID, false))

	_, errs, code := cli(t, srv, "backup", "restore", second.ID, "--to-file", filepath.Join(outDir, "db.raw"))
	if code != 5 || !strings.Contains(errs, "exists") {
		t.Fatalf("restore over an existing file: exit %d %s", code, errs)
	}
	_, errs, code = cli(t, srv, "backup", "restore", second.ID, "--to-volume", "db")
	if code != 4 || !strings.Contains(errs, "name_taken") {
		t.Fatalf("restore onto a taken name: exit %d %s", code, errs)
	}
	_, errs, code = cli(t, srv, "backup", "restore", second.ID)
	if code != 2 {
		t.Fatalf("restore without a target: exit %d %s", code, errs)
	}
	_, errs, code = cli(t, srv, "backup", "restore", "ffffffff", "--to-volume", "x")
	if code != 3 {
		t.Fatalf("restore of an unknown backup: exit %d %s", code, errs)
	}

	// Listing, showing by prefix, and bad requests.
	var list []apitypes.Backup
	cliJSON(t, srv, &list, "backup", "list", "db")
	if len(list) != 2 || list[0].ID != second.ID || list[1].ID != first.ID {
		t.Fatalf("backup list: %+v", list)
	}
	if b, err := c.GetBackup(ctx, second.ID[:8]); err != nil || b.ID != second.ID {
		t.Fatalf("backup by prefix: %+v %v", b, err)
	}
	if _, err := c.CreateBackup(ctx, "nope", apitypes.BackupCreate{}); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("backup of a missing volume: %v", err)
	}
	if _, err := c.CreateBackup(ctx, "db", apitypes.BackupCreate{Repository: "nope"}); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("backup into a missing repository: %v", err)
	}
	if _, err := c.CreateProject(ctx, apitypes.ProjectCreate{Name: "beta"}); err != nil {
		t.Fatal(err)
	}
	k, err := c.CreateToken(ctx, apitypes.TokenCreate{Name: "beta-op", Project: "beta", Role: "operator"})
	if err != nil {
		t.Fatal(err)
	}
	beta := client.New(srv.URL, k.Secret, client.WithHTTPClient(validatingHTTP(t)))
	if _, err := beta.GetBackup(ctx, second.ID); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("another project reads a backup: %v", err)
	}
	if _, err := beta.CreateBackup(ctx, vol.ID, apitypes.BackupCreate{}); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("another project backs up the volume: %v", err)
	}
	waitOK(t, c)(c.DeleteExport(ctx, "db", exp.ID))

	// A crash after the system snapshot, before the commit: the previous
	// backup and its base stay; the next backup is incremental from them.
	srv.Stop()
	srv = crashAt(t, data, "backup.create:after-snapshot", func(c *client.Client) {
		if _, err := c.CreateBackup(ctx, "db", apitypes.BackupCreate{}); err != nil {
			t.Fatal(err)
		}
	})
	c = srv.Client(t)
	all, err := c.AllBackups(ctx, "db", "")
	if err != nil || len(all) != 3 || all[0].State != apitypes.BackupFailed || all[1].ID != second.ID || all[1].State != apitypes.BackupReady {
		t.Fatalf("after the crash: %+v %v", all, err)
	}
	runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x55 50M 64k", file)
	var third apitypes.Backup
	cliJSON(t, srv, &third, "backup", "create", "db")
	// It reads the 8 MiB written before the in-place restore (the revert
	// kept them) and the 64 KiB written since.
	if third.ParentBackupID != second.ID || third.BytesRead > 9<<20 {
		t.Fatalf("backup after the crash: %+v", third)
	}
	restoredMatches(third)
	if tags := systemTags(t, file); len(tags) != 1 || tags[0] != "cairn-sys-"+third.ID {
		t.Fatalf("system snapshots after the crash and a backup: %v, want only the newest backup's", tags)
	}
	if bs := rp.backups(); len(bs) != 2 {
		t.Fatalf("the repository holds %d backups, want 2 (the crashed one committed nothing)", len(bs))
	}

	// Forget: a dry run says what would go and changes nothing; then the
	// real one removes it, the repository is pruned, the kept backup restores.
	var dry apitypes.Task
	cliJSON(t, srv, &dry, "backup", "forget", "db", "--keep-last", "1", "--dry-run")
	if got := strings.Fields(dry.Result["forget"]); len(got) != 2 || got[0] != second.ID || got[1] != first.ID || dry.Result["keep"] != third.ID {
		t.Fatalf("dry run: %+v", dry.Result)
	}
	if dry.Result["bytes_freed"] == "" || dry.Result["bytes_freed"] == "0" {
		t.Fatalf("dry run frees nothing: %+v", dry.Result)
	}
	if bs := rp.backups(); len(bs) != 2 {
		t.Fatalf("a dry run removed backups: %d left", len(bs))
	}
	_, errs, code = cli(t, srv, "backup", "forget", "db")
	if code != 2 || !strings.Contains(errs, "at least one") {
		t.Fatalf("forget without a rule: exit %d %s", code, errs)
	}
	_, errs, code = cli(t, srv, "backup", "forget", "db", "--keep-last", "-1")
	if code != 2 {
		t.Fatalf("forget with a negative count: exit %d %s", code, errs)
	}
	var done apitypes.Task
	cliJSON(t, srv, &done, "backup", "forget", "db", "--keep-last", "1")
	if done.Result["prune_task_id"] == "" {
		t.Fatalf("no prune queued after a forget: %+v", done.Result)
	}
	if _, err := c.WaitTask(ctx, done.Result["prune_task_id"], nil); err != nil {
		t.Fatalf("the prune after forget: %v", err)
	}
	if bs := rp.backups(); len(bs) != 1 || bs[0].ID != third.ID {
		t.Fatalf("after forget, the repository holds %+v", bs)
	}
	if left, _ := c.AllBackups(ctx, "db", ""); len(left) != 2 || left[0].ID != third.ID || left[1].State != apitypes.BackupFailed {
		t.Fatalf("after forget, the server lists %+v", left)
	}
	restoredMatches(third)
	rp.ok("verify", "--read-data")

	// Verify through the server: whole, then damaged (exit 7, the backup
	// marked corrupt), then whole again once the damage is undone.
	cliOK(t, srv, "backup", "verify", third.ID)
	cliOK(t, srv, "backup", "verify", "--volume", "db")
	// One flipped bit in the first blob of every pack: some of them the
	// backup needs.
	packs := map[string][]byte{}
	filepath.Walk(filepath.Join(pw.URL, "data"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			packs[p] = b
			d := append([]byte(nil), b...)
			d[200] ^= 0x01
			os.WriteFile(p, d, 0o600)
		}
		return nil
	})
	_, errs, code = cli(t, srv, "backup", "verify", third.ID[:8])
	if code != 7 || !strings.Contains(errs, "CRC32C mismatch") {
		t.Fatalf("verify of a damaged backup: exit %d %s", code, errs)
	}
	if b, _ := c.GetBackup(ctx, third.ID); b.State != apitypes.BackupCorrupt {
		t.Fatalf("damaged backup is %s, want corrupt", b.State)
	}
	for p, b := range packs {
		os.WriteFile(p, b, 0o600)
	}
	cliOK(t, srv, "backup", "verify", third.ID)
	if b, _ := c.GetBackup(ctx, third.ID); b.State != apitypes.BackupReady {
		t.Fatalf("backup is %s after a clean verify, want ready", b.State)
	}
	_, errs, code = cli(t, srv, "backup", "verify")
	if code != 2 {
		t.Fatalf("verify without a target: exit %d %s", code, errs)
	}
}

// TestBackupFiles copies files out of a volume backup through the server.
func TestBackupFiles(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	src, disk := ext4Disk(t, dir)
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitOK(t, c)(c.ImportVolume(ctx, apitypes.VolumeImport{Name: "root", Path: disk, Format: "raw"}))
	var b apitypes.Backup
	cliJSON(t, srv, &b, "backup", "create", "root")
	target := filepath.Join(dir, "out")
	out := cliOK(t, srv, "backup", "files", b.ID[:8], "--include", "/etc", "--include", "/big.bin", "--target", target)
	if !strings.Contains(out, "partition 1") {
		t.Fatalf("backup files: %s", out)
	}
	for _, p := range []string{"etc/hosts", "etc/ssh/sshd_config", "big.bin"} {
		if !sameFile(t, filepath.Join(src, p), filepath.Join(target, p)) {
			t.Fatalf("%s differs after backup files", p)
		}
	}
	_, errs, code := cli(t, srv, "backup", "files", b.ID, "--include", "/nope", "--target", filepath.Join(dir, "out2"))
	if code != 3 && code != 5 {
		t.Fatalf("a missing path: exit %d %s", code, errs)
	}
	_, errs, code = cli(t, srv, "backup", "files", b.ID, "--include", "etc/hosts", "--target", target)
	if code != 2 {
		t.Fatalf("a relative include: exit %d %s", code, errs)
	}
}

// TestBackupRepositoryUnreachable: a backup whose repository cannot be
// reached fails, keeps the previous backup's base, and the next backup is
// still incremental.
func TestBackupRepositoryUnreachable(t *testing.T) {
	requireQEMU(t)
	data := t.TempDir()
	srv := startServer(t, serverOpts{data: data})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitRepositoryReady(t, c, "default")
	task := waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "v", Size: 16 << 20}))
	file := filepath.Join(data, "volumes", task.ResourceID+".qcow2")
	runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 4M", file)
	var first apitypes.Backup
	cliJSON(t, srv, &first, "backup", "create", "v")

	repoDir := filepath.Join(data, "repository")
	if err := os.Rename(repoDir, repoDir+".away"); err != nil {
		t.Fatal(err)
	}
	_, errs, code := cli(t, srv, "backup", "create", "v")
	if code != 5 {
		t.Fatalf("backup into an unreachable repository: exit %d %s", code, errs)
	}
	if tags := systemTags(t, file); len(tags) != 1 || tags[0] != "cairn-sys-"+first.ID {
		t.Fatalf("after the failed backup the system snapshots are %v, want only the first backup's", tags)
	}
	if err := os.Rename(repoDir+".away", repoDir); err != nil {
		t.Fatal(err)
	}
	runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x43 8M 64k", file)
	var next apitypes.Backup
	cliJSON(t, srv, &next, "backup", "create", "v")
	if next.ParentBackupID != first.ID || next.BytesRead > 256<<10 {
		t.Fatalf("the backup after the failure is not incremental from the first: %+v", next)
	}
}
