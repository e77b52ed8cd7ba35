package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/qemu"
)

// liveExport is the qemu-storage-daemon holding a volume, serving its live
// export. At most one per volume: while it runs, it is the volume's only
// writer, and snapshot create / delete and grow go through it.
type liveExport struct {
	spec   apitypes.NodeExport // as requested; Port as bound
	daemon *qemu.StorageDaemon
}

// snapExport is a qemu-nbd serving one snapshot read-only.
type snapExport struct {
	spec   apitypes.NodeExport
	server *qemu.SnapshotServer
}

// daemonFor returns the daemon holding the volume, or nil.
func (w *Worker) daemonFor(volumeID string) *qemu.StorageDaemon {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l := w.live[volumeID]; l != nil {
		return l.daemon
	}
	return nil
}

// startLiveExport starts the daemon for a live export of spec.VolumeID. The
// caller holds the volume's lock. Asking again for the export that runs is a
// success (a retried task); another live export of a held volume is refused.
func (w *Worker) startLiveExport(ctx context.Context, spec apitypes.NodeExport) (int, error) {
	w.mu.Lock()
	cur := w.live[spec.VolumeID]
	w.mu.Unlock()
	if cur != nil {
		if cur.spec.ID == spec.ID {
			return cur.spec.Port, nil
		}
		return 0, core.Conflict("exported", "volume %s already has a live export (%s)", spec.VolumeID, cur.spec.ID)
	}
	if spec.Address == "" {
		spec.Address = w.ExportAddress
	}
	tls, err := w.writeExportTLS(spec)
	if err != nil {
		return 0, err
	}
	sd, err := qemu.StartStorageDaemon(ctx, qemu.DaemonConfig{
		Image:      w.volumePath(spec.VolumeID),
		RunDir:     w.runDir(),
		ID:         "vol-" + spec.VolumeID,
		Address:    spec.Address,
		Port:       spec.Port,
		ExportName: spec.Name,
		Writable:   spec.Writable,
		TLS:        tls,
	})
	if err != nil {
		w.removeExportTLS(spec.ID)
		return 0, err
	}
	spec.Port = sd.Port()
	w.mu.Lock()
	w.live[spec.VolumeID] = &liveExport{spec: spec, daemon: sd}
	w.mu.Unlock()
	w.log().Info("live export started", "volume", spec.VolumeID, "export", spec.ID, "uri", sd.URI(), "writable", spec.Writable, "tls", tls != nil)
	go w.watchDaemon(spec.VolumeID, sd)
	return spec.Port, nil
}

// watchDaemon logs a daemon that dies on its own. It is not restarted: the
// export is down until the node restarts or the export is recreated, and the
// operator sees why in the log.
func (w *Worker) watchDaemon(volumeID string, sd *qemu.StorageDaemon) {
	<-sd.Done()
	w.mu.Lock()
	cur := w.live[volumeID]
	w.mu.Unlock()
	if cur != nil && cur.daemon == sd {
		w.log().Error("qemu-storage-daemon exited on its own: the volume's live export is down", "volume", volumeID, "uri", sd.URI())
	}
}

// stopLiveExport stops the daemon holding the volume, if any, and returns the
// spec it served (nil if none). The caller holds the volume's lock.
func (w *Worker) stopLiveExport(ctx context.Context, volumeID string) (*apitypes.NodeExport, error) {
	w.mu.Lock()
	cur := w.live[volumeID]
	delete(w.live, volumeID)
	w.mu.Unlock()
	if cur == nil {
		return nil, nil
	}
	err := cur.daemon.Stop(ctx)
	if err != nil {
		// It is gone either way; say why it did not stop cleanly.
		w.log().Warn("live export did not stop cleanly", "volume", volumeID, "err", err)
	}
	w.removeExportTLS(cur.spec.ID)
	return &cur.spec, nil
}

// startSnapshotExport starts qemu-nbd for a snapshot export. Asking again for
// an export that runs is a success.
func (w *Worker) startSnapshotExport(ctx context.Context, spec apitypes.NodeExport) (int, error) {
	w.mu.Lock()
	cur := w.snaps[spec.ID]
	w.mu.Unlock()
	if cur != nil {
		return cur.spec.Port, nil
	}
	if spec.Address == "" {
		spec.Address = w.ExportAddress
	}
	tls, err := w.writeExportTLS(spec)
	if err != nil {
		return 0, err
	}
	ss, err := qemu.StartSnapshotServer(ctx, qemu.SnapshotServerConfig{
		Image:      w.volumePath(spec.VolumeID),
		Tag:        spec.Tag,
		RunDir:     w.runDir(),
		ID:         "exp-" + spec.ID,
		Address:    spec.Address,
		Port:       spec.Port,
		ExportName: spec.Name,
		TLS:        tls,
	})
	if err != nil {
		w.removeExportTLS(spec.ID)
		return 0, err
	}
	spec.Port = ss.Port()
	w.mu.Lock()
	w.snaps[spec.ID] = &snapExport{spec: spec, server: ss}
	w.mu.Unlock()
	w.log().Info("snapshot export started", "volume", spec.VolumeID, "export", spec.ID, "tag", spec.Tag, "uri", ss.URI(), "tls", tls != nil)
	return spec.Port, nil
}

