package service

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
)

// Snapshot kinds in the metadata.
const (
	SnapshotUser   = "user"
	SnapshotSystem = "system"
)

func (s *Service) volumeJSON(ctx context.Context, tx *meta.Tx, v meta.Volume) (apitypes.Volume, error) {
	out := apitypes.Volume{ID: v.ID, Name: v.Name, Kind: v.Kind, Size: v.Size, Allocated: v.Allocated, Format: "qcow2",
		State: v.State, StateDetail: v.StateDetail, HeadParentID: v.HeadParentID, Labels: v.Labels, CreatedAt: v.CreatedAt,
		UpdatedAt: v.UpdatedAt, Exports: []apitypes.Export{}}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if p, err := tx.ProjectByID(ctx, v.ProjectID); err == nil {
		out.Project = p.Name
	}
	if n, err := tx.NodeByID(ctx, v.NodeID); err == nil {
		out.Node = n.Name
	}
	cnt, err := tx.CountSnapshots(ctx, v.ID, SnapshotUser)
	if err != nil {
		return out, err
	}
	out.SnapshotCount = cnt
	es, err := tx.Exports(ctx, v.ID)
	if err != nil {
		return out, err
	}
	for _, e := range es {
		out.Exports = append(out.Exports, exportJSON(e))
	}
	return out, nil
}

func exportJSON(e meta.Export) apitypes.Export {
	return apitypes.Export{ID: e.ID, VolumeID: e.VolumeID, SnapshotID: e.SnapshotID, URI: exportURI(e), Writable: e.Writable,
		TLS: e.TLS, State: e.State, CreatedAt: e.CreatedAt}
}

// exportURI is the NBD URI of an export; nbds, the NBD URI scheme for TLS,
// when the export requires TLS.
func exportURI(e meta.Export) string { return nbdURI(e.Address, e.Port, e.Name, e.TLS) }

// nbdURI is nbd://HOST:PORT/NAME, or nbds://... for TLS; "" before the
// export has a port.
func nbdURI(address string, port int, name string, tls bool) string {
	if port == 0 {
		return ""
	}
	host := address
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	scheme := "nbd"
	if tls {
		scheme = "nbds"
	}
	return fmt.Sprintf("%s://%s:%d/%s", scheme, host, port, name)
}

func snapshotJSON(v meta.Snapshot) apitypes.Snapshot {
	return apitypes.Snapshot{ID: v.ID, Name: v.Name, Description: v.Description, VolumeID: v.VolumeID, ParentID: v.ParentID,
		State: v.State, Size: v.Size, Kind: "disk", CreatedAt: v.CreatedAt, UniqueBytes: v.UniqueBytes}
}

// volumeByRef finds a volume of the caller's project by name or id; a volume of
// another project is reported as not found.
func volumeByRef(ctx context.Context, tx *meta.Tx, c Caller, ref string) (meta.Volume, error) {
	var v meta.Volume
	var err error
	if core.IsUUID(ref) {
		v, err = tx.VolumeByID(ctx, ref)
		if err == nil && v.ProjectID != c.ProjectID {
			err = meta.ErrNoRows
		}
	} else {
		v, err = tx.VolumeByName(ctx, c.ProjectID, ref)
	}
	if meta.IsNoRows(err) {
		return v, core.NotFound("volume %q not found in project %q", ref, c.ProjectName)
	}
	return v, err
}

func snapshotByRef(ctx context.Context, tx *meta.Tx, v meta.Volume, ref string) (meta.Snapshot, error) {
	var sn meta.Snapshot
	var err error
	if core.IsUUID(ref) {
		sn, err = tx.SnapshotByID(ctx, v.ID, ref)
	} else {
		sn, err = tx.SnapshotByName(ctx, v.ID, ref)
	}
	if err == nil && sn.Kind != SnapshotUser {
		err = meta.ErrNoRows
	}
	if meta.IsNoRows(err) {
		return sn, core.NotFound("snapshot %q of volume %q not found", ref, v.Name)
	}
	return sn, err
}

