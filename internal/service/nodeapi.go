package service

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
)

func (c Caller) requireNode() error {
	if c.NodeID == "" {
		return core.Forbidden("only a node token reaches the node API")
	}
	return nil
}

// RegisterNode records a node's address and capacity as it starts.
func (s *Service) RegisterNode(ctx context.Context, c Caller, req apitypes.NodeRegister) (apitypes.Node, error) {
	if err := c.requireNode(); err != nil {
		return apitypes.Node{}, err
	}
	var out apitypes.Node
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		if err := tx.UpdateNodeHeartbeat(ctx, c.NodeID, req.Address, req.Capacity, req.Available, s.now()); err != nil {
			return err
		}
		n, err := tx.NodeByID(ctx, c.NodeID)
		out = s.nodeJSON(n)
		return err
	})
	return out, err
}

// Heartbeat records that a node is alive.
func (s *Service) Heartbeat(ctx context.Context, c Caller, req apitypes.NodeHeartbeat) error {
	_, err := s.RegisterNode(ctx, c, req)
	return err
}

// Claim hands the node its next runnable task with the plan to carry out,
// waiting up to wait; nil when nothing came.
func (s *Service) Claim(ctx context.Context, c Caller, wait time.Duration) (*apitypes.NodeTask, error) {
	if err := c.requireNode(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		ch := s.changed.wait()
		var out *apitypes.NodeTask
		var failed []meta.Task
		// Look first without taking the write lock: idle nodes poll often.
		runnable := false
		err := s.db.View(ctx, func(tx *meta.Tx) error {
			_, err := tx.NextRunnableTask(ctx, c.NodeID)
			if err == nil {
				runnable = true
			} else if meta.IsNoRows(err) {
				err = nil
			}
			return err
		})
		if err == nil && runnable {
			err = s.db.Update(ctx, func(tx *meta.Tx) error {
				for {
					t, err := tx.NextRunnableTask(ctx, c.NodeID)
					if meta.IsNoRows(err) {
						return nil
					}
					if err != nil {
						return err
					}
					o, err := s.prepare(ctx, tx, t)
					if err != nil {
						// The plan cannot be made (e.g. nothing left to revert): the task fails now.
						if uerr := s.undo(ctx, tx, t, nil); uerr != nil {
							return uerr
						}
						s.finish(&t, apitypes.TaskFailed, err.Error(), core.CodeOf(err))
						if err := tx.UpdateTask(ctx, t); err != nil {
							return err
						}
						failed = append(failed, t)
						continue
					}
					now := s.now()
					t.State, t.StartedAt = apitypes.TaskRunning, &now
					if err := tx.UpdateTask(ctx, t); err != nil {
						return err
					}
					j, err := s.taskJSON(ctx, tx, t)
					if err != nil {
						return err
					}
					out = &apitypes.NodeTask{Task: j, Plan: o.plan}
					return nil
				}
			})
		}
		for _, t := range failed {
			s.taskFinished(t)
		}
		if len(failed) > 0 {
			s.changed.notify()
		}
		if err != nil || out != nil {
			return out, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nil
		}
		if err := waitChange(ctx, ch, left); err != nil {
			return nil, nil
		}
	}
}

// nodeTask loads a task that must belong to the calling node.
func nodeTask(ctx context.Context, tx *meta.Tx, c Caller, id string) (meta.Task, error) {
	t, err := tx.TaskByID(ctx, id)
	if meta.IsNoRows(err) || (err == nil && t.NodeID != c.NodeID) {
		return t, core.NotFound("task %q not found", id)
	}
	return t, err
}

