package e2e

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/testenv"
)

func TestImportFormats(t *testing.T) {
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	runTool(t, "qemu-img", "create", "-f", "raw", raw, "2M")
	runTool(t, "qemu-io", "-f", "raw", "-c", "write -P 0x3c 64k 64k", "-c", "write -P 0x7e 1M 128k", raw)
	for _, format := range []string{"qcow2", "vmdk", "vhdx", "raw"} {
		src := raw
		if format != "raw" {
			src = filepath.Join(dir, "src."+format)
			runTool(t, "qemu-img", "convert", "-f", "raw", "-O", format, raw, src)
		}
		name := "imp-" + format
		task := waitOK(t, c)(c.ImportVolume(ctx, apitypes.VolumeImport{Name: name, Path: src}))
		if task.BytesTotal == 0 {
			t.Errorf("%s import reported no progress total", format)
		}
		v := mustVolume(t, c, name)
		if v.Size < 2<<20 || v.State != apitypes.VolumeReady {
			t.Fatalf("%s import: %+v", format, v)
		}
		path := filepath.Join(srv.Data, "volumes", v.ID+".qcow2")
		runTool(t, "qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x3c 64k 64k", "-c", "read -P 0x7e 1M 128k", "-c", "read -P 0 0 64k", path)
		out := runTool(t, "qemu-img", "info", path)
		if !strings.Contains(out, "cluster_size: 65536") {
			t.Fatalf("%s import is not a 64 KiB-cluster qcow2:\n%s", format, out)
		}
	}
	// A file that is not an image of the given format fails the task cleanly.
	bad := filepath.Join(dir, "bad.vmdk")
	os.WriteFile(bad, []byte("not a vmdk"), 0o644)
	task := waitFail(t, c)(c.ImportVolume(ctx, apitypes.VolumeImport{Name: "bad", Path: bad, Format: "vmdk"}))
	if task.Error == "" {
		t.Fatal("failed import has no error message")
	}
	if _, err := c.GetVolume(ctx, "bad"); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("failed import left a volume: %v", err)
	}
}

func TestDeletedVolumeKeepsSnapshots(t *testing.T) {
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "root1", Size: 1 << 20, Kind: apitypes.KindRoot}))
	r := &treeRun{t: t, c: c, srv: srv, vol: mustVolume(t, c, "root1"), m: newModel(1 << 20), scratch: -1}
	r.write(0, 0x42)
	waitOK(t, c)(c.CreateSnapshot(ctx, "root1", apitypes.SnapshotCreate{Name: "gold"}))
	volID := r.vol.ID

	// Root snapshots cannot become volumes.
	_, err := c.SnapshotToVolume(ctx, "root1", "gold", apitypes.SnapshotToVolume{Name: "copy"})
	if err == nil || !strings.Contains(err.Error(), "template") {
		t.Fatalf("root to-volume: %v; want an error naming templates", err)
	}
	// Deleting the volume keeps it, deleted, with its snapshot usable.
	waitOK(t, c)(c.DeleteVolume(ctx, "root1", false))
	v := mustVolume(t, c, volID)
	if v.State != apitypes.VolumeDeleted || v.SnapshotCount != 1 {
		t.Fatalf("after delete: %+v", v)
	}
	if _, err := c.CreateSnapshot(ctx, volID, apitypes.SnapshotCreate{}); core.CodeOf(err) != "deleted" {
		t.Fatalf("snapshot of deleted volume: %v", err)
	}
	// Its snapshot can be exported and read.
	et := waitOK(t, c)(c.CreateExport(ctx, volID, apitypes.ExportCreate{Snapshot: "gold"}))
	e, _ := c.GetExport(ctx, volID, et.ResourceID)
	runTool(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x42 0 64k", e.URI)
	waitOK(t, c)(c.DeleteExport(ctx, volID, e.ID))
	// The name is free again; applying the snapshot then needs a new name.
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "root1", Size: 1 << 20}))
	if _, err := c.ApplySnapshot(ctx, volID, "gold", apitypes.SnapshotApply{}); core.CodeOf(err) != "name_taken" {
		t.Fatalf("apply on deleted volume whose name was taken: %v, want 409 name_taken", err)
	}
	waitOK(t, c)(c.ApplySnapshot(ctx, volID, "gold", apitypes.SnapshotApply{Name: "root1-back"}))
	v = mustVolume(t, c, volID)
	if v.State != apitypes.VolumeReady || v.Name != "root1-back" || v.HeadParentID == nil {
		t.Fatalf("after apply: %+v", v)
	}
	// Deleted again, then its last snapshot deleted: the volume and its file go.
	waitOK(t, c)(c.DeleteVolume(ctx, volID, false))
	waitOK(t, c)(c.DeleteSnapshot(ctx, volID, "gold", false))
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.GetVolume(ctx, volID)
		if core.KindOf(err) == core.KindNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume still there after its last snapshot went: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(srv.Data, "volumes", volID+".qcow2")); !os.IsNotExist(err) {
		t.Fatalf("the qcow2 file is still there: %v", err)
	}
	// --purge removes a volume with snapshots at once.
	waitOK(t, c)(c.CreateSnapshot(ctx, "root1", apitypes.SnapshotCreate{Name: "x"}))
	waitOK(t, c)(c.DeleteVolume(ctx, "root1", true))
	if _, err := c.GetVolume(ctx, "root1"); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("purged volume: %v", err)
	}
}

