package service

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/blob/location"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
	"github.com/cairn-backup/cairn/internal/retention"
)

// systemTag is the qcow2 tag of the system snapshot a backup reads.
func systemTag(backupID string) string { return SystemTagPrefix + backupID }

func (s *Service) backupJSON(ctx context.Context, tx *meta.Tx, b meta.Backup) (apitypes.Backup, error) {
	out := apitypes.Backup{ID: b.ID, Kind: "image", State: b.State, VolumeID: b.VolumeID, CreatedAt: b.CreatedAt,
		Paths: []string{}, Tags: []string{}, ParentBackupID: b.ParentID, LogicalSize: b.LogicalSize, BytesRead: b.BytesRead,
		BytesAdded: b.BytesAdded, DurationMS: b.DurationMS, UniqueBytes: &b.UniqueBytes, Error: b.Error}
	if v, err := tx.VolumeByID(ctx, b.VolumeID); err == nil {
		out.Volume = v.Name
		out.Tags = []string{"volume=" + v.Name, "volume_id=" + v.ID}
	} else if !meta.IsNoRows(err) {
		return out, err
	}
	if r, err := tx.RepositoryByID(ctx, b.ProjectID, b.RepositoryID); err == nil {
		out.Repository = r.Name
	} else if !meta.IsNoRows(err) {
		return out, err
	}
	return out, nil
}

// backupRepository finds the repository a backup goes to: the one named,
// or the project's default.
func backupRepository(ctx context.Context, tx *meta.Tx, c Caller, ref string) (meta.Repository, error) {
	if ref != "" {
		return readyRepository(ctx, tx, c, ref)
	}
	r, err := tx.DefaultRepository(ctx, c.ProjectID)
	if meta.IsNoRows(err) {
		return r, core.Conflict("no_repository", "project %q has no repository: create one with `cairn repository create`", c.ProjectName)
	}
	if err != nil {
		return r, err
	}
	if r.State != apitypes.RepositoryReady {
		return r, core.Conflict("not_ready", "repository %q is %s", r.Name, r.State)
	}
	return r, nil
}

// CreateBackup queues a backup of a volume into a repository: a system
// snapshot is taken and read (only what changed since the volume's
// previous backup in that repository, when its system snapshot is still
// there), and the previous system snapshot goes.
func (s *Service) CreateBackup(ctx context.Context, c Caller, volRef string, req apitypes.BackupCreate) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := volumeByRef(ctx, tx, c, volRef)
		if err != nil {
			return nil, err
		}
		r, err := backupRepository(ctx, tx, c, req.Repository)
		if err != nil {
			return nil, err
		}
		return s.backupCreateTask(ctx, tx, c, v, r, "")
	})
}

// backupCreateTask makes the task (with its backup and system snapshot
// rows) of a backup of v into r; scheduleID names the schedule asking.
func (s *Service) backupCreateTask(ctx context.Context, tx *meta.Tx, c Caller, v meta.Volume, r meta.Repository, scheduleID string) (*meta.Task, error) {
	if err := liveVolume(v); err != nil {
		return nil, err
	}
	if kind, _, _ := location.Parse(r.URL); kind == location.Local && r.NodeID != v.NodeID {
		return nil, core.Conflict("unreachable", "repository %q is a directory on another node than volume %q: use an S3 repository, or one on the volume's node", r.Name, v.Name)
	}
	id := core.NewID()
	now := s.now()
	sn := meta.Snapshot{ID: core.NewID(), VolumeID: v.ID, Name: systemTag(id), Tag: systemTag(id), Kind: SnapshotSystem,
		State: apitypes.SnapshotCreating, Size: v.Size, CreatedAt: now}
	if err := tx.InsertSnapshot(ctx, sn); err != nil {
		return nil, err
	}
	if err := tx.InsertBackup(ctx, meta.Backup{ID: id, ProjectID: v.ProjectID, RepositoryID: r.ID, VolumeID: v.ID,
		State: apitypes.BackupCreating, CreatedAt: now, ScheduleID: scheduleID}); err != nil {
		return nil, err
	}
	t := s.newTask(c, apitypes.OpBackupCreate, v, "backup", id, map[string]string{"backup_id": id, "snapshot_id": sn.ID, "repository_id": r.ID})
	t.Cancelable = true
	return t, nil
}