// ListVolumes lists the acting project's volumes by name.
func (s *Service) ListVolumes(ctx context.Context, c Caller, pg Page) (apitypes.List[apitypes.Volume], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.Volume]{}, err
	}
	var out apitypes.List[apitypes.Volume]
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		afterName, afterID, _ := strings.Cut(pg.Cursor, "\x00")
		vs, err := tx.Volumes(ctx, c.ProjectID, afterName, afterID, pg.Limit+1)
		if err != nil {
			return err
		}
		var convErr error
		out = pageOf(vs, pg.Limit, func(v meta.Volume) apitypes.Volume {
			j, err := s.volumeJSON(ctx, tx, v)
			if err != nil {
				convErr = err
			}
			return j
		}, func(v meta.Volume) string { return v.Name + "\x00" + v.ID })
		return convErr
	})
	return out, err
}

// GetVolume returns one volume.
func (s *Service) GetVolume(ctx context.Context, c Caller, ref string) (apitypes.Volume, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.Volume{}, err
	}
	var out apitypes.Volume
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		v, err := volumeByRef(ctx, tx, c, ref)
		if err != nil {
			return err
		}
		out, err = s.volumeJSON(ctx, tx, v)
		return err
	})
	return out, err
}

func checkKind(kind string) (string, error) {
	switch kind {
	case "":
		return apitypes.KindData, nil
	case apitypes.KindRoot, apitypes.KindData:
		return kind, nil
	}
	return "", core.Invalid("invalid kind %q: use root or data", kind)
}

func checkSize(size int64) error {
	if size <= 0 || size%512 != 0 || size > core.MaxVolumeSize {
		return core.Invalid("invalid size %d: give a positive multiple of 512 bytes up to %s", size, core.FormatSize(core.MaxVolumeSize))
	}
	return nil
}

// newVolume validates and inserts a volume row in state st.
func (s *Service) newVolume(ctx context.Context, tx *meta.Tx, c Caller, name, kind, nodeRef string, size int64, st string) (meta.Volume, error) {
	if err := core.CheckName("volume", name); err != nil {
		return meta.Volume{}, err
	}
	kind, err := checkKind(kind)
	if err != nil {
		return meta.Volume{}, err
	}
	taken, err := tx.LiveVolumeNameTaken(ctx, c.ProjectID, name, "")
	if err != nil {
		return meta.Volume{}, err
	}
	if taken {
		return meta.Volume{}, core.Conflict("name_taken", "a volume named %q already exists in project %q", name, c.ProjectName)
	}
	n, err := s.pickNode(ctx, tx, nodeRef)
	if err != nil {
		return meta.Volume{}, err
	}
	now := s.now()
	v := meta.Volume{ID: core.NewID(), ProjectID: c.ProjectID, Name: name, Kind: kind, NodeID: n.ID, Size: size, State: st,
		Labels: map[string]string{}, CreatedAt: now, UpdatedAt: now}
	return v, tx.InsertVolume(ctx, v)
}

// CreateVolume queues the creation of an empty qcow2 volume.
func (s *Service) CreateVolume(ctx context.Context, c Caller, req apitypes.VolumeCreate) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	if err := checkSize(req.Size); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := s.newVolume(ctx, tx, c, req.Name, req.Kind, req.Node, req.Size, apitypes.VolumeCreating)
		if err != nil {
			return nil, err
		}
		return s.newTask(c, apitypes.OpVolumeCreate, v, "volume", v.ID, map[string]string{"size": fmt.Sprint(req.Size)}), nil
	})
}

// ImportVolume queues the conversion of an image file on the node's host into a new volume.
func (s *Service) ImportVolume(ctx context.Context, c Caller, req apitypes.VolumeImport) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	if req.Path == "" || !filepath.IsAbs(req.Path) {
		return apitypes.Task{}, core.Invalid("invalid path %q: give the absolute path of the image on the node's host", req.Path)
	}
	switch req.Format {
	case "", "qcow2", "raw", "vmdk", "vhdx", "vpc", "vdi":
	default:
		return apitypes.Task{}, core.Invalid("invalid format %q: use qcow2, raw, vmdk, vhdx, vpc or vdi, or leave it out to detect it", req.Format)
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := s.newVolume(ctx, tx, c, req.Name, req.Kind, req.Node, 512, apitypes.VolumeImporting)
		if err != nil {
			return nil, err
		}
		t := s.newTask(c, apitypes.OpVolumeImport, v, "volume", v.ID, map[string]string{"source": req.Path, "format": req.Format})
		t.Cancelable = true
		return t, nil
	})
}

