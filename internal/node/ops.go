package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/qcow2"
	"github.com/cairn-backup/cairn/internal/qemu"
)

// failpoint kills the node (SIGKILL, no clean-up) when the environment
// variable CAIRN_FAILPOINT equals "<op>:<when>", for crash tests. when is
// "before-disk" (nothing changed yet) or "after-disk" (the volume file
// changed, and neither the sidecar nor the server knows).
func failpoint(op, when string) {
	if os.Getenv("CAIRN_FAILPOINT") == op+":"+when {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

// shutdownCompleteWait is how long a node shutting down keeps trying to
// report a finished task.
const shutdownCompleteWait = 5 * time.Second

// errCanceled is the error of a task the server asked to cancel.
var errCanceled = errors.New("canceled at the server's request")

// task is one claimed task being run.
type task struct {
	w    *Worker
	id   string
	plan apitypes.Plan
	res  apitypes.NodeComplete

	// Long work (imports, conversions) reports progress and can be canceled.
	done, total atomic.Int64
	canceled    atomic.Bool
}

// runTask runs a claimed task and completes it. The work does not stop when
// the node shuts down (ctx), except long work, which is canceled then: a
// snapshot command killed halfway leaves a qcow2 file needing repair, a
// conversion killed halfway leaves nothing that matters.
func (w *Worker) runTask(ctx context.Context, nt *apitypes.NodeTask) {
	t := &task{w: w, id: nt.Task.ID, plan: nt.Plan}
	log := w.log().With("task", t.id, "op", t.plan.Op, "volume", t.plan.VolumeID)
	log.Info("task started")
	start := time.Now()

	workCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	err := t.execute(workCtx, ctx, cancel)

	switch {
	case err == nil:
	case t.canceled.Load():
		t.res = apitypes.NodeComplete{Error: errCanceled.Error(), ErrorCode: "canceled"}
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		t.res = apitypes.NodeComplete{Error: "the node shut down during the task: " + err.Error(), ErrorCode: "node_error"}
	default:
		code := core.CodeOf(err)
		if code == "internal" {
			code = "node_error"
		}
		t.res = apitypes.NodeComplete{Error: err.Error(), ErrorCode: code, Result: t.res.Result}
	}
	if err != nil {
		log.Warn("task failed", "err", err, "code", t.res.ErrorCode, "took", time.Since(start))
	} else {
		log.Info("task done", "took", time.Since(start))
	}
	w.complete(ctx, t.id, t.res)
}

// complete tells the server the task ended, retrying for a while: a lost
// completion would leave the task running at the server until it gives up on
// the node. It keeps trying for a short time after shutdown began.
func (w *Worker) complete(ctx context.Context, taskID string, res apitypes.NodeComplete) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	backoff := 500 * time.Millisecond
	var shutdownAt time.Time
	for {
		err := w.Server.Complete(cctx, taskID, res)
		if err == nil {
			return
		}
		if core.KindOf(err) == core.KindNotFound || core.KindOf(err) == core.KindConflict || core.KindOf(err) == core.KindInvalid {
			w.log().Error("the server refused the task's completion", "task", taskID, "err", err)
			return
		}
		w.log().Warn("completing a task failed", "task", taskID, "err", err, "retry_in", backoff)
		select {
		case <-cctx.Done():
			w.log().Error("giving up completing a task", "task", taskID, "err", err)
			return
		case <-time.After(backoff):
		}
		if ctx.Err() != nil {
			// Shutting down: the server may be stopping too. Keep trying
			// a few seconds only; a restart fails the task cleanly.
			if shutdownAt.IsZero() {
				shutdownAt = time.Now()
			} else if time.Since(shutdownAt) > shutdownCompleteWait {
				w.log().Error("giving up completing a task during shutdown", "task", taskID, "err", err)
				return
			}
			backoff = min(backoff, time.Second)
		} else {
			backoff = min(2*backoff, 15*time.Second)
		}
	}
}

// execute carries out the plan. ctx is the work's context; nodeCtx ends when
// the node shuts down, which cancels long work through cancel.
func (t *task) execute(ctx, nodeCtx context.Context, cancel context.CancelFunc) error {
	p := t.plan
	switch p.Op {
	case apitypes.OpRepositoryInit:
		return t.repositoryInit(ctx)
	case apitypes.OpRepositoryVerify:
		return t.long(ctx, nodeCtx, cancel, t.repositoryVerify)
	case apitypes.OpRepositoryPrune:
		return t.long(ctx, nodeCtx, cancel, t.repositoryPrune)
	case apitypes.OpBackupVerify:
		return t.long(ctx, nodeCtx, cancel, t.backupVerify)
	case apitypes.OpBackupFiles:
		return t.long(ctx, nodeCtx, cancel, t.backupFiles)
	case apitypes.OpBackupExport:
		return t.backupExport(ctx)
	case apitypes.OpBackupUnexport:
		return t.backupUnexport(ctx)
	case apitypes.OpBackupRestore:
		if p.VolumeID == "" { // into a file: no volume to lock
			return t.long(ctx, nodeCtx, cancel, t.backupRestore)
		}
	}
	if err := checkID(p.VolumeID); err != nil {
		return err
	}
	unlock := t.w.locks.lock(p.VolumeID, p.TargetVolumeID)
	defer unlock()

	var err error
	switch p.Op {
	case apitypes.OpVolumeCreate:
		err = t.volumeCreate(ctx)
	case apitypes.OpVolumeImport:
		err = t.long(ctx, nodeCtx, cancel, t.volumeImport)
	case apitypes.OpVolumeGrow:
		err = t.volumeGrow(ctx)
	case apitypes.OpVolumeDelete:
		return t.volumeDelete(ctx) // writes or removes the sidecar itself
	case apitypes.OpSnapshotCreate:
		err = t.snapshotCreate(ctx)
	case apitypes.OpSnapshotDelete:
		err = t.snapshotDelete(ctx)
	case apitypes.OpSnapshotApply:
		err = t.snapshotApply(ctx)
	case apitypes.OpSnapshotToVol:
		err = t.long(ctx, nodeCtx, cancel, t.snapshotToVolume)
	case apitypes.OpBackupCreate:
		err = t.long(ctx, nodeCtx, cancel, t.backupCreate)
	case apitypes.OpBackupRestore:
		err = t.long(ctx, nodeCtx, cancel, t.backupRestore)
	case apitypes.OpBackupForget:
		err = t.long(ctx, nodeCtx, cancel, t.backupForget)
	case apitypes.OpExportCreate:
		err = t.exportCreate(ctx)
	case apitypes.OpExportDelete:
		err = t.exportDelete(ctx)
	default:
		return core.Invalid("unknown operation %q", p.Op)
	}
	if err != nil {
		return err
	}
	return t.writeSidecar(p.Sidecar)
}

// writeSidecar writes a sidecar from the plan, with the size the node
// measured when the operation measured one (the server learns it from the
// completion, so the sidecar agrees with what it will commit).
func (t *task) writeSidecar(sc *apitypes.Sidecar) error {
	if sc == nil {
		return nil
	}
	c := *sc
	if c.ID == "" {
		c.ID = t.plan.VolumeID
	}
	if c.ID == t.plan.VolumeID && t.res.Size > 0 && t.plan.Op != apitypes.OpSnapshotToVol {
		c.Size = t.res.Size
	}
	return t.w.writeSidecar(&c)
}

// long runs work that reports progress every progressInterval and stops when
// the server asks to cancel it or the node shuts down.
func (t *task) long(ctx, nodeCtx context.Context, cancel context.CancelFunc, work func(context.Context) error) error {
	stopOnShutdown := context.AfterFunc(nodeCtx, cancel)
	defer stopOnShutdown()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(progressInterval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
			answer, err := t.w.Server.Progress(pctx, t.id, apitypes.NodeProgress{BytesDone: t.done.Load(), BytesTotal: t.total.Load()})
			pcancel()
			if err != nil {
				if ctx.Err() == nil {
					t.w.log().Warn("reporting progress failed", "task", t.id, "err", err)
				}
				continue
			}
			if answer.Cancel {
				t.canceled.Store(true)
				cancel()
				return
			}
		}
	}()
	err := work(ctx)
	close(stop)
	wg.Wait()
	if err == nil && t.canceled.Load() {
		// The cancel came after the work finished: it stands.
		t.canceled.Store(false)
	}
	return err
}