func TestSnapshotToVolume(t *testing.T) {
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "data", Size: 1 << 20}))
	r := &treeRun{t: t, c: c, srv: srv, vol: mustVolume(t, c, "data"), m: newModel(1 << 20), scratch: -1}
	r.write(3, 0x99)
	waitOK(t, c)(c.CreateSnapshot(ctx, "data", apitypes.SnapshotCreate{Name: "s"}))
	r.write(3, 0x11)
	// While the source stays exported writable, copy its snapshot.
	_, liveURI := r.export("", true)
	runTool(t, "qemu-io", "-f", "raw", "-c", "write -P 0x22 0 64k", liveURI)
	task := waitOK(t, c)(c.SnapshotToVolume(ctx, "data", "s", apitypes.SnapshotToVolume{Name: "copy"}))
	nv := mustVolume(t, c, task.ResourceID)
	if nv.Name != "copy" || nv.Kind != apitypes.KindData || nv.Size != 1<<20 || nv.SnapshotCount != 0 {
		t.Fatalf("new volume: %+v", nv)
	}
	path := filepath.Join(srv.Data, "volumes", nv.ID+".qcow2")
	runTool(t, "qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x99 192k 64k", "-c", "read -P 0 0 64k", path)
	runTool(t, "qemu-img", "check", path)
}

func TestSnapshotLimit(t *testing.T) {
	srv := startServer(t, serverOpts{extraArgs: []string{"--max-snapshots-per-volume", "3"}})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "v", Size: 1 << 20}))
	for i := 0; i < 3; i++ {
		waitOK(t, c)(c.CreateSnapshot(ctx, "v", apitypes.SnapshotCreate{}))
	}
	_, err := c.CreateSnapshot(ctx, "v", apitypes.SnapshotCreate{})
	if core.CodeOf(err) != "limit_reached" || !strings.Contains(err.Error(), "3") {
		t.Fatalf("4th snapshot: %v, want 409 limit_reached naming the limit", err)
	}
	if got := mustVolume(t, c, "v").SnapshotCount; got != 3 {
		t.Fatalf("snapshot count %d after refusal", got)
	}
}

