package service

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
	"github.com/cairn-backup/cairn/internal/schedule"
)

// The scheduler. Exactly one runs per metadata store: each tick takes (or
// renews) the lease row "scheduler", and only its holder works. A tick
//  1. records the end of runs whose task finished, and applies the
//     schedule's retention after each successful one;
//  2. starts the retries that are due;
//  3. runs the schedules whose next run has come: the latest slot, once,
//     if it is within the grace window (older ones are recorded as missed,
//     never run in a burst).
// Each schedule is handled in one transaction that re-reads it and moves
// its last slot along with the tasks it queues, so even two schedulers
// racing past the lease run every slot exactly once.

const (
	schedulerLease = "scheduler"
	leaseTTL       = 15 * time.Second
	// maxRunAttempts is how often a failing run is tried in all.
	maxRunAttempts = 3
	dueBatch       = 500
)

// retryBackoff is the wait before the second and third attempt.
var retryBackoff = []time.Duration{time.Minute, 5 * time.Minute}

// Run states.
const (
	RunQueued    = "queued"
	RunSucceeded = "succeeded"
	RunFailed    = "failed"
	RunRetrying  = "retrying"
	RunMissed    = "missed"
	RunSkipped   = "skipped"
)

// scheduleChanged wakes the scheduler loop (a schedule may now be due
// sooner than it planned).
func (s *Service) scheduleChanged() {
	select {
	case s.schedWake <- struct{}{}:
	default:
	}
}

// RunScheduler runs the scheduler until ctx ends, as holder (unique per
// server process), ticking every interval (default 1 s) or when a
// schedule changes.
func (s *Service) RunScheduler(ctx context.Context, holder string, interval time.Duration) {
	if interval <= 0 {
		interval = time.Second
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.db.Update(rctx, func(tx *meta.Tx) error { return tx.ReleaseLease(rctx, schedulerLease, holder) })
	}()
	for {
		if _, err := s.SchedulerTick(ctx, holder); err != nil && ctx.Err() == nil {
			s.log().Warn("scheduler", "err", err)
		}
		// Wake at the next run if it comes before the next round, so that
		// a slot is not up to a round late.
		wait := interval
		var next time.Time
		_ = s.db.View(ctx, func(tx *meta.Tx) error {
			var err error
			next, err = tx.NextScheduleRun(ctx)
			return err
		})
		if d := next.Sub(s.now()); !next.IsZero() && d < wait {
			wait = max(d, time.Millisecond)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.schedWake:
			t.Stop()
		}
	}
}

// SchedulerTick does one round of the scheduler's work at the service's
// current time, if holder has (or takes) the lease. It reports whether it
// did.
func (s *Service) SchedulerTick(ctx context.Context, holder string) (bool, error) {
	now := s.now()
	leader := false
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		var err error
		leader, err = tx.TakeLease(ctx, schedulerLease, holder, now, now.Add(leaseTTL))
		return err
	})
	if err != nil || !leader {
		return false, err
	}
	errs := []error{s.finishRuns(ctx, now), s.retryRuns(ctx, now), s.runDue(ctx, now)}
	return true, errors.Join(errs...)
}

// scheduleCaller is who a schedule's tasks are submitted as.
func scheduleCaller(x meta.Schedule) Caller {
	return Caller{Role: apitypes.RoleAdmin, ProjectID: x.ProjectID, TokenID: "schedule:" + x.ID}
}

// runDue runs the schedules whose next run has come.
func (s *Service) runDue(ctx context.Context, now time.Time) error {
	var due []meta.Schedule
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		var err error
		due, err = tx.DueSchedules(ctx, now, dueBatch)
		return err
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range due {
		err := s.db.Update(ctx, func(tx *meta.Tx) error {
			x, err := tx.ScheduleByID(ctx, d.ProjectID, d.ID)
			if meta.IsNoRows(err) {
				return nil
			}
			if err != nil {
				return err
			}
			if !x.Enabled || x.NextRun.IsZero() || x.NextRun.After(now) {
				return nil // another scheduler handled it, or it changed
			}
			return s.handleSlot(ctx, tx, &x, now)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("schedule %s: %w", d.Name, err))
		}
	}
	if len(due) > 0 {
		s.changed.notify()
	}
	return errors.Join(errs...)
}

