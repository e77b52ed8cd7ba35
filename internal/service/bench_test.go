package service

import (
	"context"
	"fmt"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
)

// BenchmarkListSnapshots1000 lists a volume with 1,000 snapshots in one page,
// as `cairn snapshot list` does.
func BenchmarkListSnapshots1000(b *testing.B) {
	s, admin, _ := newTestService(b)
	ctx := context.Background()
	seedSnapshots(b, s, admin, 1000)
	pg := Page{Limit: 1000}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, err := s.ListSnapshots(ctx, admin, "big", pg)
		if err != nil || len(l.Items) != 1000 {
			b.Fatalf("%d items, %v", len(l.Items), err)
		}
	}
}

// BenchmarkPlanAndCommit1000 measures the metadata side of one snapshot create
// on a volume that already has 999: claim (plan with sidecar) and complete.
func BenchmarkPlanAndCommit1000(b *testing.B) {
	s, admin, node := newTestService(b)
	ctx := context.Background()
	seedSnapshots(b, s, admin, 999)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		task, err := s.CreateSnapshot(ctx, admin, "big", apitypes.SnapshotCreate{Name: fmt.Sprintf("b%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		nt, err := s.Claim(ctx, node, 0)
		if err != nil || nt == nil || nt.Task.ID != task.ID {
			b.Fatalf("claim: %v %v", nt, err)
		}
		if err := s.Complete(ctx, node, task.ID, apitypes.NodeComplete{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		del, _ := s.DeleteSnapshot(ctx, admin, "big", fmt.Sprintf("b%d", i), false)
		nt, _ = s.Claim(ctx, node, 0)
		s.Complete(ctx, node, del.ID, apitypes.NodeComplete{})
		b.StartTimer()
	}
}

// seedSnapshots makes volume "big" with n ready snapshots in one chain,
// written straight to the metadata.
func seedSnapshots(b *testing.B, s *Service, admin Caller, n int) {
	ctx := context.Background()
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		v, err := s.newVolume(ctx, tx, admin, "big", "data", "", 1<<30, apitypes.VolumeReady)
		if err != nil {
			return err
		}
		var parent *string
		for i := 0; i < n; i++ {
			id := core.NewID()
			if err := tx.InsertSnapshot(ctx, meta.Snapshot{ID: id, VolumeID: v.ID, Name: fmt.Sprintf("s%04d", i), Tag: id,
				ParentID: parent, Kind: SnapshotUser, State: apitypes.SnapshotReady, Size: 1 << 30, CreatedAt: s.now()}); err != nil {
				return err
			}
			p := id
			parent = &p
		}
		v.HeadParentID = parent
		return tx.UpdateVolume(ctx, v)
	})
	if err != nil {
		b.Fatal(err)
	}
}