func TestCorruptVolumeFile(t *testing.T) {
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "good", Size: 1 << 20}))
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "bad", Size: 1 << 20}))
	waitOK(t, c)(c.CreateSnapshot(ctx, "bad", apitypes.SnapshotCreate{Name: "s"}))
	bad := mustVolume(t, c, "bad")
	path := filepath.Join(srv.Data, "volumes", bad.ID+".qcow2")
	// Overwrite the header's magic: the file is no longer a qcow2 image.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("garbage!"), 0)
	f.Close()
	task := waitFail(t, c)(c.CreateSnapshot(ctx, "bad", apitypes.SnapshotCreate{Name: "t"}))
	if !strings.Contains(task.Error, "not a qcow2 file") {
		t.Fatalf("error does not say what failed: %q", task.Error)
	}
	if got := treeOf(t, c, "bad"); got != "s<-:ready | head=s | ready" {
		t.Fatalf("tree after failed snapshot on corrupt file: %s", got)
	}
	// The other volume is untouched.
	waitOK(t, c)(c.CreateSnapshot(ctx, "good", apitypes.SnapshotCreate{Name: "fine"}))
	// At the next start the unreadable file puts the volume in error.
	srv.Stop()
	srv = startServer(t, serverOpts{data: srv.Data, listen: srv.Listen})
	c = srv.Client(t)
	deadline := time.Now().Add(20 * time.Second)
	for mustVolume(t, c, "bad").State != apitypes.VolumeError {
		if time.Now().After(deadline) {
			t.Fatalf("corrupt volume state %q, want error", mustVolume(t, c, "bad").State)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := mustVolume(t, c, "good"); v.State != apitypes.VolumeReady || v.SnapshotCount != 1 {
		t.Fatalf("good volume after restart: %+v", v)
	}
}

// startNode runs `cairn node` as its own process.
func startNode(t *testing.T, srv *serverProc, token, data string) *exec.Cmd {
	cmd := exec.Command(cairnBin, "node", "--server", srv.URL, "--token", token, "--data", data, "--log-level", "debug")
	var logb strings.Builder
	cmd.Stdout, cmd.Stderr = &logb, &logb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("node log:\n%s", logb.String())
		}
	})
	return cmd
}

// TestSeparateNodeAndQueue runs the worker as its own process. Until it starts,
// tasks queue in order; conflicting requests answer 409 at once.
func TestSeparateNodeAndQueue(t *testing.T) {
	srv := startServer(t, serverOpts{extraArgs: []string{"--no-node"}})
	c := srv.Client(t)
	ctx := testCtx(t)
	n, err := c.CreateNode(ctx, apitypes.NodeCreate{Name: "host-b"})
	if err != nil || n.Token == "" {
		t.Fatalf("node add: %+v %v", n, err)
	}
	var tasks []apitypes.Task
	add := func(task apitypes.Task, err error) {
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		if task.State != apitypes.TaskQueued {
			t.Fatalf("task %s is %s with no node running", task.Kind, task.State)
		}
		tasks = append(tasks, task)
	}
	add(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "q", Size: 1 << 20}))
	add(c.CreateSnapshot(ctx, "q", apitypes.SnapshotCreate{Name: "s1"}))
	add(c.CreateSnapshot(ctx, "q", apitypes.SnapshotCreate{Name: "s2"}))
	// s1 is still being created: deleting it conflicts at once.
	if _, err := c.DeleteSnapshot(ctx, "q", "s1", false); core.KindOf(err) != core.KindConflict {
		t.Fatalf("delete a snapshot still being created: %v, want 409", err)
	}
	// A queued cancel ends the task at once and releases what it reserved.
	cancelMe, err := c.CreateSnapshot(ctx, "q", apitypes.SnapshotCreate{Name: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	ct, err := c.CancelTask(ctx, cancelMe.ID)
	if err != nil || ct.State != apitypes.TaskCanceled {
		t.Fatalf("cancel queued: %+v %v", ct, err)
	}
	if _, err := c.GetSnapshot(ctx, "q", "gone"); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("canceled snapshot still listed: %v", err)
	}
	startNode(t, srv, n.Token, t.TempDir())
	for _, task := range tasks {
		mustTask(t, c, task, nil)
	}
	// A queued apply of s1 holds s1: deleting s1 answers 409 while the apply is queued.
	waitOK(t, c)(c.ApplySnapshot(ctx, "q", "s1", apitypes.SnapshotApply{}))
	if got := treeOf(t, c, "q"); got != "s1<-:ready s2<-s1:ready | head=s1 | ready" {
		t.Fatalf("tree: %s", got)
	}
	node, err := c.GetNode(ctx, "host-b")
	if err != nil || node.State != apitypes.NodeOnline || node.Capacity == 0 {
		t.Fatalf("node: %+v %v", node, err)
	}
	if v := mustVolume(t, c, "q"); v.Node != "host-b" {
		t.Fatalf("volume on node %q", v.Node)
	}
}