// backupOutcome makes the plan of a backup: the system snapshot to take,
// the repository, and the base (the previous backup of the volume in the
// repository, whose system snapshot still exists).
func (s *Service) backupOutcome(ctx context.Context, tx *meta.Tx, t meta.Task) (*outcome, error) {
	v, err := tx.VolumeByID(ctx, t.VolumeID)
	if err != nil {
		return nil, err
	}
	if err := liveVolume(v); err != nil {
		return nil, err
	}
	b, err := tx.BackupByID(ctx, t.ProjectID, t.Params["backup_id"])
	if err != nil {
		return nil, err
	}
	r, err := tx.RepositoryByID(ctx, t.ProjectID, b.RepositoryID)
	if meta.IsNoRows(err) {
		return nil, core.NotFound("the repository of backup %s no longer exists", b.ID)
	}
	if err != nil {
		return nil, err
	}
	nr, err := s.nodeRepository(r)
	if err != nil {
		return nil, err
	}
	nb := &apitypes.NodeBackup{ID: b.ID, Tags: []string{"volume=" + v.Name, "volume_id=" + v.ID}}
	ss, err := tx.AllSnapshots(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	for _, sn := range ss {
		if sn.Kind == SnapshotSystem && sn.State == apitypes.SnapshotReady {
			nb.KeepTags = append(nb.KeepTags, sn.Tag)
		}
	}
	if base, err := tx.BaseBackup(ctx, v.ID, r.ID); err == nil {
		if sn, err := tx.SnapshotByName(ctx, v.ID, base.BaseTag); err == nil && sn.Kind == SnapshotSystem && sn.State == apitypes.SnapshotReady {
			nb.BaseID, nb.BaseTag = base.ID, base.BaseTag
		}
	} else if !meta.IsNoRows(err) {
		return nil, err
	}
	return &outcome{vol: v, plan: apitypes.Plan{Op: t.Kind, VolumeID: v.ID, Tag: systemTag(b.ID), Backup: nb, Repository: nr}}, nil
}

// commitBackup records a finished backup: its figures, its system snapshot
// as the volume's new base in the repository, and the old base gone.
func (s *Service) commitBackup(ctx context.Context, tx *meta.Tx, t *meta.Task, res apitypes.NodeComplete) error {
	b, err := tx.BackupByID(ctx, t.ProjectID, t.Params["backup_id"])
	if err != nil {
		return err
	}
	old, err := tx.BaseBackup(ctx, b.VolumeID, b.RepositoryID)
	if err != nil && !meta.IsNoRows(err) {
		return err
	}
	num := func(k string) int64 {
		n, _ := strconv.ParseInt(res.Result[k], 10, 64)
		return n
	}
	b.State, b.BaseTag, b.ParentID = apitypes.BackupReady, systemTag(b.ID), res.Result["parent_backup_id"]
	b.LogicalSize, b.BytesRead, b.BytesAdded, b.DurationMS = num("logical_size"), num("bytes_read"), num("bytes_added"), num("duration_ms")
	if err := tx.UpdateBackup(ctx, b); err != nil {
		return err
	}
	if err := storeUniqueBytes(ctx, tx, b.RepositoryID, res); err != nil {
		return err
	}
	if sn, err := tx.SnapshotByID(ctx, b.VolumeID, t.Params["snapshot_id"]); err == nil {
		sn.State = apitypes.SnapshotReady
		if err := tx.UpdateSnapshot(ctx, sn); err != nil {
			return err
		}
	}
	// System snapshots the node found left over (by a backup killed
	// midway) and removed.
	for _, tag := range strings.Fields(res.Result["deleted_leftovers"]) {
		if sn, err := tx.SnapshotByName(ctx, b.VolumeID, tag); err == nil && sn.Kind == SnapshotSystem {
			if err := tx.DeleteSnapshot(ctx, sn.ID); err != nil {
				return err
			}
		}
	}
	if old.ID != "" && old.ID != b.ID && res.Result["deleted_base"] == old.BaseTag {
		// The node removed the old base: one base per volume and repository.
		if sn, err := tx.SnapshotByName(ctx, b.VolumeID, old.BaseTag); err == nil {
			if err := tx.DeleteSnapshot(ctx, sn.ID); err != nil {
				return err
			}
		}
		old.BaseTag = ""
		return tx.UpdateBackup(ctx, old)
	}
	return nil
}

// undoBackup records a failed backup; its system snapshot row goes (the
// node removes the tag itself), so the previous base stays the base.
func (s *Service) undoBackup(ctx context.Context, tx *meta.Tx, t meta.Task, res *apitypes.NodeComplete) error {
	if sn, err := tx.SnapshotByID(ctx, t.VolumeID, t.Params["snapshot_id"]); err == nil && sn.State == apitypes.SnapshotCreating {
		if err := tx.DeleteSnapshot(ctx, sn.ID); err != nil {
			return err
		}
	}
	b, err := tx.BackupByID(ctx, t.ProjectID, t.Params["backup_id"])
	if meta.IsNoRows(err) {
		return nil
	}
	if err != nil {
		return err
	}
	b.State, b.Error = apitypes.BackupFailed, "the backup did not finish"
	if res != nil && res.Error != "" {
		b.Error = res.Error
	}
	return tx.UpdateBackup(ctx, b)
}

// storeUniqueBytes keeps what each backup of a repository alone holds, as
// the node measured it after a backup or forget (result "unique_bytes", a
// JSON object of backup id to bytes; absent when measuring failed).
func storeUniqueBytes(ctx context.Context, tx *meta.Tx, repositoryID string, res apitypes.NodeComplete) error {
	raw := res.Result["unique_bytes"]
	if raw == "" {
		return nil
	}
	var sizes map[string]int64
	if err := json.Unmarshal([]byte(raw), &sizes); err != nil {
		return fmt.Errorf("the node's unique_bytes: %w", err)
	}
	return tx.SetUniqueBytes(ctx, repositoryID, sizes)
}

// backupByRef finds a backup of the caller's project by id or unique id prefix.
func backupByRef(ctx context.Context, tx *meta.Tx, c Caller, ref string) (meta.Backup, error) {
	ref = strings.ToLower(strings.TrimSpace(ref))
	if b, err := tx.BackupByID(ctx, c.ProjectID, ref); err == nil || !meta.IsNoRows(err) {
		return b, err
	}
	if len(ref) >= 4 && strings.Trim(ref, "0123456789abcdef-") == "" {
		bs, err := tx.BackupsByPrefix(ctx, c.ProjectID, ref, 2)
		if err != nil {
			return meta.Backup{}, err
		}
		switch len(bs) {
		case 1:
			return bs[0], nil
		case 2:
			return meta.Backup{}, core.Invalid("backup id prefix %q is ambiguous", ref)
		}
	}
	return meta.Backup{}, core.NotFound("backup %q not found in project %q", ref, c.ProjectName)
}

// GetBackup returns one backup by id or unique id prefix.
func (s *Service) GetBackup(ctx context.Context, c Caller, ref string) (apitypes.Backup, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.Backup{}, err
	}
	var out apitypes.Backup
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		b, err := backupByRef(ctx, tx, c, ref)
		if err != nil {
			return err
		}
		out, err = s.backupJSON(ctx, tx, b)
		return err
	})
	return out, err
}

