package e2e

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
)

// treeOf renders a volume's snapshots as sorted "name<-parent:state" plus its head.
func treeOf(t *testing.T, c *client.Client, vol string) string {
	t.Helper()
	ctx := testCtx(t)
	v, err := c.GetVolume(ctx, vol)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := c.AllSnapshots(ctx, vol)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, s := range ss {
		names[s.ID] = s.Name
	}
	var parts []string
	for _, s := range ss {
		p := ""
		if s.ParentID != nil {
			p = names[*s.ParentID]
		}
		parts = append(parts, s.Name+"<-"+p+":"+s.State)
	}
	sort.Strings(parts)
	head := ""
	if v.HeadParentID != nil {
		head = names[*v.HeadParentID]
	}
	return strings.Join(parts, " ") + " | head=" + head + " | " + v.State
}

// crashAt runs one action on a server armed with a failpoint, expects the
// server to die there, restarts it and returns the restarted server.
func crashAt(t *testing.T, data, failpoint string, action func(c *client.Client)) *serverProc {
	t.Helper()
	srv := startServer(t, serverOpts{data: data, env: []string{"CAIRN_FAILPOINT=" + failpoint}})
	action(srv.Client(t))
	if err := srv.WaitExit(60 * time.Second); err == nil {
		t.Fatalf("failpoint %s: the server exited cleanly, want killed", failpoint)
	}
	return startServer(t, serverOpts{data: data, listen: srv.Listen})
}

func TestCrashBetweenDiskAndMetadata(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, serverOpts{data: data})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "vol", Size: 1 << 20}))
	waitOK(t, c)(c.CreateSnapshot(ctx, "vol", apitypes.SnapshotCreate{Name: "a"}))
	waitOK(t, c)(c.CreateSnapshot(ctx, "vol", apitypes.SnapshotCreate{Name: "b"}))
	// A writable export that must come back on the same URI after the crash.
	et := waitOK(t, c)(c.CreateExport(ctx, "vol", apitypes.ExportCreate{Writable: true}))
	exp, _ := c.GetExport(ctx, "vol", et.ResourceID)
	srv.Stop()
	submit := func(fn func(c *client.Client) (apitypes.Task, error)) func(c *client.Client) {
		return func(c *client.Client) {
			if _, err := fn(c); err != nil {
				t.Fatalf("submit: %v", err)
			}
		}
	}
	create := submit(func(c *client.Client) (apitypes.Task, error) {
		return c.CreateSnapshot(testCtx(t), "vol", apitypes.SnapshotCreate{Name: "c"})
	})

	// Killed before the disk changed: nothing happened; the task failed.
	srv = crashAt(t, data, "snapshot.create:before-disk", create)
	c = srv.Client(t)
	if got, want := treeOf(t, c, "vol"), "a<-:ready b<-a:ready | head=b | ready"; got != want {
		t.Fatalf("after crash before disk:\n got %s\nwant %s", got, want)
	}
	failed, err := c.AllTasks(testCtx(t), client.TaskFilter{State: apitypes.TaskFailed})
	if err != nil || len(failed) != 1 || !strings.Contains(failed[0].Error, "server restarted") {
		t.Fatalf("failed tasks after crash: %+v %v", failed, err)
	}
	// The export came back on the same URI, served again.
	e2, err := c.GetExport(testCtx(t), "vol", exp.ID)
	if err != nil || e2.URI != exp.URI {
		t.Fatalf("export after restart: %+v %v, want URI %s", e2, err, exp.URI)
	}
	runTool(t, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k", exp.URI)
	srv.Stop()

	// Killed after the qcow2 snapshot was made, before the metadata commit: the
	// snapshot is adopted as an orphan at the root; the head did not move.
	srv = crashAt(t, data, "snapshot.create:after-disk", create)
	c = srv.Client(t)
	got := treeOf(t, c, "vol")
	if !strings.HasPrefix(got, "a<-:ready b<-a:ready orphan-") || !strings.Contains(got, "<-:orphan | head=b | ready") {
		t.Fatalf("after crash after disk: %s; want a, b and one orphan at the root, head b", got)
	}
	srv.Stop()

	// Delete killed after the disk change: the snapshot is missing from the file.
	del := submit(func(c *client.Client) (apitypes.Task, error) { return c.DeleteSnapshot(testCtx(t), "vol", "a", false) })
	srv = crashAt(t, data, "snapshot.delete:after-disk", del)
	c = srv.Client(t)
	if got := treeOf(t, c, "vol"); !strings.Contains(got, "a<-:missing") || !strings.Contains(got, "b<-a:ready") {
		t.Fatalf("after delete crash: %s; want a missing, b under a", got)
	}
	// A missing snapshot can only be deleted; deleting it finishes the job.
	if _, err := c.ApplySnapshot(testCtx(t), "vol", "a", apitypes.SnapshotApply{}); err == nil {
		t.Fatal("applying a missing snapshot was accepted")
	}
	waitOK(t, c)(c.DeleteSnapshot(testCtx(t), "vol", "a", false))
	if got := treeOf(t, c, "vol"); !strings.HasPrefix(got, "b<-:ready orphan-") {
		t.Fatalf("after deleting the missing snapshot: %s", got)
	}
	// qemu-img check stays clean through all of it.
	path := filepath.Join(data, "volumes", mustVolume(t, c, "vol").ID+".qcow2")
	if out := runTool(t, "qemu-img", "check", "-U", path); !strings.Contains(out, "No errors") {
		t.Fatalf("qemu-img check: %s", out)
	}
}

