package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/atomicfile"
	"github.com/cairn-backup/cairn/internal/chunker"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage/mount"
	"github.com/cairn-backup/cairn/internal/nbd"
	"github.com/cairn-backup/cairn/internal/qcow2"
	"github.com/cairn-backup/cairn/internal/qemu"
	"github.com/cairn-backup/cairn/internal/repo"
)

// deleteTag removes a qcow2 snapshot tag of the plan's volume, through the
// storage daemon when one holds the volume; a tag already gone is fine.
func (t *task) deleteTag(ctx context.Context, tag string) error {
	exists, _, err := t.hasTag(ctx, tag)
	if err != nil || !exists {
		return err
	}
	if sd := t.w.daemonFor(t.plan.VolumeID); sd != nil {
		err = sd.SnapshotDelete(ctx, tag)
	} else {
		err = qemu.SnapshotDelete(ctx, t.w.volumePath(t.plan.VolumeID), tag)
	}
	if err != nil && !core.IsNotFound(err) {
		return err
	}
	return nil
}

// backupCreate takes the system snapshot, reads it straight from the qcow2
// file (only the clusters changed since the base's system snapshot when
// there is a base), commits the backup to the repository, then removes the
// base's system snapshot. A failure removes the new system snapshot, so
// the previous base stays in place for the next try.
func (t *task) backupCreate(ctx context.Context) (err error) {
	p := t.plan
	nb := p.Backup
	if nb == nil || p.Tag == "" {
		return core.Invalid("no backup in the plan")
	}
	start := time.Now()
	failpoint(p.Op, "before-snapshot")
	if err := t.createSnapshot(ctx, p.Tag); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if derr := t.deleteTag(context.WithoutCancel(ctx), p.Tag); derr != nil {
				t.w.log().Warn("removing the system snapshot of a failed backup", "volume", p.VolumeID, "tag", p.Tag, "err", derr)
			}
		}
	}()
	failpoint(p.Op, "after-snapshot")

	r, done, err := t.lockedRepository(ctx, false, "backup", true)
	if err != nil {
		return err
	}
	defer done()

	path := t.w.volumePath(p.VolumeID)
	var src repo.ImageSource
	why := "first backup of the volume in this repository"
	im, err := qcow2.Open(path)
	if errors.Is(err, qcow2.ErrUnsupported) {
		// A file cairn's reader refuses is read whole through qemu-nbd.
		openErr := err
		stop, err := t.exportedSource(ctx, path, p.Tag, &src)
		if err != nil {
			return err
		}
		defer stop()
		why = fmt.Sprintf("%v: read in full through a read-only export", openErr)
	} else if err != nil {
		return err
	} else {
		defer im.Close()
		layer, err := im.Snapshot(p.Tag)
		if err != nil {
			return err
		}
		ext, err := layer.Extents()
		if err != nil {
			return err
		}
		src = repo.ImageSource{R: layer, Size: layer.Size(), Extents: toChunkerExtents(ext), Format: "qcow2", Path: path}
		if nb.BaseID != "" {
			why, err = t.incrementalFrom(ctx, r, im, layer, &src)
			if err != nil {
				return err
			}
		}
	}
	if why != "" {
		t.result("full_read", why)
	}
	m, err := r.BackupImage(ctx, src, repo.BackupInfo{ID: nb.ID, Tags: nb.Tags}, func(pr repo.Progress) { t.progress(pr.Done, pr.Total) })
	if err != nil {
		return err
	}
	failpoint(p.Op, "after-commit")
	t.result("parent_backup_id", m.Parent)
	t.result("logical_size", fmt.Sprint(m.Image.Size))
	t.result("bytes_read", fmt.Sprint(m.Summary.BytesRead))
	t.result("bytes_added", fmt.Sprint(m.Summary.BytesAdded))
	t.result("duration_ms", fmt.Sprint(time.Since(start).Milliseconds()))
	t.recordUniqueBytes(ctx, r)
	// One base per volume and repository: the old one goes. The backup is
	// committed; a failure here only leaves an extra system snapshot.
	if nb.BaseTag != "" && nb.BaseTag != p.Tag {
		if err := t.deleteTag(ctx, nb.BaseTag); err != nil {
			t.w.log().Warn("removing the previous base snapshot", "volume", p.VolumeID, "tag", nb.BaseTag, "err", err)
		} else {
			t.result("deleted_base", nb.BaseTag)
		}
	}
	t.removeLeftovers(ctx)
	return t.measure(ctx, p.VolumeID)
}

