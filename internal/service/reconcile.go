package service

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
)

// SystemTagPrefix marks qcow2 snapshots that cairn takes for itself (backups);
// they are never adopted as user snapshots.
const SystemTagPrefix = "cairn-sys-"

// Inventory reconciles the metadata with what a starting node found on disk:
//   - a volume whose file is missing, or cannot be read, goes to state error;
//   - a qcow2 snapshot unknown to the metadata is adopted as a root-level
//     snapshot in state orphan (listable, deletable, exportable);
//   - a snapshot in the metadata but absent from the file becomes missing
//     (it can only be deleted); one that reappears becomes ready again.
//
// It answers with every volume the node holds, its sidecar as the metadata
// now has it, and the exports to bring back.
func (s *Service) Inventory(ctx context.Context, c Caller, inv apitypes.NodeInventory) (apitypes.NodeVolumes, error) {
	if err := c.requireNode(); err != nil {
		return apitypes.NodeVolumes{}, err
	}
	found := map[string]apitypes.InventoryVolume{}
	for _, iv := range inv.Volumes {
		found[iv.ID] = iv
	}
	out := apitypes.NodeVolumes{Volumes: []apitypes.NodeVolume{}}
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		// A node that reports its inventory has just started: whatever it was
		// running before is gone.
		if _, err := s.failRunning(ctx, tx, c.NodeID, "the node restarted while the task ran; check the volume and retry"); err != nil {
			return err
		}
		vs, err := tx.VolumesOnNode(ctx, c.NodeID)
		if err != nil {
			return err
		}
		active, err := tx.Tasks(ctx, meta.TaskFilter{NodeID: c.NodeID, States: []string{apitypes.TaskQueued, apitypes.TaskRunning}})
		if err != nil {
			return err
		}
		pending := map[string]bool{}
		for _, t := range active {
			pending[t.VolumeID], pending[t.TargetVolumeID] = true, true
		}
		for _, v := range vs {
			if v.State == apitypes.VolumeCreating || v.State == apitypes.VolumeImporting {
				continue // its task will make the file
			}
			iv, ok := found[v.ID]
			switch {
			case !ok || !iv.Present:
				v.State, v.StateDetail = apitypes.VolumeError, "the volume's qcow2 file is missing on node"
			case iv.Error != "":
				v.State, v.StateDetail = apitypes.VolumeError, "the volume's qcow2 file cannot be read: "+iv.Error
			default:
				if v.State == apitypes.VolumeError {
					v.State, v.StateDetail = apitypes.VolumeReady, ""
				}
				if iv.Size > 0 && v.State != apitypes.VolumeDeleted {
					v.Size = iv.Size
				}
				v.Allocated = iv.Allocated
				if err := s.reconcileSnapshots(ctx, tx, v, iv); err != nil {
					return err
				}
			}
			v.UpdatedAt = s.now()
			if err := tx.UpdateVolume(ctx, v); err != nil {
				return err
			}
			if v.State == apitypes.VolumeError {
				continue
			}
			tree, err := loadTree(ctx, tx, v)
			if err != nil {
				return err
			}
			nv := apitypes.NodeVolume{ID: v.ID, State: v.State, Sidecar: s.sidecar(tx, ctx, v, tree), Exports: []apitypes.NodeExport{}}
			es, err := tx.Exports(ctx, v.ID)
			if err != nil {
				return err
			}
			for _, e := range es {
				if e.State != "ready" || e.Port == 0 {
					continue
				}
				tag := ""
				if e.SnapshotID != nil {
					sn, err := tx.SnapshotByID(ctx, v.ID, *e.SnapshotID)
					if err != nil || sn.State == apitypes.SnapshotMissing {
						continue
					}
					tag = sn.Tag
				}
				if _, err := s.ensureExportCert(ctx, tx, &e, v); err != nil {
					// Without its certificate the export cannot come back:
					// show it failed rather than keep the node from starting.
					e.State = "error"
					if err := tx.UpdateExport(ctx, e); err != nil {
						return err
					}
					continue
				}
				nv.Exports = append(nv.Exports, s.nodeExport(e, v, tag))
			}
			out.Volumes = append(out.Volumes, nv)
		}
		out.BackupExports, err = s.restoredBackupExports(ctx, tx, c.NodeID)
		return err
	})
	if err == nil {
		s.changed.notify()
	}
	return out, err
}