// handleSlot decides what x does at now: the latest slot runs if it is
// within the grace window; older ones are recorded as missed.
func (s *Service) handleSlot(ctx context.Context, tx *meta.Tx, x *meta.Schedule, now time.Time) error {
	cs, err := compileSchedule(*x)
	if err != nil {
		x.Enabled = false // cannot happen for a schedule the API made; do not spin on it
		x.UpdatedAt = now
		_ = s.insertRun(ctx, tx, meta.ScheduleRun{ScheduleID: x.ID, ProjectID: x.ProjectID, State: RunFailed,
			Message: "the schedule cannot be computed and was disabled: " + err.Error()}, now)
		return tx.UpdateSchedule(ctx, *x)
	}
	dec, err := cs.rule.Due(cs.loc, schedule.State{Created: x.CreatedAt, LastSlot: x.LastSlot}, now, s.cfg.ScheduleGrace)
	if err != nil {
		return err
	}
	if dec.Missed > 0 {
		msg := fmt.Sprintf("%d slot(s) not run: the server was not running then, and they are older than the grace window (%s) or followed by a later slot",
			dec.Missed, s.cfg.ScheduleGrace)
		// Recorded a microsecond before the run of the latest slot, so the
		// history lists it first.
		if err := s.insertRun(ctx, tx, meta.ScheduleRun{ScheduleID: x.ID, ProjectID: x.ProjectID, Slot: dec.Slot, State: RunMissed, Message: msg}, now.Add(-time.Microsecond)); err != nil {
			return err
		}
	}
	if dec.Run {
		if err := s.dispatch(ctx, tx, *x, dec.Slot, now); err != nil {
			return err
		}
	}
	if !dec.Slot.IsZero() {
		x.LastSlot = dec.Slot
	}
	if err := planNext(x, now); err != nil {
		return err
	}
	return tx.UpdateSchedule(ctx, *x)
}

func (s *Service) insertRun(ctx context.Context, tx *meta.Tx, r meta.ScheduleRun, now time.Time) error {
	r.ID, r.CreatedAt = core.NewID(), now
	if r.Attempt == 0 {
		r.Attempt = 1
	}
	if r.State != RunQueued && r.State != RunRetrying {
		r.FinishedAt = now
	}
	if len(r.Message) > scheduleRunMaxMessage {
		r.Message = r.Message[:scheduleRunMaxMessage]
	}
	return tx.InsertScheduleRun(ctx, r)
}

// dispatch queues the tasks of one run of x: one per target volume, or one
// repository verify. A volume that is gone is recorded as skipped; a task
// that cannot be queued now is retried later.
func (s *Service) dispatch(ctx context.Context, tx *meta.Tx, x meta.Schedule, slot, now time.Time) error {
	base := meta.ScheduleRun{ScheduleID: x.ID, ProjectID: x.ProjectID, Slot: slot}
	if x.Action == apitypes.ScheduleVerify && len(x.VolumeIDs) == 0 && len(x.Selector) == 0 {
		r := base
		t, err := s.repositoryVerifyTask(ctx, tx, x)
		return s.queued(ctx, tx, r, t, err, now)
	}
	vols, gone, err := s.targets(ctx, tx, x)
	if err != nil {
		return err
	}
	for _, id := range gone {
		r := base
		r.VolumeID, r.State, r.Message = id, RunSkipped, "the volume was deleted (or is not usable): skipped"
		if err := s.insertRun(ctx, tx, r, now); err != nil {
			return err
		}
	}
	if len(vols) == 0 && len(gone) == 0 {
		r := base
		r.State, r.Message = RunSkipped, "no volume matches the selector "+selectorString(x.Selector)
		return s.insertRun(ctx, tx, r, now)
	}
	for _, v := range vols {
		r := base
		r.VolumeID = v.ID
		t, err := s.volumeRunTask(ctx, tx, x, v, slot)
		if err := s.queued(ctx, tx, r, t, err, now); err != nil {
			return err
		}
	}
	return nil
}