// ListBackups lists the project's backups newest first, optionally of one
// volume and in one repository.
func (s *Service) ListBackups(ctx context.Context, c Caller, pg Page, volRef, repoRef string) (apitypes.List[apitypes.Backup], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.Backup]{}, err
	}
	var out apitypes.List[apitypes.Backup]
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		f := meta.BackupFilter{ProjectID: c.ProjectID, Limit: pg.Limit + 1}
		if volRef != "" {
			v, err := volumeByRef(ctx, tx, c, volRef)
			if err != nil {
				return err
			}
			f.VolumeID = v.ID
		}
		if repoRef != "" {
			r, err := repositoryByRef(ctx, tx, c, repoRef)
			if err != nil {
				return err
			}
			f.RepositoryID = r.ID
		}
		if pg.Cursor != "" {
			var ok bool
			if f.AfterTime, f.AfterID, ok = strings.Cut(pg.Cursor, "\x00"); !ok {
				return core.Invalid("invalid cursor: pass next_cursor from the previous page unchanged")
			}
		}
		bs, err := tx.Backups(ctx, f)
		if err != nil {
			return err
		}
		var convErr error
		out = pageOf(bs, pg.Limit, func(b meta.Backup) apitypes.Backup {
			j, err := s.backupJSON(ctx, tx, b)
			if err != nil {
				convErr = err
			}
			return j
		}, func(b meta.Backup) string { return meta.FormatTime(b.CreatedAt) + "\x00" + b.ID })
		return convErr
	})
	return out, err
}