func (t *task) progress(done, total int64) {
	t.done.Store(done)
	t.total.Store(total)
}

// measure records the volume's size and allocation in the completion.
func (t *task) measure(ctx context.Context, volumeID string) error {
	// The header's virtual size and the file's allocated blocks are what
	// qemu-img info reports; reading them directly saves a process per task.
	path := t.w.volumePath(volumeID)
	size, _, err := qemu.ReadSnapshotTable(path)
	if err != nil {
		return err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fmt.Errorf("measuring %s: %w", path, err)
	}
	t.res.Size, t.res.Allocated = size, st.Blocks*512
	t.res.SnapshotUnique = snapshotUnique(path)
	return nil
}

// snapshotUnique counts, from the qcow2 tables, what deleting each snapshot
// of the file would free (nil when the file cannot be read so). While a
// storage daemon holds the volume, the live disk's tables on disk may lag
// its latest writes by a little.
func snapshotUnique(path string) map[string]int64 {
	im, err := qcow2.Open(path)
	if err != nil {
		return nil
	}
	defer im.Close()
	u, err := im.UniqueBytes()
	if err != nil {
		return nil
	}
	return u
}

func (t *task) volumeCreate(ctx context.Context) error {
	p := t.plan
	path := t.w.volumePath(p.VolumeID)
	failpoint(p.Op, "before-disk")
	err := qemu.Create(ctx, path, p.Size)
	if core.CodeOf(err) == "exists" {
		// The volume id is new, so the file can only come from an earlier
		// attempt of this task that crashed before completing.
		info, ierr := qemu.Info(ctx, path, false)
		if ierr != nil || info.Format != "qcow2" || info.VirtualSize != p.Size || len(info.Snapshots) > 0 {
			return err
		}
		err = nil
	}
	if err != nil {
		return err
	}
	failpoint(p.Op, "after-disk")
	return t.measure(ctx, p.VolumeID)
}

