package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
)

// TestBackupExport serves a volume backup over NBD through the server:
// qemu-img, qemu-io and nbdcopy read the backup's bytes, nbdinfo --map shows
// its holes, retention keeps an exported backup, the export comes back on
// its URI after a restart, and unexport stops it. Per-backup unique bytes
// are measured after backups and forgets.
func TestBackupExport(t *testing.T) {
	requireQEMU(t)
	data := t.TempDir()
	srv := startServer(t, serverOpts{data: data})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitRepositoryReady(t, c, "default")

	src := filepath.Join(t.TempDir(), "src.qcow2")
	const size = 64 << 20
	runTool(t, "qemu-img", "create", "-q", "-f", "qcow2", src, fmt.Sprint(size))
	runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", "-c", "write -P 0x22 20M 3M", src)
	task := waitOK(t, c)(c.ImportVolume(ctx, apitypes.VolumeImport{Name: "web", Path: src}))
	vol, _ := c.GetVolume(ctx, task.ResourceID)
	file := filepath.Join(data, "volumes", vol.ID+".qcow2")

	var first apitypes.Backup
	cliJSON(t, srv, &first, "backup", "create", "web")
	want := filepath.Join(t.TempDir(), "want.raw")
	runTool(t, "qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", "-l", "snapshot.name=cairn-sys-"+first.ID, file, want)

	var e apitypes.BackupExport
	cliJSON(t, srv, &e, "backup", "export", first.ID[:8])
	if e.BackupID != first.ID || e.State != "ready" || e.TLS || !strings.HasPrefix(e.URI, "nbd://127.0.0.1:") {
		t.Fatalf("backup export: %+v", e)
	}
	readsLikeBackup := func(uri string) {
		t.Helper()
		runTool(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", want, uri)
		out := filepath.Join(t.TempDir(), "copy.raw")
		runTool(t, "nbdcopy", uri, out)
		runTool(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", want, out)
		runTool(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x22 20M 3M", "-c", "read -P 0 10M 1M", uri)
	}
	readsLikeBackup(e.URI)
	// The never-written middle of the volume is a hole; the data is not.
	m := runTool(t, "nbdinfo", "--map", e.URI)
	if !strings.Contains(m, "hole,zero") || !strings.Contains(m, "data") {
		t.Fatalf("nbdinfo --map shows no holes and data:\n%s", m)
	}
	// A wrong export name is refused; writes are refused.
	bad := e.URI[:strings.LastIndex(e.URI, "/")+1] + "not-the-name"
	if out, err := exec.Command("qemu-img", "info", bad).CombinedOutput(); err == nil {
		t.Fatalf("a wrong export name was served: %s", out)
	}
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x99 0 64k", e.URI).CombinedOutput(); err == nil && !strings.Contains(string(out), "failed") {
		t.Fatalf("a write to a backup export succeeded: %s", out)
	}
	var listed []apitypes.BackupExport
	if listed, _ = c.BackupExports(ctx, first.ID); len(listed) != 1 || listed[0].URI != e.URI {
		t.Fatalf("the backup's exports: %+v", listed)
	}

	// A second backup; retention that would forget the first keeps it while
	// it is exported, and says so.
	runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 2M", file)
	var second apitypes.Backup
	cliJSON(t, srv, &second, "backup", "create", "web")
	var ft apitypes.Task
	cliJSON(t, srv, &ft, "backup", "forget", "web", "--keep-last", "1")
	if ft.Result["kept_exported"] != first.ID || ft.Result["forget"] != "" {
		t.Fatalf("forget of an exported backup: %+v", ft.Result)
	}
	// Unique bytes: each backup holds some data the other does not (the
	// first 2 MiB differ); never more than it added (stored sizes).
	var bs []apitypes.Backup
	cliJSON(t, srv, &bs, "backup", "list", "web")
	if len(bs) != 2 {
		t.Fatalf("backups: %+v", bs)
	}
	for _, b := range bs {
		if b.UniqueBytes == nil || *b.UniqueBytes == 0 || *b.UniqueBytes > b.BytesAdded {
			t.Fatalf("unique bytes of %s: %v (added %d)", b.ID, b.UniqueBytes, b.BytesAdded)
		}
	}
	secondUnique := *bs[0].UniqueBytes

	// Another project cannot see or export the backup.
	cliOK(t, srv, "project", "create", "other")
	if _, _, code := cli(t, srv, "--project", "other", "backup", "export", first.ID); code != 3 {
		t.Fatalf("exporting another project's backup: exit %d, want 3", code)
	}

	// After a restart the export is back on the same URI.
	srv.Stop()
	srv = startServer(t, serverOpts{data: data, listen: srv.Listen})
	c = srv.Client(t)
	waitExportReady(t, e.URI)
	readsLikeBackup(e.URI)

	// Unexport: gone from the API, nothing served, and retention may now
	// forget the backup.
	cliOK(t, srv, "backup", "unexport", first.ID)
	if listed, _ = c.BackupExports(ctx, first.ID); len(listed) != 0 {
		t.Fatalf("exports after unexport: %+v", listed)
	}
	if out, err := exec.Command("qemu-img", "info", e.URI).CombinedOutput(); err == nil {
		t.Fatalf("the export still serves after unexport: %s", out)
	}
	if _, _, code := cli(t, srv, "backup", "unexport", first.ID); code != 3 {
		t.Fatalf("unexport of a backup without exports: exit %d, want 3", code)
	}
	cliJSON(t, srv, &ft, "backup", "forget", "web", "--keep-last", "1")
	if ft.Result["forget"] != first.ID {
		t.Fatalf("forget after unexport: %+v", ft.Result)
	}
	cliJSON(t, srv, &bs, "backup", "list", "web")
	if len(bs) != 1 || bs[0].UniqueBytes == nil || *bs[0].UniqueBytes <= secondUnique {
		t.Fatalf("after forgetting the first, the second holds all its data alone: %+v", bs)
	}
}

// waitExportReady waits until an NBD URI answers (exports come back in the
// background when a node starts).
func waitExportReady(t *testing.T, uri string) {
	t.Helper()
	var out []byte
	var err error
	for range 100 {
		if out, err = exec.Command("qemu-img", "info", uri).CombinedOutput(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s does not answer: %v %s", uri, err, out)
}

// TestBackupExportTLS: a backup export on a server run with --export-tls
// admits QEMU with the project's credentials only.
func TestBackupExportTLS(t *testing.T) {
	srv := startServer(t, serverOpts{extraArgs: []string{"--export-tls"}})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitRepositoryReady(t, c, "default")
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "vol", Size: 4 << 20}))
	var b apitypes.Backup
	cliJSON(t, srv, &b, "backup", "create", "vol")
	creds := filepath.Join(t.TempDir(), "creds")
	uri := strings.TrimSpace(cliOK(t, srv, "backup", "export", b.ID, "--tls-dir", creds))
	if out, ok := tlsQemuIO(t, uri, creds, "read -P 0 0 4M"); !ok {
		t.Fatalf("reading the TLS backup export with the project's credentials: %s", out)
	}
	if out, ok := tlsQemuIO(t, uri, "", "read 0 64k"); ok {
		t.Fatalf("a client without TLS read the backup export: %s", out)
	}
	// A certificate of another project (for an export of its own volume)
	// is refused.
	cliOK(t, srv, "project", "create", "other")
	oc := srv.Client(t, client.WithProject("other"))
	waitOK(t, oc)(oc.CreateVolume(ctx, apitypes.VolumeCreate{Name: "x", Size: 1 << 20}))
	oe := waitOK(t, oc)(oc.CreateExport(ctx, "x", apitypes.ExportCreate{}))
	ocr, err := oc.ExportCredentials(ctx, "x", oe.ResourceID)
	if err != nil {
		t.Fatal(err)
	}
	if out, ok := tlsQemuIO(t, uri, writeCreds(t, ocr), "read 0 64k"); ok {
		t.Fatalf("another project's certificate read the backup export: %s", out)
	}
}