// RestoreBackup queues the restore of a backup into a new volume or a file
// on a node's host.
func (s *Service) RestoreBackup(ctx context.Context, c Caller, ref string, req apitypes.BackupRestore) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	n := 0
	for _, set := range []bool{req.ToVolume != "", req.ToFile != "", req.InPlace} {
		if set {
			n++
		}
	}
	if n != 1 {
		return apitypes.Task{}, core.Invalid("give one of to_volume (a new volume's name), to_file (an absolute path on the node's host) or in_place")
	}
	if req.ToFile != "" && !filepath.IsAbs(req.ToFile) {
		return apitypes.Task{}, core.Invalid("to_file %q: give an absolute path on the node's host", req.ToFile)
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		b, err := backupByRef(ctx, tx, c, ref)
		if err != nil {
			return nil, err
		}
		if b.State != apitypes.BackupReady && b.State != apitypes.BackupCorrupt {
			return nil, core.Conflict("not_ready", "backup %s is %s: only a finished backup can be restored", b.ID, b.State)
		}
		r, err := tx.RepositoryByID(ctx, c.ProjectID, b.RepositoryID)
		if meta.IsNoRows(err) {
			return nil, core.NotFound("the repository of backup %s no longer exists", b.ID)
		}
		if err != nil {
			return nil, err
		}
		nodeRef := req.Node
		if kind, _, _ := location.Parse(r.URL); kind == location.Local {
			if nodeRef != "" {
				if n, err := nodeByRef(ctx, tx, nodeRef); err != nil || n.ID != r.NodeID {
					return nil, core.Conflict("unreachable", "repository %q is a directory on another node: restore on its node", r.Name)
				}
			}
			nodeRef = r.NodeID
		}
		params := map[string]string{"backup_id": b.ID, "repository_id": r.ID}
		if req.InPlace {
			v, err := tx.VolumeByID(ctx, b.VolumeID)
			if meta.IsNoRows(err) {
				return nil, core.NotFound("the volume of backup %s no longer exists: restore it to a new volume", b.ID)
			}
			if err != nil {
				return nil, err
			}
			if err := liveVolume(v); err != nil {
				return nil, err
			}
			if nodeRef != "" && nodeRef != v.NodeID {
				return nil, core.Conflict("unreachable", "repository %q is a directory on another node than volume %q", r.Name, v.Name)
			}
			sn, err := s.insertCreatingSnapshot(ctx, tx, v, "", "the volume before backup "+b.ID+" was restored into it", "before-restore")
			if err != nil {
				return nil, err
			}
			params["in_place"], params["save_snapshot_id"] = "true", sn.ID
			t := s.newTask(c, apitypes.OpBackupRestore, v, "volume", v.ID, params)
			t.Cancelable = true
			return t, nil
		}
		if req.ToFile != "" {
			n, err := s.pickNode(ctx, tx, nodeRef)
			if err != nil {
				return nil, err
			}
			params["to_file"] = filepath.Clean(req.ToFile)
			t := &meta.Task{ID: core.NewID(), Kind: apitypes.OpBackupRestore, State: apitypes.TaskQueued, ProjectID: c.ProjectID,
				NodeID: n.ID, ResourceType: "backup", ResourceID: b.ID, Params: params, CreatedAt: s.now(), Cancelable: true}
			return t, nil
		}
		nv, err := s.newVolume(ctx, tx, c, req.ToVolume, req.Kind, nodeRef, max(b.LogicalSize, 512), apitypes.VolumeCreating)
		if err != nil {
			return nil, err
		}
		t := s.newTask(c, apitypes.OpBackupRestore, nv, "volume", nv.ID, params)
		t.Cancelable = true
		return t, nil
	})
}