// Progress records a running task's progress and says whether to cancel it.
func (s *Service) Progress(ctx context.Context, c Caller, id string, req apitypes.NodeProgress) (apitypes.NodeCancelCheck, error) {
	if err := c.requireNode(); err != nil {
		return apitypes.NodeCancelCheck{}, err
	}
	var out apitypes.NodeCancelCheck
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		t, err := nodeTask(ctx, tx, c, id)
		if err != nil {
			return err
		}
		if t.State != apitypes.TaskRunning {
			out.Cancel = true
			return nil
		}
		t.BytesDone, t.BytesTotal = req.BytesDone, req.BytesTotal
		t.Log = append(t.Log, req.Log...)
		if len(t.Log) > 200 {
			t.Log = t.Log[len(t.Log)-200:]
		}
		out.Cancel = t.CancelRequested
		return tx.UpdateTask(ctx, t)
	})
	if err == nil {
		s.changed.notify()
	}
	return out, err
}

// Complete ends a running task: on success its change is committed to the
// metadata; on failure what it had reserved is released.
func (s *Service) Complete(ctx context.Context, c Caller, id string, req apitypes.NodeComplete) error {
	if err := c.requireNode(); err != nil {
		return err
	}
	var done meta.Task
	var purge *meta.Volume
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		t, err := nodeTask(ctx, tx, c, id)
		if err != nil {
			return err
		}
		if t.State != apitypes.TaskRunning {
			return core.Conflict("finished", "task %q is %s, not running", t.ID, t.State)
		}
		for k, v := range req.Result {
			if t.Result == nil {
				t.Result = map[string]string{}
			}
			t.Result[k] = v
		}
		if err := markVerified(ctx, tx, t, req.Result); err != nil {
			return err
		}
		if req.Error != "" {
			if err := s.undo(ctx, tx, t, &req); err != nil {
				return err
			}
			state := apitypes.TaskFailed
			if req.ErrorCode == "canceled" {
				state = apitypes.TaskCanceled
			}
			s.finish(&t, state, req.Error, req.ErrorCode)
		} else {
			if purge, err = s.commit(ctx, tx, &t, req); err != nil {
				return err
			}
			if t.VolumeID != "" && len(req.SnapshotUnique) > 0 {
				if err := tx.SetSnapshotUniqueBytes(ctx, t.VolumeID, req.SnapshotUnique); err != nil {
					return err
				}
			}
			s.finish(&t, apitypes.TaskSucceeded, "", "")
			if t.BytesTotal == 0 && (t.Kind == apitypes.OpVolumeImport || t.Kind == apitypes.OpSnapshotToVol) {
				t.BytesTotal = req.Size // finished before its first progress report
			}
			if t.BytesTotal > 0 {
				t.BytesDone = t.BytesTotal
			}
		}
		if err := tx.UpdateTask(ctx, t); err != nil {
			return err
		}
		if purge != nil {
			// The last snapshot of a deleted volume went: its file goes too.
			pt := s.newTask(Caller{}, apitypes.OpVolumeDelete, *purge, "volume", purge.ID, map[string]string{"purge": "true", "prev_state": apitypes.VolumeDeleted})
			purge.State = apitypes.VolumeDeleting
			if err := tx.UpdateVolume(ctx, *purge); err != nil {
				return err
			}
			if err := tx.InsertTask(ctx, pt); err != nil {
				return err
			}
		}
		done = t
		return nil
	})
	if err != nil {
		return err
	}
	s.taskFinished(done)
	s.changed.notify()
	return nil
}

// prepare readies the metadata for a task about to be claimed and returns
// its outcome: an export to start gets its server certificate now, so that
// the plan carries it.
func (s *Service) prepare(ctx context.Context, tx *meta.Tx, t meta.Task) (*outcome, error) {
	if h, ok := ownSteps(t); ok {
		return h.prepare(s, ctx, tx, t)
	}
	if t.Kind == apitypes.OpExportCreate {
		e, err := tx.ExportByID(ctx, t.VolumeID, t.Params["export_id"])
		if err != nil {
			return nil, err
		}
		v, err := tx.VolumeByID(ctx, t.VolumeID)
		if err != nil {
			return nil, err
		}
		if _, err := s.ensureExportCert(ctx, tx, &e, v); err != nil {
			return nil, err
		}
	}
	return s.outcome(ctx, tx, t)
}