func (s *Service) reconcileSnapshots(ctx context.Context, tx *meta.Tx, v meta.Volume, iv apitypes.InventoryVolume) error {
	inFile := map[string]apitypes.InventorySnapshot{}
	for _, sn := range iv.Snapshots {
		inFile[sn.Tag] = sn
	}
	ss, err := tx.AllSnapshots(ctx, v.ID)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, x := range ss {
		known[x.Tag] = true
		_, present := inFile[x.Tag]
		switch {
		case x.State == apitypes.SnapshotCreating:
			continue // a queued create will make it
		case !present && x.State != apitypes.SnapshotMissing && x.State != apitypes.SnapshotDeleting:
			x.State = apitypes.SnapshotMissing
		case present && x.State == apitypes.SnapshotMissing:
			x.State = apitypes.SnapshotReady
		default:
			continue
		}
		if err := tx.UpdateSnapshot(ctx, x); err != nil {
			return err
		}
	}
	for _, f := range iv.Snapshots {
		if known[f.Tag] || strings.HasPrefix(f.Tag, SystemTagPrefix) {
			continue
		}
		id := f.Tag
		if !core.IsUUID(id) {
			id = core.NewID()
		} else if _, err := tx.SnapshotByID(ctx, v.ID, id); err == nil {
			id = core.NewID()
		}
		name, err := s.freeName(ctx, tx, v.ID, "orphan-"+orphanSuffix(f.Tag))
		if err != nil {
			return err
		}
		created := s.now()
		if t, err := time.Parse(time.RFC3339Nano, f.CreatedAt); err == nil {
			created = t
		}
		if err := tx.InsertSnapshot(ctx, meta.Snapshot{ID: id, VolumeID: v.ID, Name: name, Tag: f.Tag, Kind: SnapshotUser,
			State: apitypes.SnapshotOrphan, Size: f.Size, CreatedAt: created,
			Description: fmt.Sprintf("found in the qcow2 file as %q, unknown to the metadata", f.Tag)}); err != nil {
			return err
		}
	}
	return nil
}

func orphanSuffix(tag string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(tag) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' || r == '.' || r == '_' {
			b.WriteRune(r)
		}
		if b.Len() >= 8 {
			break
		}
	}
	if b.Len() == 0 {
		return "snapshot"
	}
	return b.String()
}

func (s *Service) freeName(ctx context.Context, tx *meta.Tx, volumeID, base string) (string, error) {
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

// Rebuild recreates volume and snapshot rows from sidecar files, for volumes
// the metadata does not know, placing them on node nodeID. Projects named by
// sidecars are created when missing. It returns how many volumes it added.
func (s *Service) Rebuild(ctx context.Context, nodeID string, sidecars []apitypes.Sidecar) (int, error) {
	added := 0
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		for _, sc := range sidecars {
			if _, err := tx.VolumeByID(ctx, sc.ID); err == nil {
				continue
			}
			if sc.Project == "" || sc.Project == apitypes.SystemProject {
				sc.Project = apitypes.DefaultProject
			}
			p, err := s.ensureProject(ctx, tx, sc.Project)
			if err != nil {
				return err
			}
			created, _ := time.Parse(time.RFC3339Nano, sc.CreatedAt)
			state := sc.State
			if state != apitypes.VolumeDeleted {
				state = apitypes.VolumeReady
			}
			name := sc.Name
			if taken, err := tx.LiveVolumeNameTaken(ctx, p.ID, name, sc.ID); err != nil {
				return err
			} else if taken && state != apitypes.VolumeDeleted {
				name = fmt.Sprintf("%s-%s", name, sc.ID[:8])
			}
			v := meta.Volume{ID: sc.ID, ProjectID: p.ID, Name: name, Kind: sc.Kind, NodeID: nodeID, Size: sc.Size, State: state,
				HeadParentID: sc.HeadParentID, Labels: sc.Labels, CreatedAt: created, UpdatedAt: s.now()}
			if v.Kind == "" {
				v.Kind = apitypes.KindData
			}
			if err := tx.InsertVolume(ctx, v); err != nil {
				return fmt.Errorf("rebuild volume %s: %w", sc.ID, err)
			}
			for i, x := range sc.Snapshots {
				t, _ := time.Parse(time.RFC3339Nano, x.CreatedAt)
				kind := x.Kind
				if kind == "" {
					kind = SnapshotUser
				}
				if err := tx.InsertSnapshot(ctx, meta.Snapshot{ID: x.ID, VolumeID: v.ID, Name: x.Name, Tag: x.Tag, Description: x.Description,
					ParentID: x.ParentID, Kind: kind, State: apitypes.SnapshotReady, Size: x.Size, Seq: int64(i + 1), CreatedAt: t}); err != nil {
					return fmt.Errorf("rebuild snapshot %s of volume %s: %w", x.ID, sc.ID, err)
				}
			}
			added++
		}
		return nil
	})
	return added, err
}