// liveVolume returns the volume if it still has a live disk.
func liveVolume(v meta.Volume) error {
	switch v.State {
	case apitypes.VolumeDeleted:
		return core.Conflict("deleted", "volume %q is deleted; only its snapshots remain (apply one to bring it back)", v.Name)
	case apitypes.VolumeError:
		return core.Conflict("volume_error", "volume %q is in error: %s", v.Name, v.StateDetail)
	case apitypes.VolumeDeleting:
		return core.Conflict("busy", "volume %q is being deleted", v.Name)
	}
	return nil
}

// GrowVolume queues a resize to a larger virtual size.
func (s *Service) GrowVolume(ctx context.Context, c Caller, ref string, req apitypes.VolumeGrow) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	if err := checkSize(req.Size); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := volumeByRef(ctx, tx, c, ref)
		if err != nil {
			return nil, err
		}
		if err := liveVolume(v); err != nil {
			return nil, err
		}
		if req.Size <= v.Size {
			return nil, core.Invalid("volume %q is %s; grow needs a larger size (shrinking is not supported)", v.Name, core.FormatSize(v.Size))
		}
		return s.newTask(c, apitypes.OpVolumeGrow, v, "volume", v.ID, map[string]string{"size": fmt.Sprint(req.Size)}), nil
	})
}

// DeleteVolume queues a volume's deletion. A volume with snapshots keeps them
// (state deleted) unless purge is set.
func (s *Service) DeleteVolume(ctx context.Context, c Caller, ref string, purge bool) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := volumeByRef(ctx, tx, c, ref)
		if err != nil {
			return nil, err
		}
		if v.State == apitypes.VolumeDeleting {
			return nil, core.Conflict("busy", "volume %q is already being deleted", v.Name)
		}
		if v.State == apitypes.VolumeDeleted && !purge {
			return nil, core.Conflict("deleted", "volume %q is already deleted; its snapshots remain until the last is deleted, or pass --purge", v.Name)
		}
		es, err := tx.Exports(ctx, v.ID)
		if err != nil {
			return nil, err
		}
		if len(es) > 0 {
			return nil, core.Conflict("exported", "volume %q has %d exports: unexport first", v.Name, len(es))
		}
		prev := v.State
		v.State, v.UpdatedAt = apitypes.VolumeDeleting, s.now()
		if err := tx.UpdateVolume(ctx, v); err != nil {
			return nil, err
		}
		return s.newTask(c, apitypes.OpVolumeDelete, v, "volume", v.ID, map[string]string{"purge": fmt.Sprint(purge), "prev_state": prev}), nil
	})
}

// ---- snapshots ----

// ListSnapshots lists a volume's user snapshots in creation order.
func (s *Service) ListSnapshots(ctx context.Context, c Caller, ref string, pg Page) (apitypes.List[apitypes.Snapshot], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.Snapshot]{}, err
	}
	var out apitypes.List[apitypes.Snapshot]
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		v, err := volumeByRef(ctx, tx, c, ref)
		if err != nil {
			return err
		}
		after, err := cursorInt(pg.Cursor)
		if err != nil {
			return err
		}
		ss, err := tx.Snapshots(ctx, v.ID, SnapshotUser, after, pg.Limit+1)
		if err != nil {
			return err
		}
		out = pageOf(ss, pg.Limit, snapshotJSON, func(x meta.Snapshot) string { return fmt.Sprint(x.Seq) })
		return nil
	})
	return out, err
}

// GetSnapshot returns one snapshot.
func (s *Service) GetSnapshot(ctx context.Context, c Caller, vref, sref string) (apitypes.Snapshot, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.Snapshot{}, err
	}
	var out apitypes.Snapshot
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		v, err := volumeByRef(ctx, tx, c, vref)
		if err != nil {
			return err
		}
		sn, err := snapshotByRef(ctx, tx, v, sref)
		out = snapshotJSON(sn)
		return err
	})
	return out, err
}