// queued records a run whose task was made (or could not be: then a
// retry is planned, or the run failed for good).
func (s *Service) queued(ctx context.Context, tx *meta.Tx, r meta.ScheduleRun, t *meta.Task, taskErr error, now time.Time) error {
	if taskErr != nil {
		if core.KindOf(taskErr) == core.KindInternal {
			return taskErr
		}
		s.failRun(&r, "could not start: "+taskErr.Error(), now)
		return s.insertRun(ctx, tx, r, now)
	}
	if t == nil {
		r.State, r.Message = RunSkipped, "nothing to do"
		return s.insertRun(ctx, tx, r, now)
	}
	if err := tx.InsertTask(ctx, t); err != nil {
		return err
	}
	r.TaskID, r.State = t.ID, RunQueued
	return s.insertRun(ctx, tx, r, now)
}

// failRun sets a failed attempt's state: a retry after a backoff while
// attempts remain, else failed.
func (s *Service) failRun(r *meta.ScheduleRun, msg string, now time.Time) {
	if r.Attempt == 0 {
		r.Attempt = 1
	}
	r.Message = msg
	if r.Attempt < maxRunAttempts {
		r.State, r.RetryAt = RunRetrying, now.Add(retryBackoff[min(r.Attempt-1, len(retryBackoff)-1)])
		r.Message += fmt.Sprintf(" (attempt %d of %d; retry at %s)", r.Attempt, maxRunAttempts, r.RetryAt.Format(time.RFC3339))
		return
	}
	r.State, r.FinishedAt = RunFailed, now
	r.Message += fmt.Sprintf(" (attempt %d of %d: given up)", r.Attempt, maxRunAttempts)
}

// volumeRunTask makes the task of one run of x on volume v (nil: nothing
// to do). A snapshot schedule at the volume's snapshot limit first deletes
// the oldest snapshot it made.
func (s *Service) volumeRunTask(ctx context.Context, tx *meta.Tx, x meta.Schedule, v meta.Volume, slot time.Time) (*meta.Task, error) {
	c := scheduleCaller(x)
	switch x.Action {
	case apitypes.ScheduleSnapshot:
		if err := liveVolume(v); err != nil {
			return nil, err
		}
		n, err := tx.CountSnapshots(ctx, v.ID, SnapshotUser)
		if err != nil {
			return nil, err
		}
		if n >= s.cfg.MaxSnapshotsPerVolume {
			own, err := tx.ScheduledSnapshots(ctx, v.ID, x.ID)
			if err != nil {
				return nil, err
			}
			if len(own) == 0 {
				return nil, core.Conflict("limit_reached", "volume %q has %d snapshots, the most allowed, and none of them is this schedule's to remove", v.Name, n)
			}
			dt, err := s.snapshotDeleteTask(ctx, tx, c, v, own[0], false)
			if err != nil {
				return nil, fmt.Errorf("making room at the snapshot limit: %w", err)
			}
			if err := tx.InsertTask(ctx, dt); err != nil {
				return nil, err
			}
		}
		// Named after the schedule and the slot, in the schedule's zone.
		prefix := x.Name
		if len(prefix) > 40 {
			prefix = prefix[:40]
		}
		when := slot
		if cs, err := compileSchedule(x); err == nil {
			when = slot.In(cs.loc)
		}
		name, err := freeName(ctx, tx, v.ID, prefix+"-"+when.Format("20060102-1504"))
		if err != nil {
			return nil, err
		}
		sn, err := s.insertSnapshotRow(ctx, tx, v, name, "made by schedule "+x.Name, "", x.ID)
		if err != nil {
			return nil, err
		}
		return s.newTask(c, apitypes.OpSnapshotCreate, v, "snapshot", sn.ID, map[string]string{"snapshot_id": sn.ID}), nil
	case apitypes.ScheduleBackup:
		r, err := tx.RepositoryByID(ctx, x.ProjectID, x.RepositoryID)
		if meta.IsNoRows(err) {
			return nil, core.NotFound("the schedule's repository no longer exists")
		}
		if err != nil {
			return nil, err
		}
		if r.State != apitypes.RepositoryReady {
			return nil, core.Conflict("not_ready", "repository %q is %s", r.Name, r.State)
		}
		return s.backupCreateTask(ctx, tx, c, v, r, x.ID)
	case apitypes.ScheduleVerify:
		bs, err := tx.Backups(ctx, meta.BackupFilter{ProjectID: x.ProjectID, VolumeID: v.ID, RepositoryID: x.RepositoryID, Limit: 1 << 30})
		if err != nil {
			return nil, err
		}
		var ids []string
		for _, b := range bs {
			if b.State == apitypes.BackupReady || b.State == apitypes.BackupCorrupt {
				ids = append(ids, b.ID)
			}
		}
		if len(ids) == 0 {
			return nil, nil
		}
		r, err := tx.RepositoryByID(ctx, x.ProjectID, x.RepositoryID)
		if err != nil {
			return nil, err
		}
		return &meta.Task{ID: core.NewID(), Kind: apitypes.OpBackupVerify, State: apitypes.TaskQueued, ProjectID: x.ProjectID,
			NodeID: r.NodeID, ResourceType: "repository", ResourceID: r.ID, CreatedAt: s.now(), Cancelable: true,
			Params: map[string]string{"repository_id": r.ID, "backups": strings.Join(ids, " ")}}, nil
	}
	return nil, core.Invalid("unknown action %q", x.Action)
}