func mustVolume(t *testing.T, c *client.Client, name string) apitypes.Volume {
	t.Helper()
	v, err := c.GetVolume(testCtx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestKilledServerLeavesNoHelpers(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, serverOpts{data: data})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "vol", Size: 1 << 20}))
	waitOK(t, c)(c.CreateSnapshot(ctx, "vol", apitypes.SnapshotCreate{Name: "s"}))
	waitOK(t, c)(c.CreateExport(ctx, "vol", apitypes.ExportCreate{Writable: true}))
	waitOK(t, c)(c.CreateExport(ctx, "vol", apitypes.ExportCreate{Snapshot: "s"}))
	pids := helperPIDs(t, data)
	if len(pids) != 2 {
		t.Fatalf("helpers running: %v, want 2", pids)
	}
	srv.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("helper %d outlived the killed server", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// After a restart both exports are served again.
	srv = startServer(t, serverOpts{data: data, listen: srv.Listen})
	c = srv.Client(t)
	es, err := c.AllExports(testCtx(t), "vol")
	if err != nil || len(es) != 2 {
		t.Fatalf("exports after restart: %v %v", es, err)
	}
	for _, e := range es {
		runTool(t, "qemu-io", "-r", "-f", "raw", "-c", "read 0 64k", e.URI)
	}
}

func helperPIDs(t *testing.T, data string) []int {
	files, _ := filepath.Glob(filepath.Join(data, "run", "*.pid"))
	var out []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var pid int
		for _, ch := range strings.TrimSpace(string(b)) {
			pid = pid*10 + int(ch-'0')
		}
		if pid > 0 {
			out = append(out, pid)
		}
	}
	return out
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// A zombie (state Z) is dead for our purpose.
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

func TestRebuildMetadata(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, serverOpts{data: data})
	c := srv.Client(t)
	ctx := testCtx(t)
	if _, err := c.CreateProject(ctx, apitypes.ProjectCreate{Name: "team"}); err != nil {
		t.Fatal(err)
	}
	ct := srv.Client(t, client.WithProject("team"))
	waitOK(t, ct)(ct.CreateVolume(ctx, apitypes.VolumeCreate{Name: "web", Size: 1 << 20, Kind: apitypes.KindRoot}))
	for _, n := range []string{"a", "b"} {
		waitOK(t, ct)(ct.CreateSnapshot(ctx, "web", apitypes.SnapshotCreate{Name: n}))
	}
	waitOK(t, ct)(ct.ApplySnapshot(ctx, "web", "a", apitypes.SnapshotApply{}))
	waitOK(t, ct)(ct.CreateSnapshot(ctx, "web", apitypes.SnapshotCreate{Name: "c"}))
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "plain", Size: 2 << 20}))
	before := treeOf(t, ct, "web")
	repoPW, err := c.GetRepository(ctx, "default", true)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	for _, f := range []string{"cairn.db", "cairn.db-wal", "cairn.db-shm", "admin.token"} {
		os.Remove(filepath.Join(data, f))
	}
	srv = startServer(t, serverOpts{data: data, listen: srv.Listen, extraArgs: []string{"--rebuild-metadata"}})
	if !strings.Contains(srv.Log(), "2 volumes added") {
		t.Fatalf("rebuild did not report 2 volumes:\n%s", srv.Log())
	}
	ct = srv.Client(t, client.WithProject("team"))
	if after := treeOf(t, ct, "web"); after != before {
		t.Fatalf("tree after rebuild:\n got %s\nwant %s", after, before)
	}
	v := mustVolume(t, ct, "web")
	if v.Kind != apitypes.KindRoot || v.Size != 1<<20 {
		t.Fatalf("rebuilt volume: %+v", v)
	}
	if p := mustVolume(t, srv.Client(t), "plain"); p.Size != 2<<20 {
		t.Fatalf("rebuilt plain volume: %+v", p)
	}
	// The default repository outlives the metadata: the server starts,
	// says so, and the repository is adopted back with its password.
	if !strings.Contains(srv.Log(), "holds a repository the metadata does not know") {
		t.Fatalf("no word about the orphaned default repository:\n%s", srv.Log())
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte(repoPW.Password+"\n"), 0o600)
	cliOK(t, srv, "repository", "create", "default", "--url", repoPW.URL, "--password-file", pwFile)
	if r, err := srv.Client(t).GetRepository(ctx, "default", false); err != nil || r.State != apitypes.RepositoryReady || !r.Default {
		t.Fatalf("adopted repository: %+v %v", r, err)
	}
}

func TestMissingVolumeFile(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, serverOpts{data: data})
	c := srv.Client(t)
	waitOK(t, c)(c.CreateVolume(testCtx(t), apitypes.VolumeCreate{Name: "gone", Size: 1 << 20}))
	waitOK(t, c)(c.CreateSnapshot(testCtx(t), "gone", apitypes.SnapshotCreate{Name: "s"}))
	path := filepath.Join(data, "volumes", mustVolume(t, c, "gone").ID+".qcow2")
	srv.Stop()
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	srv = startServer(t, serverOpts{data: data, listen: srv.Listen})
	c = srv.Client(t)
	v := mustVolume(t, c, "gone")
	if v.State != apitypes.VolumeError || !strings.Contains(v.StateDetail, "missing") {
		t.Fatalf("volume with its file gone: %s %q, want error naming the missing file", v.State, v.StateDetail)
	}
	if _, err := c.CreateSnapshot(testCtx(t), "gone", apitypes.SnapshotCreate{}); err == nil {
		t.Fatal("a snapshot of a volume in error was accepted")
	}
	// The file comes back: so does the volume, with its tree.
	srv.Stop()
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	srv = startServer(t, serverOpts{data: data, listen: srv.Listen})
	c = srv.Client(t)
	if got := treeOf(t, c, "gone"); got != "s<-:ready | head=s | ready" {
		t.Fatalf("after the file came back: %s", got)
	}
}