// outcome is what a task does to the metadata when it succeeds, computed from
// the current metadata. The plan sent to the node and the commit both come from it.
type outcome struct {
	vol          meta.Volume
	tree         *Tree
	before       map[string]meta.Snapshot // the tree's snapshots as loaded
	removed      []meta.Snapshot
	deleteVolume bool
	target       *meta.Volume
	export       *meta.Export
	plan         apitypes.Plan
}

func loadTree(ctx context.Context, tx *meta.Tx, v meta.Volume) (*Tree, error) {
	ss, err := tx.Snapshots(ctx, v.ID, SnapshotUser, 0, 1<<30)
	if err != nil {
		return nil, err
	}
	return NewTree(v.HeadParentID, ss), nil
}

func (s *Service) outcome(ctx context.Context, tx *meta.Tx, t meta.Task) (*outcome, error) {
	v, err := tx.VolumeByID(ctx, t.VolumeID)
	if err != nil {
		return nil, fmt.Errorf("volume of task %s: %w", t.ID, err)
	}
	tree, err := loadTree(ctx, tx, v)
	if err != nil {
		return nil, err
	}
	o := &outcome{vol: v, tree: tree, before: map[string]meta.Snapshot{}, plan: apitypes.Plan{Op: t.Kind, VolumeID: v.ID}}
	for _, x := range tree.Snapshots() {
		o.before[x.ID] = x
	}
	o.vol.UpdatedAt = s.now()
	p := t.Params
	snap := func(id string) (*meta.Snapshot, error) {
		if sn := tree.Get(id); sn != nil {
			return sn, nil
		}
		return nil, core.NotFound("snapshot %s of volume %q no longer exists", id, v.Name)
	}
	switch t.Kind {
	case apitypes.OpVolumeCreate, apitypes.OpVolumeImport:
		o.vol.State = apitypes.VolumeReady
		o.plan.Size, _ = strconv.ParseInt(p["size"], 10, 64)
		o.plan.Source, o.plan.Format = p["source"], p["format"]
	case apitypes.OpVolumeGrow:
		o.vol.Size, _ = strconv.ParseInt(p["size"], 10, 64)
		if o.vol.Size <= v.Size {
			return nil, core.Invalid("volume %q is already %s", v.Name, core.FormatSize(v.Size))
		}
		o.plan.Size = o.vol.Size
	case apitypes.OpVolumeDelete:
		purge := p["purge"] == "true"
		o.plan.Purge = purge
		if tree.Len() > 0 && !purge {
			o.plan.KeepFile = true
			o.vol.State = apitypes.VolumeDeleted
		} else {
			o.deleteVolume = true
		}
	case apitypes.OpSnapshotCreate:
		sn, err := tx.SnapshotByID(ctx, v.ID, p["snapshot_id"])
		if err != nil {
			return nil, err
		}
		if err := liveVolume(v); err != nil {
			return nil, err
		}
		sn.State, sn.Size = apitypes.SnapshotReady, v.Size
		tree.Create(sn)
		o.plan.Tag = sn.Tag
	case apitypes.OpSnapshotDelete:
		sn, err := snap(p["snapshot_id"])
		if err != nil {
			return nil, err
		}
		ids := []string{sn.ID}
		if p["subtree"] == "true" {
			ids = tree.Subtree(sn.ID)
		}
		for _, id := range ids {
			x := tree.Get(id)
			o.removed = append(o.removed, *x)
			if x.State != apitypes.SnapshotMissing {
				o.plan.DeleteTags = append(o.plan.DeleteTags, x.Tag)
			}
		}
		if p["subtree"] == "true" {
			tree.DeleteSubtree(sn.ID)
		} else {
			tree.DeleteOne(sn.ID)
		}
	case apitypes.OpSnapshotApply:
		targetID := p["snapshot_id"]
		if p["revert"] == "true" {
			if v.HeadParentID == nil {
				return nil, core.Conflict("nothing_to_revert", "volume %q has no snapshot to revert to", v.Name)
			}
			targetID = *v.HeadParentID
		}
		target, err := snap(targetID)
		if err != nil {
			return nil, err
		}
		if target.State == apitypes.SnapshotMissing {
			return nil, core.Conflict("missing", "snapshot %q is missing from the volume's file", target.Name)
		}
		if id := p["save_snapshot_id"]; id != "" {
			saved, err := snap(id)
			if err != nil {
				return nil, err
			}
			sv := *saved
			sv.State, sv.Size = apitypes.SnapshotReady, v.Size
			tree.Create(sv)
			o.plan.SaveTag = sv.Tag
		}
		tree.Apply(target.ID)
		o.plan.Tag = target.Tag
		o.vol.State, o.vol.StateDetail, o.vol.Size = apitypes.VolumeReady, "", target.Size
		if n := p["name"]; n != "" {
			o.vol.Name = n
		}
		es, err := tx.Exports(ctx, v.ID)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if e.SnapshotID == nil {
				o.plan.Exports = append(o.plan.Exports, s.nodeExport(e, v, ""))
			}
		}
	case apitypes.OpSnapshotToVol:
		sn, err := snap(p["snapshot_id"])
		if err != nil {
			return nil, err
		}
		tv, err := tx.VolumeByID(ctx, t.TargetVolumeID)
		if err != nil {
			return nil, err
		}
		tv.State, tv.Size, tv.UpdatedAt = apitypes.VolumeReady, sn.Size, s.now()
		o.target = &tv
		o.plan.Tag, o.plan.TargetVolumeID = sn.Tag, tv.ID
		sc := s.sidecar(tx, ctx, tv, NewTree(nil, nil))
		o.plan.TargetSidecar = &sc
	case apitypes.OpExportCreate, apitypes.OpExportDelete:
		e, err := tx.ExportByID(ctx, v.ID, p["export_id"])
		if err != nil {
			return nil, err
		}
		tag := ""
		if e.SnapshotID != nil {
			sn, err := tx.SnapshotByID(ctx, v.ID, *e.SnapshotID)
			if err != nil {
				return nil, err
			}
			tag = sn.Tag
		}
		ne := s.nodeExport(e, v, tag)
		o.plan.Export = &ne
		o.export = &e
		return o, nil // exports do not change the sidecar
	default:
		return nil, core.Invalid("unknown task kind %q", t.Kind)
	}
	if !o.deleteVolume {
		sc := s.sidecar(tx, ctx, o.vol, tree)
		o.plan.Sidecar = &sc
	}
	return o, nil
}