// restoreOutcome makes the plan of a restore.
func (s *Service) restoreOutcome(ctx context.Context, tx *meta.Tx, t meta.Task) (*outcome, error) {
	r, err := tx.RepositoryByID(ctx, t.ProjectID, t.Params["repository_id"])
	if meta.IsNoRows(err) {
		return nil, core.NotFound("the repository of backup %s no longer exists", t.Params["backup_id"])
	}
	if err != nil {
		return nil, err
	}
	nr, err := s.nodeRepository(r)
	if err != nil {
		return nil, err
	}
	var files *apitypes.BackupFiles
	if t.Kind == apitypes.OpBackupFiles {
		part, _ := strconv.Atoi(t.Params["partition"])
		files = &apitypes.BackupFiles{Include: strings.Split(t.Params["include"], "\x00"), Target: t.Params["target"],
			Partition: part, Overwrite: t.Params["overwrite"] == "true"}
	}
	o := &outcome{plan: apitypes.Plan{Op: t.Kind, VolumeID: t.VolumeID, ToFile: t.Params["to_file"], Files: files,
		Backup: &apitypes.NodeBackup{ID: t.Params["backup_id"], Tags: []string{}}, Repository: nr}}
	if t.VolumeID == "" {
		return o, nil
	}
	v, err := tx.VolumeByID(ctx, t.VolumeID)
	if err != nil {
		return nil, err
	}
	if t.Params["in_place"] != "true" {
		v.State = apitypes.VolumeReady
		o.vol = v
		sc := s.sidecar(tx, ctx, v, NewTree(nil, nil))
		o.plan.Sidecar = &sc
		return o, nil
	}
	// In place: the safety snapshot is created first (it becomes the head's
	// parent, so a revert undoes the restore), the live export is stopped
	// and restarted around the write.
	if err := liveVolume(v); err != nil {
		return nil, err
	}
	tree, err := loadTree(ctx, tx, v)
	if err != nil {
		return nil, err
	}
	o.vol, o.tree, o.before = v, tree, map[string]meta.Snapshot{}
	for _, x := range tree.Snapshots() {
		o.before[x.ID] = x
	}
	saved := tree.Get(t.Params["save_snapshot_id"])
	if saved == nil {
		return nil, core.NotFound("the safety snapshot of restore %s is gone", t.ID)
	}
	sv := *saved
	sv.State, sv.Size = apitypes.SnapshotReady, v.Size
	tree.Create(sv)
	o.plan.SaveTag = sv.Tag
	es, err := tx.Exports(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		if e.SnapshotID == nil {
			o.plan.Exports = append(o.plan.Exports, s.nodeExport(e, v, ""))
		}
	}
	o.vol.UpdatedAt = s.now()
	sc := s.sidecar(tx, ctx, o.vol, tree)
	o.plan.Sidecar = &sc
	return o, nil
}

// commitRestore makes a restored volume ready with the size and
// allocation the node measured.
func (s *Service) commitRestore(ctx context.Context, tx *meta.Tx, t *meta.Task, res apitypes.NodeComplete) error {
	if t.VolumeID == "" {
		return nil
	}
	if t.Params["in_place"] == "true" {
		o, err := s.restoreOutcome(ctx, tx, *t)
		if err != nil {
			return err
		}
		if res.Size > 0 {
			o.vol.Size = res.Size
		}
		o.vol.Allocated = res.Allocated
		if t.Result == nil {
			t.Result = map[string]string{}
		}
		t.Result["saved_snapshot_id"] = t.Params["save_snapshot_id"]
		return s.writeTree(ctx, tx, o, res)
	}
	v, err := tx.VolumeByID(ctx, t.VolumeID)
	if err != nil {
		return err
	}
	v.State, v.UpdatedAt = apitypes.VolumeReady, s.now()
	if res.Size > 0 {
		v.Size = res.Size
	}
	v.Allocated = res.Allocated
	return tx.UpdateVolume(ctx, v)
}

// undoRestore removes the volume a failed restore was making.
func (s *Service) undoRestore(ctx context.Context, tx *meta.Tx, t meta.Task, r *apitypes.NodeComplete) error {
	if t.Params["in_place"] == "true" {
		return s.undoVolumeOp(ctx, tx, t, r) // the safety snapshot, the volume's state
	}
	if t.VolumeID == "" {
		return nil
	}
	v, err := tx.VolumeByID(ctx, t.VolumeID)
	if meta.IsNoRows(err) || (err == nil && v.State != apitypes.VolumeCreating) {
		return nil
	}
	if err != nil {
		return err
	}
	return tx.DeleteVolume(ctx, v.ID)
}

// pruneInterval is how often forgets may start a prune of a repository by
// themselves (a prune asked for runs whenever asked).
const pruneInterval = 24 * time.Hour