// autoName picks a free snapshot name from the time.
func (s *Service) autoName(ctx context.Context, tx *meta.Tx, volumeID, prefix string) (string, error) {
	return freeName(ctx, tx, volumeID, prefix+s.now().Format("20060102-150405"))
}

// freeName returns base, or base-2, base-3 ... whichever no snapshot of the
// volume has.
func freeName(ctx context.Context, tx *meta.Tx, volumeID, base string) (string, error) {
	name := base
	for i := 2; ; i++ {
		_, err := tx.SnapshotByName(ctx, volumeID, name)
		if meta.IsNoRows(err) {
			return name, nil
		}
		if err != nil {
			return "", err
		}
		name = fmt.Sprintf("%s-%d", base, i)
	}
}

// insertCreatingSnapshot validates the limit and the name and inserts a
// snapshot row in state creating (its parent is set when the task commits).
func (s *Service) insertCreatingSnapshot(ctx context.Context, tx *meta.Tx, v meta.Volume, name, desc, autoPrefix string) (meta.Snapshot, error) {
	return s.insertSnapshotRow(ctx, tx, v, name, desc, autoPrefix, "")
}

// insertSnapshotRow is insertCreatingSnapshot for a snapshot a schedule
// (scheduleID, or "") asks for.
func (s *Service) insertSnapshotRow(ctx context.Context, tx *meta.Tx, v meta.Volume, name, desc, autoPrefix, scheduleID string) (meta.Snapshot, error) {
	n, err := tx.CountSnapshots(ctx, v.ID, SnapshotUser)
	if err != nil {
		return meta.Snapshot{}, err
	}
	if n >= s.cfg.MaxSnapshotsPerVolume {
		return meta.Snapshot{}, core.Conflict("limit_reached", "volume %q has %d snapshots, the most allowed per volume (%d): delete some first",
			v.Name, n, s.cfg.MaxSnapshotsPerVolume)
	}
	if name == "" {
		if name, err = s.autoName(ctx, tx, v.ID, autoPrefix); err != nil {
			return meta.Snapshot{}, err
		}
	} else {
		if err := core.CheckName("snapshot", name); err != nil {
			return meta.Snapshot{}, err
		}
		if _, err := tx.SnapshotByName(ctx, v.ID, name); err == nil {
			return meta.Snapshot{}, core.Conflict("name_taken", "volume %q already has a snapshot named %q", v.Name, name)
		}
	}
	if len(desc) > 1024 {
		return meta.Snapshot{}, core.Invalid("description too long: at most 1024 bytes")
	}
	id := core.NewID()
	sn := meta.Snapshot{ID: id, VolumeID: v.ID, Name: name, Tag: id, Description: desc, Kind: SnapshotUser,
		State: apitypes.SnapshotCreating, Size: v.Size, CreatedAt: s.now(), ScheduleID: scheduleID}
	return sn, tx.InsertSnapshot(ctx, sn)
}

// CreateSnapshot queues a disk-only snapshot of a volume.
func (s *Service) CreateSnapshot(ctx context.Context, c Caller, ref string, req apitypes.SnapshotCreate) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := volumeByRef(ctx, tx, c, ref)
		if err != nil {
			return nil, err
		}
		if err := liveVolume(v); err != nil {
			return nil, err
		}
		sn, err := s.insertCreatingSnapshot(ctx, tx, v, req.Name, req.Description, "snap-")
		if err != nil {
			return nil, err
		}
		return s.newTask(c, apitypes.OpSnapshotCreate, v, "snapshot", sn.ID, map[string]string{"snapshot_id": sn.ID}), nil
	})
}

// busyRefs returns the snapshot ids that queued or running tasks of a volume need.
func busyRefs(ctx context.Context, tx *meta.Tx, volumeID string) (map[string]string, error) {
	ts, err := tx.Tasks(ctx, meta.TaskFilter{VolumeID: volumeID, States: []string{apitypes.TaskQueued, apitypes.TaskRunning}})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, t := range ts {
		if id := t.Params["snapshot_id"]; id != "" && t.VolumeID == volumeID {
			out[id] = t.Kind
		}
	}
	return out, nil
}