func (t *task) volumeImport(ctx context.Context) error {
	p := t.plan
	path := t.w.volumePath(p.VolumeID)
	// A host path only: qemu-img would also take "nbd://...", "json:{...}"
	// and other pseudo-protocols, which are not what the API offers.
	if !filepath.IsAbs(p.Source) {
		return core.Invalid("import source %q is not an absolute path on the node's host", p.Source)
	}
	// An image file or a block device; anything else is refused here, a
	// named pipe above all, which qemu-img would wait on for a writer.
	if fi, err := os.Stat(p.Source); err == nil && fi.Mode().Type() != 0 && fi.Mode().Type() != os.ModeDevice {
		return core.Invalid("import source %s is %s, not a disk image file or a block device", p.Source, core.DescribeMode(fi.Mode()))
	}
	failpoint(p.Op, "before-disk")
	// A file at the new volume's path is a partial import of an earlier
	// attempt of this task.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	err := qemu.Convert(ctx, qemu.ConvertRequest{Source: p.Source, SourceFormat: p.Format, Dest: path, DestFormat: "qcow2"}, t.progress)
	if err != nil {
		return fmt.Errorf("importing %s: %w", p.Source, err)
	}
	failpoint(p.Op, "after-disk")
	return t.measure(ctx, p.VolumeID)
}

func (t *task) volumeGrow(ctx context.Context) error {
	p := t.plan
	failpoint(p.Op, "before-disk")
	var err error
	if sd := t.w.daemonFor(p.VolumeID); sd != nil {
		err = sd.Resize(ctx, p.Size)
	} else {
		err = qemu.Resize(ctx, t.w.volumePath(p.VolumeID), p.Size)
	}
	if err != nil {
		return err
	}
	failpoint(p.Op, "after-disk")
	return t.measure(ctx, p.VolumeID)
}