// commit writes a succeeded task's outcome. It returns a volume whose file must
// now be purged (the last snapshot of a deleted volume went), if any.
func (s *Service) commit(ctx context.Context, tx *meta.Tx, t *meta.Task, r apitypes.NodeComplete) (*meta.Volume, error) {
	if h, ok := ownSteps(*t); ok {
		if h.commit == nil {
			return nil, nil
		}
		return nil, h.commit(s, ctx, tx, t, r)
	}
	o, err := s.outcome(ctx, tx, *t)
	if err != nil {
		return nil, err
	}
	switch t.Kind {
	case apitypes.OpExportCreate:
		o.export.Port, o.export.State = r.Port, "ready"
		return nil, tx.UpdateExport(ctx, *o.export)
	case apitypes.OpExportDelete:
		return nil, tx.DeleteExport(ctx, o.export.ID)
	case apitypes.OpSnapshotToVol:
		if r.Size > 0 {
			o.target.Size = r.Size
		}
		o.target.Allocated = r.Allocated
		return nil, tx.UpdateVolume(ctx, *o.target)
	}
	if o.deleteVolume {
		return nil, tx.DeleteVolume(ctx, o.vol.ID)
	}
	if r.Size > 0 {
		o.vol.Size = r.Size
	}
	if r.Allocated > 0 {
		o.vol.Allocated = r.Allocated
	}
	if t.Kind == apitypes.OpSnapshotApply && t.Params["save_snapshot_id"] != "" {
		t.Result["saved_snapshot_id"] = t.Params["save_snapshot_id"]
	}
	if err := s.writeTree(ctx, tx, o, r); err != nil {
		return nil, err
	}
	if o.vol.State == apitypes.VolumeDeleted && o.tree.Len() == 0 {
		return &o.vol, nil
	}
	return nil, nil
}