// DeleteSnapshot queues the deletion of one snapshot or of its subtree.
func (s *Service) DeleteSnapshot(ctx context.Context, c Caller, vref, sref string, subtree bool) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := volumeByRef(ctx, tx, c, vref)
		if err != nil {
			return nil, err
		}
		sn, err := snapshotByRef(ctx, tx, v, sref)
		if err != nil {
			return nil, err
		}
		return s.snapshotDeleteTask(ctx, tx, c, v, sn, subtree)
	})
}

// snapshotDeleteTask marks sn (and its subtree) deleting and makes the task.
func (s *Service) snapshotDeleteTask(ctx context.Context, tx *meta.Tx, c Caller, v meta.Volume, sn meta.Snapshot, subtree bool) (*meta.Task, error) {
	if v.State == apitypes.VolumeDeleting {
		return nil, core.Conflict("busy", "volume %q is being deleted", v.Name)
	}
	tree, err := loadTree(ctx, tx, v)
	if err != nil {
		return nil, err
	}
	ids := []string{sn.ID}
	if subtree {
		ids = tree.Subtree(sn.ID)
	}
	busy, err := busyRefs(ctx, tx, v.ID)
	if err != nil {
		return nil, err
	}
	es, err := tx.Exports(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		x := tree.Get(id)
		if x == nil {
			return nil, core.NotFound("snapshot %q of volume %q not found", id, v.Name)
		}
		if x.State == apitypes.SnapshotCreating || x.State == apitypes.SnapshotDeleting {
			return nil, core.Conflict("busy", "snapshot %q is %s", x.Name, x.State)
		}
		if kind, ok := busy[id]; ok {
			return nil, core.Conflict("busy", "snapshot %q is needed by a queued %s task", x.Name, kind)
		}
		for _, e := range es {
			if e.SnapshotID != nil && *e.SnapshotID == id {
				return nil, core.Conflict("exported", "snapshot %q is exported: unexport it first", x.Name)
			}
		}
	}
	for _, id := range ids {
		x := *tree.Get(id)
		x.State = apitypes.SnapshotDeleting
		if err := tx.UpdateSnapshot(ctx, x); err != nil {
			return nil, err
		}
	}
	return s.newTask(c, apitypes.OpSnapshotDelete, v, "snapshot", sn.ID, map[string]string{"snapshot_id": sn.ID, "subtree": fmt.Sprint(subtree)}), nil
}

// ApplySnapshot queues making the live disk exactly the snapshot's content.
func (s *Service) ApplySnapshot(ctx context.Context, c Caller, vref, sref string, req apitypes.SnapshotApply) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := volumeByRef(ctx, tx, c, vref)
		if err != nil {
			return nil, err
		}
		sn, err := snapshotByRef(ctx, tx, v, sref)
		if err != nil {
			return nil, err
		}
		return s.queueApply(ctx, tx, c, v, sn, req, false)
	})
}

// Revert queues applying the head's parent: what changed since the last
// snapshot or apply is thrown away.
func (s *Service) Revert(ctx context.Context, c Caller, vref string) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := volumeByRef(ctx, tx, c, vref)
		if err != nil {
			return nil, err
		}
		if v.State == apitypes.VolumeDeleted {
			return nil, liveVolume(v)
		}
		if v.HeadParentID == nil {
			return nil, core.Conflict("nothing_to_revert", "volume %q has no snapshot to revert to (no head parent)", v.Name)
		}
		sn, err := tx.SnapshotByID(ctx, v.ID, *v.HeadParentID)
		if err != nil {
			return nil, err
		}
		return s.queueApply(ctx, tx, c, v, sn, apitypes.SnapshotApply{}, true)
	})
}