// ForgetBackups removes from a repository (default: the project's default)
// the backups of a volume that a retention policy does not keep; with
// DryRun it only says which would go and what that would free. Afterwards
// a prune of the repository is queued, at most once a day.
func (s *Service) ForgetBackups(ctx context.Context, c Caller, volRef string, req apitypes.BackupForget) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	pol := retention.Policy{Last: req.KeepLast, Hourly: req.KeepHourly, Daily: req.KeepDaily, Weekly: req.KeepWeekly,
		Monthly: req.KeepMonthly, Yearly: req.KeepYearly}
	if err := pol.Check(); err != nil {
		return apitypes.Task{}, err
	}
	if req.KeepWithin != "" {
		d, err := retention.ParseDuration(req.KeepWithin)
		if err != nil {
			return apitypes.Task{}, err
		}
		pol.Within = d
	}
	if pol.Empty() {
		return apitypes.Task{}, core.Invalid("give at least one rule (keep_last, keep_daily, ... keep_within): an empty policy would forget every backup")
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		v, err := volumeByRef(ctx, tx, c, volRef)
		if err != nil {
			return nil, err
		}
		r, err := backupRepository(ctx, tx, c, req.Repository)
		if err != nil {
			return nil, err
		}
		return s.forgetTask(ctx, tx, v, r, pol, req.DryRun, nil)
	})
}

// forgetTask makes the task of a forget of v's backups in r that pol does
// not keep; only decides: the ids go in the task's params. only, when set,
// limits the candidates (a schedule's retention: its own backups).
func (s *Service) forgetTask(ctx context.Context, tx *meta.Tx, v meta.Volume, r meta.Repository, pol retention.Policy, dryRun bool,
	only func(meta.Backup) bool) (*meta.Task, error) {
	forget, keep, exported, err := s.forgetDecision(ctx, tx, v, r, pol, only)
	if err != nil {
		return nil, err
	}
	t := &meta.Task{ID: core.NewID(), Kind: apitypes.OpBackupForget, State: apitypes.TaskQueued, ProjectID: v.ProjectID,
		NodeID: r.NodeID, VolumeID: v.ID, ResourceType: "volume", ResourceID: v.ID, CreatedAt: s.now(),
		Params: map[string]string{"repository_id": r.ID, "forget": strings.Join(forget, " "), "keep": strings.Join(keep, " "),
			"dry_run": strconv.FormatBool(dryRun)}}
	if len(exported) > 0 {
		t.Params["kept_exported"] = strings.Join(exported, " ")
	}
	return t, nil
}

// forgetDecision applies pol to v's finished backups in r (those only
// accepts): which go, which stay, and which stay because they are exported.
func (s *Service) forgetDecision(ctx context.Context, tx *meta.Tx, v meta.Volume, r meta.Repository, pol retention.Policy,
	only func(meta.Backup) bool) (forget, keep, exported []string, err error) {
	bs, err := tx.Backups(ctx, meta.BackupFilter{ProjectID: v.ProjectID, VolumeID: v.ID, RepositoryID: r.ID, Limit: 1 << 30})
	if err != nil {
		return nil, nil, nil, err
	}
	var cands []meta.Backup
	for _, b := range bs {
		if (b.State == apitypes.BackupReady || b.State == apitypes.BackupCorrupt) && (only == nil || only(b)) {
			cands = append(cands, b)
		}
	}
	items := make([]retention.Item, len(cands))
	for i, b := range cands {
		items[i] = retention.Item{Time: b.CreatedAt}
	}
	for i, d := range retention.Apply(items, pol) {
		if d.Keep {
			keep = append(keep, cands[i].ID)
			continue
		}
		es, err := tx.BackupExports(ctx, cands[i].ID, "")
		if err != nil {
			return nil, nil, nil, err
		}
		if len(es) > 0 {
			// Served over NBD: it stays until unexported.
			keep = append(keep, cands[i].ID)
			exported = append(exported, cands[i].ID)
			continue
		}
		forget = append(forget, cands[i].ID)
	}
	return forget, keep, exported, nil
}