// writeTree stores the outcome's volume and tree.
func (s *Service) writeTree(ctx context.Context, tx *meta.Tx, o *outcome, r apitypes.NodeComplete) error {
	o.vol.HeadParentID = o.tree.HeadParent
	if err := tx.UpdateVolume(ctx, o.vol); err != nil {
		return err
	}
	for _, x := range o.removed {
		if err := tx.DeleteSnapshot(ctx, x.ID); err != nil {
			return err
		}
	}
	for _, x := range o.tree.Snapshots() {
		if sz, ok := r.SnapshotSizes[x.Tag]; ok && sz > 0 {
			x.Size = sz
		}
		if b, ok := o.before[x.ID]; ok && b.State == x.State && b.Size == x.Size && samePtr(b.ParentID, x.ParentID) {
			continue // unchanged: a task touches a few snapshots of a large tree
		}
		if err := tx.UpdateSnapshot(ctx, x); err != nil {
			return err
		}
	}
	return nil
}

// undo releases what a task reserved when it was submitted; r, when set, is
// the failing node's report (a save_current snapshot it did create is kept).
func (s *Service) undo(ctx context.Context, tx *meta.Tx, t meta.Task, r *apitypes.NodeComplete) error {
	if h, ok := ownSteps(t); ok {
		if h.undo == nil {
			return nil
		}
		return h.undo(s, ctx, tx, t, r)
	}
	return s.undoVolumeOp(ctx, tx, t, r)
}

// undoVolumeOp is undo's common path, for operations on a volume.
func (s *Service) undoVolumeOp(ctx context.Context, tx *meta.Tx, t meta.Task, r *apitypes.NodeComplete) error {
	p := t.Params
	v, err := tx.VolumeByID(ctx, t.VolumeID)
	if meta.IsNoRows(err) {
		return nil
	}
	if err != nil {
		return err
	}
	dropCreating := func(id string) error {
		sn, err := tx.SnapshotByID(ctx, v.ID, id)
		if meta.IsNoRows(err) || (err == nil && sn.State != apitypes.SnapshotCreating) {
			return nil
		}
		if err != nil {
			return err
		}
		return tx.DeleteSnapshot(ctx, id)
	}
	switch t.Kind {
	case apitypes.OpVolumeCreate, apitypes.OpVolumeImport:
		if v.State == apitypes.VolumeCreating || v.State == apitypes.VolumeImporting {
			return tx.DeleteVolume(ctx, v.ID)
		}
	case apitypes.OpSnapshotToVol:
		tv, err := tx.VolumeByID(ctx, t.TargetVolumeID)
		if err == nil && tv.State == apitypes.VolumeCreating {
			return tx.DeleteVolume(ctx, tv.ID)
		}
	case apitypes.OpSnapshotCreate:
		return dropCreating(p["snapshot_id"])
	case apitypes.OpSnapshotDelete:
		ss, err := tx.AllSnapshots(ctx, v.ID)
		if err != nil {
			return err
		}
		for _, x := range ss {
			if x.State == apitypes.SnapshotDeleting {
				x.State = apitypes.SnapshotReady
				if err := tx.UpdateSnapshot(ctx, x); err != nil {
					return err
				}
			}
		}
	case apitypes.OpSnapshotApply, apitypes.OpVolumeDelete, apitypes.OpBackupRestore: // the last: in place
		if saveID := p["save_snapshot_id"]; saveID != "" {
			sn, err := tx.SnapshotByID(ctx, v.ID, saveID)
			if err == nil && r != nil && r.SnapshotSizes[sn.Tag] > 0 {
				// The node saved the current disk before failing: keep it, as a create would.
				tree, err := loadTree(ctx, tx, v)
				if err != nil {
					return err
				}
				sn.State, sn.Size = apitypes.SnapshotReady, r.SnapshotSizes[sn.Tag]
				tree.Create(sn)
				v.HeadParentID = tree.HeadParent
				if err := tx.UpdateSnapshot(ctx, *tree.Get(sn.ID)); err != nil {
					return err
				}
			} else if err := dropCreating(saveID); err != nil {
				return err
			}
		}
		if prev := p["prev_state"]; prev != "" {
			v.State = prev
		} else {
			v.State = apitypes.VolumeReady
		}
		v.UpdatedAt = s.now()
		return tx.UpdateVolume(ctx, v)
	case apitypes.OpExportCreate:
		return tx.DeleteExport(ctx, p["export_id"])
	case apitypes.OpExportDelete:
		e, err := tx.ExportByID(ctx, v.ID, p["export_id"])
		if err == nil {
			e.State = "ready"
			return tx.UpdateExport(ctx, e)
		}
	}
	return nil
}