// exportedSource makes src read qcow2 snapshot tag of the file path through
// qemu-nbd (read-only, on loopback, under a random name) with cairn's NBD
// client: the path for files cairn's own reader refuses. Holes come from
// the export's allocation map. stop ends the export.
func (t *task) exportedSource(ctx context.Context, path, tag string, src *repo.ImageSource) (stop func(), err error) {
	ss, err := qemu.StartSnapshotServer(ctx, qemu.SnapshotServerConfig{Image: path, Tag: tag, RunDir: t.w.runDir(),
		ID: "backup-" + t.id, Address: "127.0.0.1", ExportName: core.RandomToken(16)})
	if err != nil {
		return nil, err
	}
	cfg := ss.Config()
	c, err := nbd.Dial(ctx, "tcp", net.JoinHostPort(cfg.Address, strconv.Itoa(cfg.Port)), cfg.ExportName, nil)
	if err == nil {
		var ranges []nbd.Range
		if ranges, err = c.Extents(ctx); err == nil {
			ext := make([]chunker.Extent, len(ranges))
			for i, r := range ranges {
				ext[i] = chunker.Extent{Offset: r.Offset, Length: r.Length}
			}
			*src = repo.ImageSource{R: c, Size: c.Size(), Extents: ext, Format: "qcow2", Path: path}
		} else {
			c.Close()
		}
	}
	stop = func() {
		if c != nil {
			c.Close()
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := ss.Stop(sctx); err != nil {
			t.w.log().Warn("stopping the backup's read-only export", "err", err)
		}
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("reading %s through qemu-nbd: %w", path, err)
	}
	return stop, nil
}

// removeLeftovers removes the system snapshots of the volume that are
// neither the new backup's nor another repository's base: left by a backup
// killed midway.
func (t *task) removeLeftovers(ctx context.Context) {
	p := t.plan
	keep := map[string]bool{p.Tag: true}
	for _, tag := range p.Backup.KeepTags {
		keep[tag] = true
	}
	_, snaps, err := qemu.ReadSnapshotTable(t.w.volumePath(p.VolumeID))
	if err != nil {
		return
	}
	var gone []string
	for _, s := range snaps {
		if !strings.HasPrefix(s.Tag, systemTagPrefix) || keep[s.Tag] || s.Tag == p.Backup.BaseTag {
			continue
		}
		if err := t.deleteTag(ctx, s.Tag); err != nil {
			t.w.log().Warn("removing a leftover system snapshot", "volume", p.VolumeID, "tag", s.Tag, "err", err)
			continue
		}
		gone = append(gone, s.Tag)
	}
	if len(gone) > 0 {
		t.result("deleted_leftovers", strings.Join(gone, " "))
	}
}

// systemTagPrefix marks cairn's own qcow2 snapshots (the server's
// service.SystemTagPrefix).
const systemTagPrefix = "cairn-sys-"

// incrementalFrom makes src incremental from the plan's base: the base
// backup's manifest and the clusters changed between its system snapshot
// and the new one. It returns why the backup must read everything instead
// ("" when it is incremental).
func (t *task) incrementalFrom(ctx context.Context, r *repo.Repository, im *qcow2.Image, layer *qcow2.Layer, src *repo.ImageSource) (string, error) {
	nb := t.plan.Backup
	base, err := r.LoadManifest(ctx, nb.BaseID)
	if core.IsNotFound(err) {
		return "the previous backup is no longer in the repository", nil
	}
	if err != nil {
		return "", err
	}
	from, err := im.Snapshot(nb.BaseTag)
	if core.IsNotFound(err) {
		return "the previous backup's system snapshot is gone", nil
	}
	if err != nil {
		return "", err
	}
	changed, err := qcow2.ChangedClusters(from, layer)
	if err != nil {
		return "", err
	}
	if base.Image == nil || base.Image.Size != layer.Size() {
		return "the volume's size changed", nil
	}
	src.Base, src.Changed = base, toChunkerExtents(changed)
	return "", nil
}

func toChunkerExtents(es []qcow2.Extent) []chunker.Extent {
	out := make([]chunker.Extent, len(es))
	for i, e := range es {
		out[i] = chunker.Extent{Offset: e.Offset, Length: e.Length}
	}
	return out
}

// backupRestore writes a backup into the plan's new volume (a qcow2 file
// with 64 KiB clusters) or into the file ToFile on this host (qcow2 for a
// .qcow2 name, else raw and sparse). The data goes to a sparse raw file in
// the same directory first; the result is renamed into place only when it
// is complete, so nothing half-written ever has the final name.
func (t *task) backupRestore(ctx context.Context) error {
	p := t.plan
	if p.Backup == nil || (p.VolumeID == "") == (p.ToFile == "") {
		return core.Invalid("no backup or no target in the plan")
	}
	out, asQcow2 := p.ToFile, strings.HasSuffix(p.ToFile, ".qcow2")
	inPlace := p.VolumeID != "" && p.SaveTag != ""
	if inPlace {
		if err := checkID(p.VolumeID); err != nil {
			return err
		}
		out = t.w.volumePath(p.VolumeID)
		// The safety snapshot first: the volume as it was stays one apply away.
		if err := t.createSnapshot(ctx, p.SaveTag); err != nil {
			return fmt.Errorf("the safety snapshot: %w", err)
		}
	} else if p.VolumeID != "" {
		if err := checkID(p.VolumeID); err != nil {
			return err
		}
		out, asQcow2 = t.w.volumePath(p.VolumeID), true
		if err := os.Remove(out); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err // a partial restore of an earlier attempt
		}
	} else if _, err := os.Lstat(out); err == nil {
		return core.Conflict("exists", "%s exists: choose another file, or remove it", out)
	}
	r, done, err := t.lockedRepository(ctx, false, "restore", true)
	if err != nil {
		return err
	}
	defer done()
	m, err := r.LoadManifest(ctx, p.Backup.ID)
	if err != nil {
		return err
	}
	if m.Image == nil {
		return core.Invalid("backup %s is a file backup, not a disk image", m.ID)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".cairn-restore-*")
	if err != nil {
		return fmt.Errorf("restoring to %s: %w", out, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	defer tmp.Close()
	tmpSize := m.Image.Size
	var volSize int64
	if inPlace {
		if volSize, _, err = qemu.ReadSnapshotTable(out); err != nil {
			return err
		}
		tmpSize = max(tmpSize, volSize) // zeros past the backup's end
	}
	if err := tmp.Truncate(tmpSize); err != nil {
		return fmt.Errorf("restoring to %s: %w", out, err)
	}
	wb := atomicfile.NewWriteBehind(tmp, 0)
	err = r.RestoreImage(ctx, m, wb, func(pr repo.Progress) { t.progress(pr.Done, pr.Total) })
	if err == nil {
		err = wb.Sync()
	}
	wb.Stop()
	if err != nil {
		return diskFull(err, out)
	}
	failpoint(p.Op, "after-data")
	if inPlace {
		return t.writeInPlace(ctx, tmpName, m.Image.Size, volSize)
	}
	final := tmpName
	if asQcow2 {
		final = tmpName + ".qcow2"
		defer os.Remove(final)
		if err := qemu.Convert(ctx, qemu.ConvertRequest{Source: tmpName, SourceFormat: "raw", Dest: final, DestFormat: "qcow2"}, nil); err != nil {
			return diskFull(fmt.Errorf("converting to qcow2: %w", err), out)
		}
	}
	if err := os.Rename(final, out); err != nil {
		return fmt.Errorf("moving the restored image into place: %w", err)
	}
	t.result("file", out)
	if p.VolumeID != "" {
		return t.measure(ctx, p.VolumeID)
	}
	return nil
}

// diskFull says plainly that the disk filled up.
func diskFull(err error, path string) error {
	if err != nil && strings.Contains(err.Error(), "no space left on device") {
		return fmt.Errorf("restoring to %s: the disk is full (nothing was left in place): %w", path, err)
	}
	return err
}

// backupForget removes the plan's backups from the repository (unless it
// is a dry run) and reports the stored bytes that a prune then frees: those
// of blobs no other backup in the repository uses.
func (t *task) backupForget(ctx context.Context) error {
	p := t.plan
	r, done, err := t.lockedRepository(ctx, false, "forget", true)
	if err != nil {
		return err
	}
	defer done()
	all, err := r.Backups(ctx)
	if err != nil {
		return err
	}
	remove := map[string]bool{}
	var present []string
	for _, id := range p.Forget {
		remove[id] = true
	}
	for _, m := range all {
		if remove[m.ID] {
			present = append(present, m.ID)
		}
	}
	freed, err := r.ExclusiveBytes(ctx, all, remove)
	if err != nil {
		return err
	}
	t.result("bytes_freed", fmt.Sprint(freed))
	if p.DryRun || len(present) == 0 {
		return nil
	}
	if err := r.Forget(ctx, present); err != nil {
		return err
	}
	t.recordUniqueBytes(ctx, r)
	return nil
}

// recordUniqueBytes measures what each backup of the repository alone
// holds (result unique_bytes, a JSON object of id to bytes). A failure only
// leaves the figures as they were.
func (t *task) recordUniqueBytes(ctx context.Context, r *repo.Repository) {
	st, err := r.Stats(ctx)
	if err != nil {
		t.w.log().Warn("measuring the backups' unique bytes", "err", err)
		return
	}
	sizes := make(map[string]int64, len(st.PerBackup))
	for _, b := range st.PerBackup {
		sizes[b.ID] = b.OnlyBytes
	}
	data, err := json.Marshal(sizes)
	if err == nil {
		t.result("unique_bytes", string(data))
	}
}

// writeInPlace writes the restored raw image src into the volume's live
// layer (its snapshots stay), growing the volume first when the backup is
// larger; the live export is stopped around the write and restarted on its
// port and name, whatever happens.
func (t *task) writeInPlace(ctx context.Context, src string, backupSize, volSize int64) error {
	p := t.plan
	restart, err := t.stopLiveExportForRestart(ctx)
	if err != nil {
		return err
	}
	path := t.w.volumePath(p.VolumeID)
	var werr error
	if backupSize > volSize {
		werr = qemu.Resize(ctx, path, backupSize)
	}
	if werr == nil {
		werr = qemu.Convert(ctx, qemu.ConvertRequest{Source: src, SourceFormat: "raw", Dest: path, DestFormat: "qcow2", Existing: true}, nil)
	}
	var restartErr error
	if restart != nil {
		if _, err := t.w.startLiveExport(ctx, *restart); err != nil {
			restartErr = fmt.Errorf("restarting the live export %s: %w", restart.ID, err)
		}
	}
	if err := errors.Join(werr, restartErr); err != nil {
		return err
	}
	return t.measure(ctx, p.VolumeID)
}

// backupFiles copies files out of a disk image backup (ext4 or XFS, with or
// without a partition table) into a directory of this host, reading the
// backup straight from the repository.
func (t *task) backupFiles(ctx context.Context) error {
	p := t.plan
	if p.Backup == nil || p.Files == nil {
		return core.Invalid("no backup or no files in the plan")
	}
	r, done, err := t.lockedRepository(ctx, false, "files", true)
	if err != nil {
		return err
	}
	defer done()
	m, err := r.LoadManifest(ctx, p.Backup.ID)
	if err != nil {
		return err
	}
	ir, err := r.NewImageReader(ctx, m)
	if err != nil {
		return err
	}
	defer ir.Close()
	fsys, where, err := mount.Pick(ir, ir.Size(), p.Files.Partition)
	if err != nil {
		return fmt.Errorf("backup %s: %w", m.ID, err)
	}
	st, err := mount.CopyOut(fsys, p.Files.Include, p.Files.Target, mount.CopyOptions{Overwrite: p.Files.Overwrite, NoOwners: os.Geteuid() != 0})
	if err != nil {
		return err
	}
	t.result("file_system", where)
	t.result("files", fmt.Sprint(st.Files))
	t.result("dirs", fmt.Sprint(st.Dirs))
	t.result("bytes", fmt.Sprint(st.Bytes))
	if st.Errors > 0 {
		return fmt.Errorf("%d entries could not be copied, for example: %s", st.Errors, strings.Join(st.ErrorSamples, "; "))
	}
	return nil
}
