package service

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta/sqlite"
)

// newTestService opens a real SQLite store with a bootstrapped admin and one node.
func newTestService(t testing.TB) (*Service, Caller, Caller) {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := New(db, Config{NodeTimeout: time.Minute})
	secret, err := s.Bootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := s.Authenticate(ctx, secret, "")
	if err != nil {
		t.Fatal(err)
	}
	_, nodeSecret, err := s.EnsureLocalNode(ctx, "local")
	if err != nil {
		t.Fatal(err)
	}
	node, err := s.Authenticate(ctx, nodeSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterNode(ctx, node, apitypes.NodeRegister{}); err != nil {
		t.Fatal(err)
	}
	return s, admin, node
}

func claimNow(t *testing.T, s *Service, node Caller) *apitypes.NodeTask {
	t.Helper()
	nt, err := s.Claim(context.Background(), node, 0)
	if err != nil {
		t.Fatal(err)
	}
	return nt
}

func TestQueueOrderPerVolume(t *testing.T) {
	s, admin, node := newTestService(t)
	ctx := context.Background()
	a, _ := s.CreateVolume(ctx, admin, apitypes.VolumeCreate{Name: "a", Size: 1 << 20})
	b, _ := s.CreateVolume(ctx, admin, apitypes.VolumeCreate{Name: "b", Size: 1 << 20})
	snapA, err := s.CreateSnapshot(ctx, admin, "a", apitypes.SnapshotCreate{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	// Volume a's create and volume b's create run in parallel; a's snapshot waits for a's create.
	first := claimNow(t, s, node)
	second := claimNow(t, s, node)
	if first == nil || second == nil || first.Task.ID != a.ID || second.Task.ID != b.ID {
		t.Fatalf("claims: %+v %+v; want the two volume creates", first, second)
	}
	if nt := claimNow(t, s, node); nt != nil {
		t.Fatalf("claimed %s while the volume's earlier task runs", nt.Task.Kind)
	}
	if err := s.Complete(ctx, node, first.Task.ID, apitypes.NodeComplete{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	nt := claimNow(t, s, node)
	if nt == nil || nt.Task.ID != snapA.ID || nt.Plan.Tag == "" || nt.Plan.Sidecar == nil {
		t.Fatalf("after the create: %+v", nt)
	}
	// The plan's sidecar already shows the snapshot as the head's parent.
	if sc := nt.Plan.Sidecar; len(sc.Snapshots) != 1 || sc.HeadParentID == nil || *sc.HeadParentID != sc.Snapshots[0].ID {
		t.Fatalf("sidecar in the plan: %+v", sc)
	}
	// A node cannot complete another's or an unknown task.
	if err := s.Complete(ctx, node, core.NewID(), apitypes.NodeComplete{}); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("complete unknown task: %v", err)
	}
	// A failure releases the reserved snapshot.
	if err := s.Complete(ctx, node, nt.Task.ID, apitypes.NodeComplete{Error: "disk on fire", ErrorCode: "node_error"}); err != nil {
		t.Fatal(err)
	}
	task, _ := s.GetTask(ctx, admin, snapA.ID, 0)
	if task.State != apitypes.TaskFailed || task.Error != "disk on fire" {
		t.Fatalf("failed task: %+v", task)
	}
	if _, err := s.GetSnapshot(ctx, admin, "a", "s"); !core.IsNotFound(err) {
		t.Fatalf("snapshot after failed create: %v", err)
	}
}

func TestLostNodeFailsItsRunningTasks(t *testing.T) {
	s, admin, node := newTestService(t)
	ctx := context.Background()
	v, _ := s.CreateVolume(ctx, admin, apitypes.VolumeCreate{Name: "a", Size: 1 << 20})
	nt := claimNow(t, s, node)
	if nt == nil {
		t.Fatal("nothing claimed")
	}
	if n, _ := s.FailLostNodes(ctx); n != 0 {
		t.Fatalf("a live node lost %d tasks", n)
	}
	s.now = func() time.Time { return time.Now().UTC().Add(2 * time.Minute) }
	if n, err := s.FailLostNodes(ctx); n != 1 || err != nil {
		t.Fatalf("FailLostNodes = %d, %v; want 1", n, err)
	}
	task, _ := s.GetTask(ctx, admin, v.ID, 0)
	if task.State != apitypes.TaskFailed || task.ErrorCode != "node_lost" {
		t.Fatalf("task of the lost node: %+v", task)
	}
	if _, err := s.GetVolume(ctx, admin, "a"); !core.IsNotFound(err) {
		t.Fatalf("the volume whose create was lost is still listed: %v", err)
	}
	n, _ := s.GetNode(ctx, admin, "local")
	if n.State != apitypes.NodeOffline {
		t.Fatalf("node state %s, want offline", n.State)
	}
	// The node's late report is refused; the task stays failed.
	if err := s.Complete(ctx, node, nt.Task.ID, apitypes.NodeComplete{}); core.KindOf(err) != core.KindConflict {
		t.Fatalf("late complete: %v", err)
	}
}

func TestCancelRunningNeedsCancelable(t *testing.T) {
	s, admin, node := newTestService(t)
	ctx := context.Background()
	s.CreateVolume(ctx, admin, apitypes.VolumeCreate{Name: "a", Size: 1 << 20})
	nt := claimNow(t, s, node)
	if _, err := s.CancelTask(ctx, admin, nt.Task.ID); core.CodeOf(err) != "not_cancelable" {
		t.Fatalf("cancel a running create: %v, want 409 not_cancelable", err)
	}
	imp, _ := s.ImportVolume(ctx, admin, apitypes.VolumeImport{Name: "i", Path: "/x.raw"})
	nt2 := claimNow(t, s, node)
	if nt2 == nil || nt2.Task.ID != imp.ID {
		t.Fatalf("claim import: %+v", nt2)
	}
	if tk, err := s.CancelTask(ctx, admin, imp.ID); err != nil || tk.State != apitypes.TaskRunning {
		t.Fatalf("cancel running import: %+v %v", tk, err)
	}
	chk, _ := s.Progress(ctx, node, imp.ID, apitypes.NodeProgress{BytesDone: 1, BytesTotal: 2})
	if !chk.Cancel {
		t.Fatal("progress answer does not ask to cancel")
	}
	s.Complete(ctx, node, imp.ID, apitypes.NodeComplete{Error: "canceled", ErrorCode: "canceled"})
	tk, _ := s.GetTask(ctx, admin, imp.ID, 0)
	if tk.State != apitypes.TaskCanceled {
		t.Fatalf("import ended %s", tk.State)
	}
}

func TestNodeRestartFailsItsRunningTasks(t *testing.T) {
	s, admin, node := newTestService(t)
	ctx := context.Background()
	v, _ := s.CreateVolume(ctx, admin, apitypes.VolumeCreate{Name: "a", Size: 1 << 20})
	nt := claimNow(t, s, node)
	s.Complete(ctx, node, nt.Task.ID, apitypes.NodeComplete{Size: 1 << 20})
	snap, _ := s.CreateSnapshot(ctx, admin, "a", apitypes.SnapshotCreate{Name: "s"})
	if nt = claimNow(t, s, node); nt == nil || nt.Task.ID != snap.ID {
		t.Fatalf("claim: %+v", nt)
	}
	// The node restarts with the tag already in its file: the task fails and the
	// snapshot is adopted as an orphan.
	_, err := s.Inventory(ctx, node, apitypes.NodeInventory{Volumes: []apitypes.InventoryVolume{{
		ID: v.ResourceID, Present: true, Size: 1 << 20,
		Snapshots: []apitypes.InventorySnapshot{{Tag: nt.Plan.Tag, Size: 1 << 20}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	task, _ := s.GetTask(ctx, admin, snap.ID, 0)
	if task.State != apitypes.TaskFailed || task.ErrorCode != "interrupted" || !strings.Contains(task.Error, "node restarted") {
		t.Fatalf("task after the node restarted: %+v", task)
	}
	l, _ := s.ListSnapshots(ctx, admin, "a", Page{Limit: 10})
	if len(l.Items) != 1 || l.Items[0].State != apitypes.SnapshotOrphan || l.Items[0].ID != nt.Plan.Tag {
		t.Fatalf("snapshots after the restart: %+v", l.Items)
	}
}