// steps are the metadata steps of an operation that does not follow the
// volume operations' common path: the plan made when a node claims it, the
// commit of its success and the undo of its failure (nil: nothing to do).
type steps struct {
	prepare func(s *Service, ctx context.Context, tx *meta.Tx, t meta.Task) (*outcome, error)
	commit  func(s *Service, ctx context.Context, tx *meta.Tx, t *meta.Task, r apitypes.NodeComplete) error
	undo    func(s *Service, ctx context.Context, tx *meta.Tx, t meta.Task, r *apitypes.NodeComplete) error
}

var repositorySteps = steps{(*Service).repositoryOutcome, (*Service).commitRepository, (*Service).undoRepository}

var backupSteps = map[string]steps{
	apitypes.OpBackupCreate:   {(*Service).backupOutcome, (*Service).commitBackup, (*Service).undoBackup},
	apitypes.OpBackupRestore:  {(*Service).restoreOutcome, (*Service).commitRestore, (*Service).undoRestore},
	apitypes.OpBackupFiles:    {(*Service).restoreOutcome, nil, nil},
	apitypes.OpBackupForget:   {(*Service).forgetOutcome, (*Service).commitForget, nil},
	apitypes.OpBackupVerify:   {(*Service).forgetOutcome, nil, nil},
	apitypes.OpBackupExport:   {(*Service).backupExportOutcome, (*Service).commitBackupExport, (*Service).undoBackupExport},
	apitypes.OpBackupUnexport: {(*Service).backupExportOutcome, (*Service).commitBackupExport, (*Service).undoBackupExport},
}

// ownSteps returns the steps of t's operation when it has its own.
func ownSteps(t meta.Task) (steps, bool) {
	if isRepositoryOp(t.Kind) {
		return repositorySteps, true
	}
	h, ok := backupSteps[t.Kind]
	return h, ok
}

// sidecar renders a volume's sidecar file content.
func (s *Service) sidecar(tx *meta.Tx, ctx context.Context, v meta.Volume, tree *Tree) apitypes.Sidecar {
	sc := apitypes.Sidecar{Version: 1, ID: v.ID, Name: v.Name, Kind: v.Kind, State: v.State, Size: v.Size,
		HeadParentID: tree.HeadParent, Labels: v.Labels, CreatedAt: TimeString(v.CreatedAt), Snapshots: []apitypes.SidecarSnapshot{}}
	if p, err := tx.ProjectByID(ctx, v.ProjectID); err == nil {
		sc.Project = p.Name
	}
	for _, x := range tree.Snapshots() {
		if x.State == apitypes.SnapshotCreating {
			continue
		}
		sc.Snapshots = append(sc.Snapshots, apitypes.SidecarSnapshot{ID: x.ID, Tag: x.Tag, Name: x.Name, Description: x.Description,
			ParentID: x.ParentID, Kind: x.Kind, Size: x.Size, CreatedAt: TimeString(x.CreatedAt)})
	}
	return sc
}

func samePtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