// stopExport stops the export with this id, live or snapshot. An export that
// does not run is not an error.
func (w *Worker) stopExport(ctx context.Context, exportID string) error {
	w.mu.Lock()
	snap := w.snaps[exportID]
	delete(w.snaps, exportID)
	var volumeID string
	for vid, l := range w.live {
		if l.spec.ID == exportID {
			volumeID = vid
		}
	}
	w.mu.Unlock()
	if snap != nil {
		if err := snap.server.Stop(ctx); err != nil {
			w.log().Warn("snapshot export did not stop cleanly", "export", exportID, "err", err)
		}
		w.removeExportTLS(exportID)
	}
	if volumeID != "" {
		_, err := w.stopLiveExport(ctx, volumeID)
		return err
	}
	return nil
}

// snapshotExportsOf lists the running snapshot exports of a volume.
func (w *Worker) snapshotExportsOf(volumeID string) []apitypes.NodeExport {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []apitypes.NodeExport
	for _, s := range w.snaps {
		if s.spec.VolumeID == volumeID {
			out = append(out, s.spec)
		}
	}
	return out
}

// stopVolumeExports stops every export of a volume.
func (w *Worker) stopVolumeExports(ctx context.Context, volumeID string) error {
	var errs []error
	for _, s := range w.snapshotExportsOf(volumeID) {
		errs = append(errs, w.stopExport(ctx, s.ID))
	}
	_, err := w.stopLiveExport(ctx, volumeID)
	return errors.Join(append(errs, err)...)
}

// stopAllExports stops every helper, when Run ends.
func (w *Worker) stopAllExports() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w.mu.Lock()
	var ids []string
	for id := range w.snaps {
		ids = append(ids, id)
	}
	var vols []string
	for vid := range w.live {
		vols = append(vols, vid)
	}
	w.mu.Unlock()
	for _, id := range ids {
		_ = w.stopExport(ctx, id)
	}
	for _, vid := range vols {
		unlock := w.locks.lock(vid)
		_, _ = w.stopLiveExport(ctx, vid)
		unlock()
	}
	w.stopBackupExports(ctx)
}

// tlsDir is where a TLS export's credentials live while it runs.
func (w *Worker) tlsDir(exportID string) string { return filepath.Join(w.runDir(), "tls", exportID) }

// writeExportTLS writes a TLS export's CA certificate, server certificate and
// key into its directory under the names QEMU's tls-creds-x509 reads
// (ca-cert.pem, server-cert.pem, server-key.pem; the key mode 0600) and
// returns the helper's TLS configuration; nil for an export without TLS.
func (w *Worker) writeExportTLS(spec apitypes.NodeExport) (*qemu.TLSServer, error) {
	if spec.TLS == nil {
		return nil, nil
	}
	t := spec.TLS
	if t.CACert == "" || t.ServerCert == "" || t.ServerKey == "" || t.ClientIdentity == "" {
		return nil, core.Invalid("export %s requires TLS but its plan lacks the CA, the server certificate, its key or the client identity", spec.ID)
	}
	if err := checkID(spec.ID); err != nil {
		return nil, err
	}
	dir := w.tlsDir(spec.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("export credentials: %w", err)
	}
	for _, f := range []struct {
		name string
		data string
		mode os.FileMode
	}{
		{"ca-cert.pem", t.CACert, 0o644},
		{"server-cert.pem", t.ServerCert, 0o644},
		{"server-key.pem", t.ServerKey, 0o600},
	} {
		path := filepath.Join(dir, f.name)
		_ = os.Remove(path) // a leftover may have another mode; WriteFile keeps it
		if err := os.WriteFile(path, []byte(f.data), f.mode); err != nil {
			w.removeExportTLS(spec.ID)
			return nil, fmt.Errorf("export credentials: %w", err)
		}
	}
	return &qemu.TLSServer{Dir: dir, Identity: t.ClientIdentity}, nil
}

// removeExportTLS removes an export's credentials directory, if any.
func (w *Worker) removeExportTLS(exportID string) {
	if checkID(exportID) != nil {
		return
	}
	if err := os.RemoveAll(w.tlsDir(exportID)); err != nil {
		w.log().Warn("removing an export's credentials failed", "export", exportID, "err", err)
	}
}