// forgetOutcome makes the plan of a forget (or of a backup verify): the
// repository and the backups to remove (or check), decided when asked for.
func (s *Service) forgetOutcome(ctx context.Context, tx *meta.Tx, t meta.Task) (*outcome, error) {
	r, err := tx.RepositoryByID(ctx, t.ProjectID, t.Params["repository_id"])
	if meta.IsNoRows(err) {
		return nil, core.NotFound("repository %s no longer exists", t.Params["repository_id"])
	}
	if err != nil {
		return nil, err
	}
	nr, err := s.nodeRepository(r)
	if err != nil {
		return nil, err
	}
	ids := t.Params["forget"]
	if t.Kind == apitypes.OpBackupVerify {
		ids = t.Params["backups"]
	}
	return &outcome{plan: apitypes.Plan{Op: t.Kind, VolumeID: t.VolumeID, Repository: nr,
		Forget: strings.Fields(ids), DryRun: t.Params["dry_run"] == "true", Repair: t.Params["repair"] == "true"}}, nil
}

// commitForget drops the forgotten backups (and the system snapshot row of
// one that was a base), and queues a prune unless one ran within a day.
func (s *Service) commitForget(ctx context.Context, tx *meta.Tx, t *meta.Task, res apitypes.NodeComplete) error {
	if t.Result == nil {
		t.Result = map[string]string{}
	}
	t.Result["forget"], t.Result["keep"] = t.Params["forget"], t.Params["keep"]
	if k := t.Params["kept_exported"]; k != "" {
		t.Result["kept_exported"] = k
	}
	ids := strings.Fields(t.Params["forget"])
	if t.Params["dry_run"] == "true" || len(ids) == 0 {
		return nil
	}
	for _, id := range ids {
		b, err := tx.BackupByID(ctx, t.ProjectID, id)
		if meta.IsNoRows(err) {
			continue
		}
		if err != nil {
			return err
		}
		if b.BaseTag != "" {
			if sn, err := tx.SnapshotByName(ctx, b.VolumeID, b.BaseTag); err == nil && sn.Kind == SnapshotSystem {
				if err := tx.DeleteSnapshot(ctx, sn.ID); err != nil {
					return err
				}
			}
		}
		if err := tx.DeleteBackup(ctx, id); err != nil {
			return err
		}
	}
	rid := t.Params["repository_id"]
	if err := storeUniqueBytes(ctx, tx, rid, res); err != nil {
		return err
	}
	if last, err := tx.LastSucceededTask(ctx, apitypes.OpRepositoryPrune, rid); err == nil && last.FinishedAt != nil &&
		s.now().Sub(*last.FinishedAt) < pruneInterval {
		t.Result["prune"] = "ran within a day: not queued (prune on demand with `cairn repository prune`)"
		return nil
	} else if err != nil && !meta.IsNoRows(err) {
		return err
	}
	if q, err := tx.QueuedTaskFor(ctx, apitypes.OpRepositoryPrune, rid); err == nil {
		t.Result["prune_task_id"] = q.ID
		return nil
	} else if !meta.IsNoRows(err) {
		return err
	}
	r, err := tx.RepositoryByID(ctx, t.ProjectID, rid)
	if err != nil {
		return err
	}
	pt := s.repositoryTask(t.ProjectID, apitypes.OpRepositoryPrune, r, nil)
	if err := tx.InsertTask(ctx, pt); err != nil {
		return err
	}
	t.Result["prune_task_id"] = pt.ID
	return nil
}

