package service

import (
	"context"
	"fmt"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
)

func (s *Service) newTask(c Caller, kind string, v meta.Volume, resType, resID string, params map[string]string) *meta.Task {
	return &meta.Task{ID: core.NewID(), Kind: kind, State: apitypes.TaskQueued, ProjectID: v.ProjectID, NodeID: v.NodeID,
		VolumeID: v.ID, ResourceType: resType, ResourceID: resID, Params: params, CreatedAt: s.now()}
}

// submit runs build in a transaction and stores the task it returns.
func (s *Service) submit(ctx context.Context, c Caller, build func(tx *meta.Tx) (*meta.Task, error)) (apitypes.Task, error) {
	var out apitypes.Task
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		t, err := build(tx)
		if err != nil {
			return err
		}
		if err := tx.InsertTask(ctx, t); err != nil {
			return err
		}
		out, err = s.taskJSON(ctx, tx, *t)
		return err
	})
	if err != nil {
		return apitypes.Task{}, err
	}
	s.changed.notify()
	return out, nil
}

func (s *Service) taskJSON(ctx context.Context, tx *meta.Tx, t meta.Task) (apitypes.Task, error) {
	out := apitypes.Task{ID: t.ID, Kind: t.Kind, State: t.State, VolumeID: t.VolumeID, ResourceType: t.ResourceType,
		ResourceID: t.ResourceID, BytesDone: t.BytesDone, BytesTotal: t.BytesTotal, Error: t.Error, ErrorCode: t.ErrorCode,
		Log: t.Log, Cancelable: t.Cancelable && !apitypes.TaskDone(t.State), CreatedAt: t.CreatedAt, StartedAt: t.StartedAt, FinishedAt: t.FinishedAt}
	if out.Log == nil {
		out.Log = []string{}
	}
	if len(t.Result) > 0 {
		out.Result = t.Result
	}
	if p, err := tx.ProjectByID(ctx, t.ProjectID); err == nil {
		out.Project = p.Name
	}
	if n, err := tx.NodeByID(ctx, t.NodeID); err == nil {
		out.Node = n.Name
	}
	return out, nil
}

func taskVisible(c Caller, t meta.Task) bool {
	if c.NodeID != "" {
		return t.NodeID == c.NodeID
	}
	return t.ProjectID == c.ProjectID
}

// GetTask returns a task; with wait > 0 it blocks until the task is final or
// the wait passes.
func (s *Service) GetTask(ctx context.Context, c Caller, id string, wait time.Duration) (apitypes.Task, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.Task{}, err
	}
	deadline := time.Now().Add(wait)
	for {
		ch := s.changed.wait()
		var out apitypes.Task
		err := s.db.View(ctx, func(tx *meta.Tx) error {
			t, err := tx.TaskByID(ctx, id)
			if meta.IsNoRows(err) || (err == nil && !taskVisible(c, t)) {
				return core.NotFound("task %q not found", id)
			}
			if err != nil {
				return err
			}
			out, err = s.taskJSON(ctx, tx, t)
			return err
		})
		if err != nil || apitypes.TaskDone(out.State) {
			return out, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return out, nil
		}
		if err := waitChange(ctx, ch, left); err != nil {
			return out, nil
		}
	}
}

// waitChange waits for ch, at most d and at most one second (another server
// sharing the store changes things without notifying this one).
func waitChange(ctx context.Context, ch <-chan struct{}, d time.Duration) error {
	if d > time.Second {
		d = time.Second
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ch:
	case <-tm.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// ListTasks lists the project's tasks, newest first.
func (s *Service) ListTasks(ctx context.Context, c Caller, pg Page, state, volume string) (apitypes.List[apitypes.Task], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.Task]{}, err
	}
	var out apitypes.List[apitypes.Task]
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		before, err := cursorInt(pg.Cursor)
		if err != nil {
			return err
		}
		f := meta.TaskFilter{ProjectID: c.ProjectID, BeforeSeq: before, Limit: pg.Limit + 1}
		if state != "" {
			switch state {
			case apitypes.TaskQueued, apitypes.TaskRunning, apitypes.TaskSucceeded, apitypes.TaskFailed, apitypes.TaskCanceled:
			default:
				return core.Invalid("invalid state %q: use queued, running, succeeded, failed or canceled", state)
			}
			f.States = []string{state}
		}
		if volume != "" {
			v, err := volumeByRef(ctx, tx, c, volume)
			if err != nil {
				return err
			}
			f.VolumeID = v.ID
		}
		ts, err := tx.Tasks(ctx, f)
		if err != nil {
			return err
		}
		out = pageOf(ts, pg.Limit, func(t meta.Task) apitypes.Task { j, _ := s.taskJSON(ctx, tx, t); return j },
			func(t meta.Task) string { return fmt.Sprint(t.Seq) })
		return nil
	})
	return out, err
}