// repositoryVerifyTask is a verify schedule's run on its whole repository.
func (s *Service) repositoryVerifyTask(ctx context.Context, tx *meta.Tx, x meta.Schedule) (*meta.Task, error) {
	r, err := tx.RepositoryByID(ctx, x.ProjectID, x.RepositoryID)
	if meta.IsNoRows(err) {
		return nil, core.NotFound("the schedule's repository no longer exists")
	}
	if err != nil {
		return nil, err
	}
	t := s.repositoryTask(x.ProjectID, apitypes.OpRepositoryVerify, r, map[string]string{"read_data_percent": fmt.Sprint(x.ReadData)})
	t.Cancelable = true
	return t, nil
}

// finishRuns records the end of runs whose task finished; after a
// successful one the schedule's retention removes what it no longer keeps
// of that volume.
func (s *Service) finishRuns(ctx context.Context, now time.Time) error {
	var pending []meta.ScheduleRun
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		var err error
		pending, err = tx.PendingScheduleRuns(ctx)
		return err
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range pending {
		err := s.db.Update(ctx, func(tx *meta.Tx) error {
			r, err := tx.ScheduleRunByTask(ctx, p.TaskID)
			if err != nil || r.State != RunQueued {
				return err
			}
			t, err := tx.TaskByID(ctx, r.TaskID)
			if meta.IsNoRows(err) {
				s.failRun(&r, "its task is gone", now)
				return tx.UpdateScheduleRun(ctx, r)
			}
			if err != nil {
				return err
			}
			switch t.State {
			case apitypes.TaskSucceeded:
				r.State, r.FinishedAt = RunSucceeded, now
				r.Message = s.applyRetention(ctx, tx, r)
			case apitypes.TaskFailed, apitypes.TaskCanceled:
				s.failRun(&r, fmt.Sprintf("task %s %s: %s", t.ID, t.State, t.Error), now)
			default:
				return nil
			}
			return tx.UpdateScheduleRun(ctx, r)
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// applyRetention queues the removal of what schedule r.ScheduleID no
// longer keeps of r's volume, and says what it did (or could not do).
func (s *Service) applyRetention(ctx context.Context, tx *meta.Tx, r meta.ScheduleRun) string {
	x, err := tx.ScheduleByID(ctx, r.ProjectID, r.ScheduleID)
	if err != nil || r.VolumeID == "" || x.Action == apitypes.ScheduleVerify {
		return ""
	}
	v, err := tx.VolumeByID(ctx, r.VolumeID)
	if err != nil {
		return ""
	}
	c := scheduleCaller(x)
	remove, _, err := s.retentionOf(ctx, tx, x, v)
	if err != nil {
		return "retention: " + err.Error()
	}
	if len(remove) == 0 {
		return ""
	}
	switch x.Action {
	case apitypes.ScheduleSnapshot:
		var done, failed []string
		for _, it := range remove {
			sn, err := tx.SnapshotByID(ctx, v.ID, it.ID)
			if err == nil {
				var t *meta.Task
				if t, err = s.snapshotDeleteTask(ctx, tx, c, v, sn, false); err == nil {
					err = tx.InsertTask(ctx, t)
				}
			}
			if err != nil {
				failed = append(failed, it.Name+" ("+err.Error()+")")
				continue
			}
			done = append(done, it.Name)
		}
		msg := "retention: deleting " + strings.Join(done, ", ")
		if len(failed) > 0 {
			msg += "; could not delete " + strings.Join(failed, ", ")
		}
		return msg
	case apitypes.ScheduleBackup:
		ret, _ := scheduleRetention(x)
		pol, err := policyOf(ret)
		if err != nil {
			return "retention: " + err.Error()
		}
		repo, err := tx.RepositoryByID(ctx, x.ProjectID, x.RepositoryID)
		if err != nil {
			return "retention: " + err.Error()
		}
		t, err := s.forgetTask(ctx, tx, v, repo, pol, false, func(b meta.Backup) bool { return b.ScheduleID == x.ID })
		if err == nil {
			err = tx.InsertTask(ctx, t)
		}
		if err != nil {
			return "retention: " + err.Error()
		}
		return fmt.Sprintf("retention: forgetting %d backup(s) (task %s)", len(remove), t.ID)
	}
	return ""
}

// retryRuns starts the retries that are due.
func (s *Service) retryRuns(ctx context.Context, now time.Time) error {
	var due []meta.ScheduleRun
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		var err error
		due, err = tx.RetriesDue(ctx, now)
		return err
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range due {
		err := s.db.Update(ctx, func(tx *meta.Tx) error {
			run, err := tx.ScheduleRunByID(ctx, d.ID)
			if meta.IsNoRows(err) {
				return nil
			}
			if err != nil {
				return err
			}
			if run.State != RunRetrying || run.RetryAt.After(now) {
				return nil // another scheduler took it
			}
			r := &run
			x, err := tx.ScheduleByID(ctx, r.ProjectID, r.ScheduleID)
			if meta.IsNoRows(err) {
				r.State, r.FinishedAt, r.Message = RunFailed, now, "the schedule was deleted before the retry"
				return tx.UpdateScheduleRun(ctx, *r)
			}
			if err != nil {
				return err
			}
			var t *meta.Task
			var terr error
			if r.VolumeID == "" {
				t, terr = s.repositoryVerifyTask(ctx, tx, x)
			} else if v, err := tx.VolumeByID(ctx, r.VolumeID); err != nil || liveVolume(v) != nil {
				r.State, r.FinishedAt, r.Message = RunSkipped, now, "the volume was deleted before the retry: skipped"
				return tx.UpdateScheduleRun(ctx, *r)
			} else {
				t, terr = s.volumeRunTask(ctx, tx, x, v, r.Slot)
			}
			r.Attempt++
			r.RetryAt = time.Time{}
			if terr != nil {
				if core.KindOf(terr) == core.KindInternal {
					return terr
				}
				s.failRun(r, "could not start: "+terr.Error(), now)
				return tx.UpdateScheduleRun(ctx, *r)
			}
			if t == nil {
				r.State, r.FinishedAt, r.Message = RunSkipped, now, "nothing to do"
				return tx.UpdateScheduleRun(ctx, *r)
			}
			if err := tx.InsertTask(ctx, t); err != nil {
				return err
			}
			r.TaskID, r.State, r.Message = t.ID, RunQueued, ""
			return tx.UpdateScheduleRun(ctx, *r)
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(due) > 0 {
		s.changed.notify()
	}
	return errors.Join(errs...)
}

// RunScheduleNow runs a schedule once now, outside its slots (its next
// slot is unchanged), and returns the runs it started.
func (s *Service) RunScheduleNow(ctx context.Context, c Caller, ref string) (apitypes.List[apitypes.ScheduleRun], error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.List[apitypes.ScheduleRun]{}, err
	}
	out := apitypes.List[apitypes.ScheduleRun]{Items: []apitypes.ScheduleRun{}}
	now := s.now()
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		x, err := scheduleByRef(ctx, tx, c, ref)
		if err != nil {
			return err
		}
		if err := s.dispatch(ctx, tx, x, now, now); err != nil {
			return err
		}
		rs, err := tx.ScheduleRunsAt(ctx, x.ID, now)
		for _, r := range rs {
			out.Items = append(out.Items, scheduleRunJSON(r))
		}
		return err
	})
	if err == nil {
		s.changed.notify()
	}
	return out, err
}
