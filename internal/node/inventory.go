package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cairn-backup/cairn/internal/atomicfile"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/qemu"
)

// inventory lists what the data directory holds: every volume file with its
// snapshot tags, and, as not present, volumes known only by their sidecar.
func (w *Worker) inventory(ctx context.Context) (apitypes.NodeInventory, error) {
	entries, err := os.ReadDir(w.volumesDir())
	if err != nil {
		return apitypes.NodeInventory{}, fmt.Errorf("reading the volumes directory: %w", err)
	}
	files := map[string]bool{}
	sidecars := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !e.Type().IsRegular() {
			if strings.HasPrefix(name, ".") && strings.Contains(name, ".json.tmp") {
				_ = os.Remove(filepath.Join(w.volumesDir(), name)) // a sidecar write cut short
			}
			continue
		}
		if id, ok := strings.CutSuffix(name, ".qcow2"); ok {
			files[id] = true
		} else if id, ok := strings.CutSuffix(name, ".json"); ok {
			sidecars[id] = true
		}
	}
	inv := apitypes.NodeInventory{Volumes: []apitypes.InventoryVolume{}}
	for id := range files {
		v := apitypes.InventoryVolume{ID: id, Present: true, Snapshots: []apitypes.InventorySnapshot{}}
		// -U: a VM may hold the volume; its snapshot table is what counts.
		info, err := qemu.Info(ctx, w.volumePath(id), true)
		if err == nil && info.Format != "qcow2" {
			err = fmt.Errorf("%s is not a qcow2 image (it reads as %s): the file is damaged", w.volumePath(id), info.Format)
		}
		if err == nil && w.uncleanStart {
			if n, rerr := qemu.RepairLeaks(ctx, w.volumePath(id)); rerr != nil {
				w.log().Warn("repairing leaked clusters failed", "volume", id, "err", rerr)
			} else if n > 0 {
				w.log().Info("repaired clusters leaked by an unclean stop", "volume", id, "leaks", n)
			}
		}
		if err != nil {
			v.Error = err.Error()
		} else {
			v.Size, v.Allocated = info.VirtualSize, info.ActualSize
			for _, s := range info.Snapshots {
				v.Snapshots = append(v.Snapshots, apitypes.InventorySnapshot{
					Tag:       s.Tag,
					Size:      s.VirtualSize,
					CreatedAt: s.Date.UTC().Format(time.RFC3339Nano),
				})
			}
		}
		inv.Volumes = append(inv.Volumes, v)
	}
	for id := range sidecars {
		if !files[id] {
			inv.Volumes = append(inv.Volumes, apitypes.InventoryVolume{ID: id, Present: false, Snapshots: []apitypes.InventorySnapshot{}})
		}
	}
	sort.Slice(inv.Volumes, func(i, j int) bool { return inv.Volumes[i].ID < inv.Volumes[j].ID })
	return inv, nil
}

// reconcile reports the inventory, writes the sidecars the server returns and
// restarts the exports it lists on their recorded ports and names. An export
// that cannot be restored is logged, not fatal: the node still serves tasks.
func (w *Worker) reconcile(ctx context.Context) error {
	inv, err := w.inventory(ctx)
	if err != nil {
		return err
	}
	resp, err := w.Server.Inventory(ctx, inv)
	if err != nil {
		return fmt.Errorf("reporting the inventory: %w", err)
	}
	for _, v := range resp.Volumes {
		if v.Sidecar.ID != "" {
			if err := w.writeSidecar(&v.Sidecar); err != nil {
				w.log().Error("writing a sidecar failed", "volume", v.ID, "err", err)
			}
		}
		for _, e := range v.Exports {
			if e.VolumeID == "" {
				e.VolumeID = v.ID
			}
			var err error
			if e.Tag == "" {
				_, err = w.startLiveExport(ctx, e)
			} else {
				_, err = w.startSnapshotExport(ctx, e)
			}
			if err != nil {
				w.log().Error("restoring an export failed", "volume", e.VolumeID, "export", e.ID, "port", e.Port, "err", err)
			}
		}
	}
	// Backup exports come back in the background: opening a repository
	// may wait for a prune's lock, which must not hold up the node's start.
	for _, p := range resp.BackupExports {
		go func() {
			if _, err := w.startBackupExport(ctx, p); err != nil && p.Export != nil {
				w.log().Error("restoring a backup export failed", "export", p.Export.ID, "port", p.Export.Port, "err", err)
			} else if ctx.Err() != nil && p.Export != nil { // the node stopped meanwhile
				_ = w.stopBackupExport(context.Background(), p.Export.ID)
			}
		}()
	}
	w.log().Info("inventory reported", "volumes", len(inv.Volumes))
	return nil
}

// checkID refuses ids that could escape the volumes directory.
func checkID(id string) error {
	if id == "" || strings.HasPrefix(id, ".") ||
		strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
		return core.Invalid("volume id %q is not a valid id", id)
	}
	return nil
}

// writeSidecar replaces the volume's sidecar atomically: a reader sees the old
// file or the new one, never a mix, and after a crash one of the two is on
// disk. The new content goes to a temporary file in the same directory, is
// synced, renamed over the old one, and the directory is synced.
func (w *Worker) writeSidecar(sc *apitypes.Sidecar) error {
	if err := checkID(sc.ID); err != nil {
		return err
	}
	data, err := json.MarshalIndent(sc, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(w.sidecarPath(sc.ID), append(data, '\n'), 0o600)
}

// removeFile removes path (a missing file is fine) and syncs its directory.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