func (s *Service) queueApply(ctx context.Context, tx *meta.Tx, c Caller, v meta.Volume, sn meta.Snapshot, req apitypes.SnapshotApply, revert bool) (*meta.Task, error) {
	switch sn.State {
	case apitypes.SnapshotReady, apitypes.SnapshotOrphan:
	case apitypes.SnapshotMissing:
		return nil, core.Conflict("missing", "snapshot %q is missing from the volume's file; it can only be deleted", sn.Name)
	default:
		return nil, core.Conflict("busy", "snapshot %q is %s", sn.Name, sn.State)
	}
	if v.State == apitypes.VolumeDeleting || v.State == apitypes.VolumeError {
		return nil, liveVolume(v)
	}
	params := map[string]string{"snapshot_id": sn.ID, "prev_state": v.State}
	if revert {
		params["revert"] = "true"
	}
	if v.State == apitypes.VolumeDeleted {
		name := v.Name
		if req.Name != "" {
			if err := core.CheckName("volume", req.Name); err != nil {
				return nil, err
			}
			name = req.Name
		}
		taken, err := tx.LiveVolumeNameTaken(ctx, v.ProjectID, name, v.ID)
		if err != nil {
			return nil, err
		}
		if taken {
			return nil, core.Conflict("name_taken", "volume name %q was taken since the volume was deleted: pass --name NEW", name)
		}
		params["name"] = name
		v.Name = name
		req.SaveCurrent = false // a deleted volume has no live disk to save
	} else if req.Name != "" && req.Name != v.Name {
		return nil, core.Invalid("--name applies only when bringing back a deleted volume")
	}
	if req.SaveCurrent {
		saved, err := s.insertCreatingSnapshot(ctx, tx, v, "", "saved before applying "+sn.Name, "saved-")
		if err != nil {
			return nil, err
		}
		params["save_snapshot_id"] = saved.ID
	}
	v.State, v.UpdatedAt = apitypes.VolumeApplying, s.now()
	if err := tx.UpdateVolume(ctx, v); err != nil {
		return nil, err
	}
	return s.newTask(c, apitypes.OpSnapshotApply, v, "volume", v.ID, params), nil
}

// SnapshotToVolume queues copying a data volume's snapshot into a new volume.
func (s *Service) SnapshotToVolume(ctx context.Context, c Caller, vref, sref string, req apitypes.SnapshotToVolume) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := volumeByRef(ctx, tx, c, vref)
		if err != nil {
			return nil, err
		}
		sn, err := snapshotByRef(ctx, tx, v, sref)
		if err != nil {
			return nil, err
		}
		if v.Kind == apitypes.KindRoot {
			return nil, core.E(core.KindInvalid, "root_snapshot",
				"snapshot %q belongs to root volume %q: a root snapshot cannot become a standalone volume; turn it into a template to launch new VMs from it", sn.Name, v.Name)
		}
		if sn.State != apitypes.SnapshotReady && sn.State != apitypes.SnapshotOrphan {
			return nil, core.Conflict("busy", "snapshot %q is %s", sn.Name, sn.State)
		}
		if err := snapshotFits(v, sn); err != nil {
			return nil, err
		}
		src, err := tx.NodeByID(ctx, v.NodeID)
		if err != nil {
			return nil, err
		}
		if req.Node != "" && req.Node != src.Name && req.Node != src.ID {
			return nil, core.Invalid("the new volume must be on the snapshot's node %q for now; copy it to another node afterwards", src.Name)
		}
		nv, err := s.newVolume(ctx, tx, c, req.Name, apitypes.KindData, src.ID, sn.Size, apitypes.VolumeCreating)
		if err != nil {
			return nil, err
		}
		t := s.newTask(c, apitypes.OpSnapshotToVol, v, "volume", nv.ID, map[string]string{"snapshot_id": sn.ID})
		t.TargetVolumeID = nv.ID
		t.Cancelable = true
		return t, nil
	})
}

// ---- exports ----

// ListExports lists a volume's exports.
func (s *Service) ListExports(ctx context.Context, c Caller, vref string) (apitypes.List[apitypes.Export], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.Export]{}, err
	}
	out := apitypes.List[apitypes.Export]{Items: []apitypes.Export{}}
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		v, err := volumeByRef(ctx, tx, c, vref)
		if err != nil {
			return err
		}
		es, err := tx.Exports(ctx, v.ID)
		for _, e := range es {
			out.Items = append(out.Items, exportJSON(e))
		}
		return err
	})
	return out, err
}