// CancelTask cancels a queued task at once, or asks the node to stop a
// running cancelable one.
func (s *Service) CancelTask(ctx context.Context, c Caller, id string) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	var out apitypes.Task
	var finished *meta.Task
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		t, err := tx.TaskByID(ctx, id)
		if meta.IsNoRows(err) || (err == nil && !taskVisible(c, t)) {
			return core.NotFound("task %q not found", id)
		}
		if err != nil {
			return err
		}
		switch t.State {
		case apitypes.TaskQueued:
			if err := s.undo(ctx, tx, t, nil); err != nil {
				return err
			}
			s.finish(&t, apitypes.TaskCanceled, "canceled by request", "canceled")
			finished = &t
		case apitypes.TaskRunning:
			if !t.Cancelable {
				return core.Conflict("not_cancelable", "task %q (%s) is running and cannot be interrupted", t.ID, t.Kind)
			}
			t.CancelRequested = true
		default:
			return core.Conflict("finished", "task %q already %s", t.ID, t.State)
		}
		if err := tx.UpdateTask(ctx, t); err != nil {
			return err
		}
		out, err = s.taskJSON(ctx, tx, t)
		return err
	})
	if err == nil {
		s.changed.notify()
		if finished != nil {
			s.taskFinished(*finished)
		}
	}
	return out, err
}

func (s *Service) finish(t *meta.Task, state, msg, code string) {
	now := s.now()
	t.State = state
	t.FinishedAt = &now
	if state != apitypes.TaskSucceeded {
		t.Error, t.ErrorCode = msg, code
		if code == "" {
			t.ErrorCode = "task_failed"
		}
	}
}

func (s *Service) taskFinished(t meta.Task) {
	if s.OnTaskFinished == nil {
		return
	}
	var d time.Duration
	if t.StartedAt != nil && t.FinishedAt != nil {
		d = t.FinishedAt.Sub(*t.StartedAt)
	}
	s.OnTaskFinished(t.Kind, t.State, d)
}

// FailInterrupted marks the running tasks of one node as failed and undoes
// what they had reserved: the server calls it at start for its in-process
// node, which died with it; a remote node's tasks are failed when that node
// restarts (Inventory) or stops answering (FailLostNodes), since it may still
// be finishing them while the server restarts.
func (s *Service) FailInterrupted(ctx context.Context, nodeID, why string) (int, error) {
	n := 0
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		var err error
		n, err = s.failRunning(ctx, tx, nodeID, why)
		return err
	})
	if n > 0 {
		s.changed.notify()
	}
	return n, err
}

// failRunning fails a node's running tasks inside tx.
func (s *Service) failRunning(ctx context.Context, tx *meta.Tx, nodeID, why string) (int, error) {
	ts, err := tx.Tasks(ctx, meta.TaskFilter{NodeID: nodeID, States: []string{apitypes.TaskRunning}})
	if err != nil {
		return 0, err
	}
	for _, t := range ts {
		if err := s.undo(ctx, tx, t, nil); err != nil {
			return 0, err
		}
		s.finish(&t, apitypes.TaskFailed, why, "interrupted")
		if err := tx.UpdateTask(ctx, t); err != nil {
			return 0, err
		}
	}
	return len(ts), nil
}

// FailLostNodes fails the running tasks of nodes whose heartbeat stopped.
func (s *Service) FailLostNodes(ctx context.Context) (int, error) {
	n := 0
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		nodes, err := tx.Nodes(ctx, "", 100000)
		if err != nil {
			return err
		}
		for _, nd := range nodes {
			if nd.HeartbeatAt != nil && s.now().Sub(*nd.HeartbeatAt) < s.cfg.NodeTimeout {
				continue
			}
			ts, err := tx.Tasks(ctx, meta.TaskFilter{NodeID: nd.ID, States: []string{apitypes.TaskRunning}})
			if err != nil {
				return err
			}
			for _, t := range ts {
				if err := s.undo(ctx, tx, t, nil); err != nil {
					return err
				}
				s.finish(&t, apitypes.TaskFailed, fmt.Sprintf("node %q stopped answering while the task ran; retry when it is back", nd.Name), "node_lost")
				if err := tx.UpdateTask(ctx, t); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	if n > 0 {
		s.changed.notify()
	}
	return n, err
}