func (t *task) volumeDelete(ctx context.Context) error {
	p := t.plan
	failpoint(p.Op, "before-disk")
	if err := t.w.stopVolumeExports(ctx, p.VolumeID); err != nil {
		return err
	}
	if p.KeepFile {
		failpoint(p.Op, "after-disk")
		return t.writeSidecar(p.Sidecar)
	}
	if err := removeFile(t.w.volumePath(p.VolumeID)); err != nil {
		return err
	}
	failpoint(p.Op, "after-disk")
	return removeFile(t.w.sidecarPath(p.VolumeID))
}

// hasTag reports whether the volume holds the snapshot tag.
// hasTag reports whether the volume's file holds tag, and its current
// virtual size, from the snapshot table read directly (no qemu-img run).
func (t *task) hasTag(ctx context.Context, tag string) (bool, int64, error) {
	size, snaps, err := qemu.ReadSnapshotTable(t.w.volumePath(t.plan.VolumeID))
	if err != nil {
		return false, 0, err
	}
	for _, s := range snaps {
		if s.Tag == tag {
			return true, size, nil
		}
	}
	return false, size, nil
}

// createSnapshot takes the tag (through the daemon when one holds the
// volume) unless it exists already (a retried task), and records the size.
func (t *task) createSnapshot(ctx context.Context, tag string) error {
	if tag == "" {
		return core.Invalid("no snapshot tag in the plan")
	}
	exists, _, err := t.hasTag(ctx, tag)
	if err != nil {
		return err
	}
	if !exists {
		if sd := t.w.daemonFor(t.plan.VolumeID); sd != nil {
			err = sd.SnapshotCreate(ctx, tag)
		} else {
			err = qemu.SnapshotCreate(ctx, t.w.volumePath(t.plan.VolumeID), tag)
		}
		if err != nil {
			return err
		}
	}
	_, size, err := t.hasTag(ctx, tag)
	if err != nil {
		return err
	}
	if t.res.SnapshotSizes == nil {
		t.res.SnapshotSizes = map[string]int64{}
	}
	t.res.SnapshotSizes[tag] = size
	return nil
}

func (t *task) snapshotCreate(ctx context.Context) error {
	failpoint(t.plan.Op, "before-disk")
	if err := t.createSnapshot(ctx, t.plan.Tag); err != nil {
		return err
	}
	failpoint(t.plan.Op, "after-disk")
	return t.measure(ctx, t.plan.VolumeID) // the snapshots' unique bytes changed
}

func (t *task) snapshotDelete(ctx context.Context) error {
	p := t.plan
	for _, s := range t.w.snapshotExportsOf(p.VolumeID) {
		for _, tag := range p.DeleteTags {
			if s.Tag == tag {
				return core.Conflict("exported", "snapshot %s of volume %s is exported (%s): unexport it first", tag, p.VolumeID, s.ID)
			}
		}
	}
	failpoint(p.Op, "before-disk")
	for _, tag := range p.DeleteTags {
		exists, _, err := t.hasTag(ctx, tag)
		if err != nil {
			return err
		}
		if !exists {
			continue // deleted by an earlier attempt of this task
		}
		if sd := t.w.daemonFor(p.VolumeID); sd != nil {
			err = sd.SnapshotDelete(ctx, tag)
		} else {
			err = qemu.SnapshotDelete(ctx, t.w.volumePath(p.VolumeID), tag)
		}
		if err != nil && !core.IsNotFound(err) {
			return err
		}
	}
	failpoint(p.Op, "after-disk")
	return t.measure(ctx, p.VolumeID)
}

// stopLiveExportForRestart stops the volume's live export, if it runs, and
// returns what to restart afterwards: the stopped export, or the one the
// plan says the volume has (stopped already by an earlier attempt).
func (t *task) stopLiveExportForRestart(ctx context.Context) (*apitypes.NodeExport, error) {
	p := t.plan
	restart, err := t.w.stopLiveExport(ctx, p.VolumeID)
	if err != nil || restart != nil {
		return restart, err
	}
	for _, e := range p.Exports {
		if e.Tag == "" && (e.VolumeID == "" || e.VolumeID == p.VolumeID) {
			e.VolumeID = p.VolumeID
			return &e, nil
		}
	}
	return nil, nil
}