// TestQueuedApplyBlocksDelete checks the 409 for deleting what a queued apply needs.
func TestQueuedApplyBlocksDelete(t *testing.T) {
	srv := startServer(t, serverOpts{extraArgs: []string{"--no-node"}})
	c := srv.Client(t)
	ctx := testCtx(t)
	n, _ := c.CreateNode(ctx, apitypes.NodeCreate{Name: "n1"})
	v, _ := c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "v", Size: 1 << 20})
	s, _ := c.CreateSnapshot(ctx, "v", apitypes.SnapshotCreate{Name: "a"})
	dir := t.TempDir()
	node := startNode(t, srv, n.Token, dir)
	mustTask(t, c, v, nil)
	mustTask(t, c, s, nil)
	node.Process.Signal(syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	ap, err := c.ApplySnapshot(ctx, "v", "a", apitypes.SnapshotApply{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSnapshot(ctx, "v", "a", false); core.KindOf(err) != core.KindConflict {
		t.Fatalf("delete a snapshot a queued apply needs: %v, want 409", err)
	}
	if _, err := c.DeleteVolume(ctx, "v", false); err != nil {
		t.Fatalf("deleting the volume queues behind the apply: %v", err)
	}
	startNode(t, srv, n.Token, dir)
	mustTask(t, c, ap, nil)
}

func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs and needs root (CI runs as root)")
	}
	srv := startServer(t, serverOpts{extraArgs: []string{"--no-node"}})
	c := srv.Client(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	n, _ := c.CreateNode(ctx, apitypes.NodeCreate{Name: "small"})
	startNode(t, srv, n.Token, dir)
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "keep", Size: 1 << 20}))
	waitOK(t, c)(c.CreateSnapshot(ctx, "keep", apitypes.SnapshotCreate{Name: "s"}))
	// An import bigger than the disk fails with qemu-img's message and leaves nothing.
	src := filepath.Join(t.TempDir(), "big.raw")
	buf := make([]byte, 16<<20)
	rand.Read(buf)
	os.WriteFile(src, buf, 0o644)
	task := waitFail(t, c)(c.ImportVolume(ctx, apitypes.VolumeImport{Name: "big", Path: src, Format: "raw"}))
	if !strings.Contains(task.Error, "No space left on device") {
		t.Fatalf("import on a full disk: %q; want qemu-img's 'No space left on device'", task.Error)
	}
	if _, err := c.GetVolume(ctx, "big"); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("failed import left a volume: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "volumes", "*.qcow2"))
	if len(files) != 1 {
		t.Fatalf("files on the node after the failed import: %v", files)
	}
	// The existing volume is consistent and still works.
	runTool(t, "qemu-img", "check", files[0])
	waitOK(t, c)(c.CreateSnapshot(ctx, "keep", apitypes.SnapshotCreate{Name: "t"}))
	if got := treeOf(t, c, "keep"); got != "s<-:ready t<-s:ready | head=t | ready" {
		t.Fatalf("tree: %s", got)
	}
}

func TestImportCancel(t *testing.T) {
	testenv.RequireTool(t, "qemu-img")
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	ctx := testCtx(t)
	// 2 GiB whose every 64 KiB cluster holds some data: converting it writes
	// all of it, which takes long enough to cancel midway.
	src := filepath.Join(t.TempDir(), "big.raw")
	f, _ := os.Create(src)
	chunk := make([]byte, 512)
	for off := int64(0); off < 2<<30; off += 64 << 10 {
		rand.Read(chunk)
		f.WriteAt(chunk, off)
	}
	f.Close()
	task, err := c.ImportVolume(ctx, apitypes.VolumeImport{Name: "slow", Path: src, Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		tk, _ := c.GetTask(ctx, task.ID)
		if tk.State == apitypes.TaskRunning || apitypes.TaskDone(tk.State) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := c.CancelTask(ctx, task.ID); err != nil {
		t.Fatalf("cancel running import: %v", err)
	}
	done, err := c.WaitTask(ctx, task.ID, nil)
	if done.State == apitypes.TaskSucceeded {
		t.Fatalf("the import finished before the cancel reached it: make the source slower to convert")
	}
	if done.State != apitypes.TaskCanceled {
		t.Fatalf("canceled import ended %s (%v): %s", done.State, err, done.Error)
	}
	if _, err := c.GetVolume(ctx, "slow"); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("canceled import left a volume: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(srv.Data, "volumes", "*"))
	if len(files) != 0 {
		t.Fatalf("canceled import left files: %v", files)
	}
}