// VerifyBackups queues a re-read of backups' data: the named ones, or every
// finished backup of a volume in a repository. Damage fails the task with
// the code "corrupt" and marks every backup that needs damaged data
// `corrupt`; a backup found whole is `ready` again.
func (s *Service) VerifyBackups(ctx context.Context, c Caller, req apitypes.BackupVerify) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	if (len(req.Backups) == 0) == (req.Volume == "") {
		return apitypes.Task{}, core.Invalid("name backups, or a volume (every backup of it in the repository)")
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		var ids []string
		var repoID string
		for _, ref := range req.Backups {
			b, err := backupByRef(ctx, tx, c, ref)
			if err != nil {
				return nil, err
			}
			if b.State != apitypes.BackupReady && b.State != apitypes.BackupCorrupt {
				return nil, core.Conflict("not_ready", "backup %s is %s: only finished backups can be verified", b.ID, b.State)
			}
			if repoID != "" && b.RepositoryID != repoID {
				return nil, core.Invalid("the backups are in different repositories: verify them one repository at a time")
			}
			repoID = b.RepositoryID
			ids = append(ids, b.ID)
		}
		if req.Volume != "" {
			v, err := volumeByRef(ctx, tx, c, req.Volume)
			if err != nil {
				return nil, err
			}
			r, err := backupRepository(ctx, tx, c, req.Repository)
			if err != nil {
				return nil, err
			}
			repoID = r.ID
			bs, err := tx.Backups(ctx, meta.BackupFilter{ProjectID: c.ProjectID, VolumeID: v.ID, RepositoryID: r.ID, Limit: 1 << 30})
			if err != nil {
				return nil, err
			}
			for _, b := range bs {
				if b.State == apitypes.BackupReady || b.State == apitypes.BackupCorrupt {
					ids = append(ids, b.ID)
				}
			}
			if len(ids) == 0 {
				return nil, core.NotFound("volume %q has no finished backup in repository %q", v.Name, r.Name)
			}
		}
		r, err := tx.RepositoryByID(ctx, c.ProjectID, repoID)
		if err != nil {
			return nil, err
		}
		return &meta.Task{ID: core.NewID(), Kind: apitypes.OpBackupVerify, State: apitypes.TaskQueued, ProjectID: c.ProjectID,
			NodeID: r.NodeID, ResourceType: "repository", ResourceID: r.ID, CreatedAt: s.now(), Cancelable: true,
			Params: map[string]string{"repository_id": r.ID, "backups": strings.Join(ids, " "), "repair": strconv.FormatBool(req.Repair)}}, nil
	})
}

// markVerified records what a verify found: every backup it names as
// needing damaged data is corrupt, the other checked ones ready.
func markVerified(ctx context.Context, tx *meta.Tx, t meta.Task, res map[string]string) error {
	if res == nil || (t.Kind != apitypes.OpBackupVerify && t.Kind != apitypes.OpRepositoryVerify) {
		return nil
	}
	bad := map[string]bool{}
	for _, id := range strings.Fields(res["corrupt_backups"]) {
		bad[id] = true
	}
	checked := strings.Fields(t.Params["backups"])
	if t.Kind == apitypes.OpRepositoryVerify {
		checked = nil // a repository verify may re-read a share only: it clears nothing
	}
	for id := range bad {
		checked = append(checked, id)
	}
	for _, id := range checked {
		b, err := tx.BackupByID(ctx, t.ProjectID, id)
		if meta.IsNoRows(err) {
			continue // a backup made by `cairn repo`, unknown to the server
		}
		if err != nil {
			return err
		}
		want := apitypes.BackupReady
		if bad[id] {
			want = apitypes.BackupCorrupt
		}
		if b.State != want && (b.State == apitypes.BackupReady || b.State == apitypes.BackupCorrupt) {
			b.State = want
			if err := tx.UpdateBackup(ctx, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// CopyBackupFiles queues a copy of files out of a disk image backup into a
// directory on a node's host.
func (s *Service) CopyBackupFiles(ctx context.Context, c Caller, ref string, req apitypes.BackupFiles) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	if len(req.Include) == 0 || req.Target == "" || !filepath.IsAbs(req.Target) {
		return apitypes.Task{}, core.Invalid("give the paths to copy (include) and an absolute target directory on the node's host")
	}
	for _, p := range req.Include {
		if !strings.HasPrefix(p, "/") {
			return apitypes.Task{}, core.Invalid("include %q: give an absolute path inside the image, such as /etc/hosts", p)
		}
	}
	if req.Partition < 0 {
		return apitypes.Task{}, core.Invalid("partition %d: partitions count from 1", req.Partition)
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		b, r, n, err := s.finishedBackupOn(ctx, tx, c, ref, req.Node)
		if err != nil {
			return nil, err
		}
		return &meta.Task{ID: core.NewID(), Kind: apitypes.OpBackupFiles, State: apitypes.TaskQueued, ProjectID: c.ProjectID,
			NodeID: n.ID, ResourceType: "backup", ResourceID: b.ID, CreatedAt: s.now(), Cancelable: true,
			Params: map[string]string{"backup_id": b.ID, "repository_id": r.ID, "include": strings.Join(req.Include, "\x00"),
				"target": filepath.Clean(req.Target), "partition": strconv.Itoa(req.Partition), "overwrite": strconv.FormatBool(req.Overwrite)}}, nil
	})
}