func (t *task) snapshotApply(ctx context.Context) error {
	p := t.plan
	if p.Tag == "" {
		return core.Invalid("no snapshot tag in the plan")
	}
	exists, _, err := t.hasTag(ctx, p.Tag)
	if err != nil {
		return err
	}
	if !exists {
		return core.NotFound("volume %s has no snapshot %s", p.VolumeID, p.Tag)
	}
	failpoint(p.Op, "before-disk")
	if p.SaveTag != "" {
		if err := t.createSnapshot(ctx, p.SaveTag); err != nil {
			return fmt.Errorf("saving the current state: %w", err)
		}
	}
	// qemu-img needs the volume to itself: stop the live export, and bring it
	// back on the same port and name afterwards, whatever the apply did.
	restart, err := t.stopLiveExportForRestart(ctx)
	if err != nil {
		return err
	}
	applyErr := qemu.SnapshotApply(ctx, t.w.volumePath(p.VolumeID), p.Tag)
	if applyErr == nil {
		failpoint(p.Op, "after-disk")
	}
	var restartErr error
	if restart != nil {
		if _, err := t.w.startLiveExport(ctx, *restart); err != nil {
			restartErr = fmt.Errorf("restarting the live export %s: %w", restart.ID, err)
		}
	}
	if err := errors.Join(applyErr, restartErr); err != nil {
		return err
	}
	return t.measure(ctx, p.VolumeID)
}

func (t *task) snapshotToVolume(ctx context.Context) error {
	p := t.plan
	if err := checkID(p.TargetVolumeID); err != nil {
		return err
	}
	if p.Tag == "" {
		return core.Invalid("no snapshot tag in the plan")
	}
	target := t.w.volumePath(p.TargetVolumeID)
	failpoint(p.Op, "before-disk")
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err // a partial copy of an earlier attempt
	}
	err := qemu.Convert(ctx, qemu.ConvertRequest{
		Source:         t.w.volumePath(p.VolumeID),
		SourceFormat:   "qcow2",
		SourceSnapshot: p.Tag,
		SourceShared:   t.w.daemonFor(p.VolumeID) != nil,
		Dest:           target,
		DestFormat:     "qcow2",
	}, t.progress)
	if err != nil {
		return err
	}
	failpoint(p.Op, "after-disk")
	if err := t.measure(ctx, p.TargetVolumeID); err != nil {
		return err
	}
	if p.TargetSidecar != nil {
		c := *p.TargetSidecar
		if c.ID == "" {
			c.ID = p.TargetVolumeID
		}
		c.Size = t.res.Size
		return t.w.writeSidecar(&c)
	}
	return nil
}

func (t *task) exportCreate(ctx context.Context) error {
	p := t.plan
	if p.Export == nil {
		return core.Invalid("no export in the plan")
	}
	spec := *p.Export
	if spec.VolumeID == "" {
		spec.VolumeID = p.VolumeID
	}
	if spec.VolumeID != p.VolumeID {
		return core.Invalid("export %s is of volume %s, the task of volume %s", spec.ID, spec.VolumeID, p.VolumeID)
	}
	if err := checkID(spec.ID); err != nil {
		return err
	}
	spec.Address = t.w.ExportAddress
	failpoint(p.Op, "before-disk")
	var port int
	var err error
	if spec.Tag == "" {
		port, err = t.w.startLiveExport(ctx, spec)
	} else {
		port, err = t.w.startSnapshotExport(ctx, spec)
	}
	if err != nil {
		return err
	}
	failpoint(p.Op, "after-disk")
	t.res.Port = port
	return nil
}

func (t *task) exportDelete(ctx context.Context) error {
	p := t.plan
	if p.Export == nil {
		return core.Invalid("no export in the plan")
	}
	failpoint(p.Op, "before-disk")
	if err := t.w.stopExport(ctx, p.Export.ID); err != nil {
		return err
	}
	failpoint(p.Op, "after-disk")
	return nil
}