// GetExport returns one export.
func (s *Service) GetExport(ctx context.Context, c Caller, vref, id string) (apitypes.Export, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.Export{}, err
	}
	var out apitypes.Export
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		v, err := volumeByRef(ctx, tx, c, vref)
		if err != nil {
			return err
		}
		e, err := tx.ExportByID(ctx, v.ID, id)
		if meta.IsNoRows(err) {
			return core.NotFound("export %q of volume %q not found", id, v.Name)
		}
		out = exportJSON(e)
		return err
	})
	return out, err
}

// CreateExport queues an NBD export of the live volume or of a snapshot.
func (s *Service) CreateExport(ctx context.Context, c Caller, vref string, req apitypes.ExportCreate) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := volumeByRef(ctx, tx, c, vref)
		if err != nil {
			return nil, err
		}
		es, err := tx.Exports(ctx, v.ID)
		if err != nil {
			return nil, err
		}
		n, err := tx.NodeByID(ctx, v.NodeID)
		if err != nil && !meta.IsNoRows(err) {
			return nil, err
		}
		e := meta.Export{ID: core.NewID(), VolumeID: v.ID, Name: core.RandomToken(16), Address: s.cfg.ExportAddress,
			State: "starting", CreatedAt: s.now(), TLS: s.exportNeedsTLS(n)}
		if e.TLS && s.cfg.CA == nil {
			return nil, fmt.Errorf("exports on %s need TLS, but the server has no certificate authority", e.Address)
		}
		params := map[string]string{"export_id": e.ID}
		if req.Snapshot != "" {
			if req.Writable {
				return nil, core.Invalid("a snapshot export is read-only: leave out --writable")
			}
			sn, err := snapshotByRef(ctx, tx, v, req.Snapshot)
			if err != nil {
				return nil, err
			}
			if sn.State != apitypes.SnapshotReady && sn.State != apitypes.SnapshotOrphan {
				return nil, core.Conflict("busy", "snapshot %q is %s", sn.Name, sn.State)
			}
			if err := snapshotFits(v, sn); err != nil {
				return nil, err
			}
			for _, x := range es {
				if x.SnapshotID != nil && *x.SnapshotID == sn.ID {
					return nil, core.Conflict("already_exported", "snapshot %q is already exported at %s", sn.Name, exportURI(x))
				}
			}
			id := sn.ID
			e.SnapshotID = &id
			params["snapshot_id"] = sn.ID
		} else {
			if err := liveVolume(v); err != nil {
				return nil, err
			}
			for _, x := range es {
				if x.SnapshotID == nil {
					return nil, core.Conflict("already_exported", "volume %q is already exported at %s (writable: %v): unexport it first", v.Name, exportURI(x), x.Writable)
				}
			}
			e.Writable = req.Writable
		}
		if err := tx.InsertExport(ctx, e); err != nil {
			return nil, err
		}
		return s.newTask(c, apitypes.OpExportCreate, v, "export", e.ID, params), nil
	})
}

// DeleteExport queues stopping an export.
func (s *Service) DeleteExport(ctx context.Context, c Caller, vref, id string) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := volumeByRef(ctx, tx, c, vref)
		if err != nil {
			return nil, err
		}
		e, err := tx.ExportByID(ctx, v.ID, id)
		if meta.IsNoRows(err) {
			return nil, core.NotFound("export %q of volume %q not found", id, v.Name)
		}
		if err != nil {
			return nil, err
		}
		if e.State == "stopping" {
			return nil, core.Conflict("busy", "export %q is already stopping", id)
		}
		e.State = "stopping"
		if err := tx.UpdateExport(ctx, e); err != nil {
			return nil, err
		}
		return s.newTask(c, apitypes.OpExportDelete, v, "export", e.ID, map[string]string{"export_id": e.ID}), nil
	})
}

// snapshotFits refuses reading a snapshot larger than the volume is now:
// QEMU 7.2's tools read an internal snapshot at the image's current virtual
// size, which would cut it short.
func snapshotFits(v meta.Volume, sn meta.Snapshot) error {
	if sn.Size > v.Size {
		return core.Conflict("snapshot_larger_than_volume",
			"snapshot %q (%s) is larger than volume %q is now (%s) and cannot be read whole; apply it, or grow the volume to at least its size first",
			sn.Name, core.FormatSize(sn.Size), v.Name, core.FormatSize(v.Size))
	}
	return nil
}
