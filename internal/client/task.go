package client

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
)

// TaskFilter narrows a task list. Empty fields do not filter.
type TaskFilter struct {
	State  string // queued, running, succeeded, failed, canceled
	Volume string // name or id
}

// ListTasks returns one page of tasks, newest first.
func (c *Client) ListTasks(ctx context.Context, f TaskFilter, opts ListOptions) (apitypes.List[apitypes.Task], error) {
	return list[apitypes.Task](ctx, c, "/v1/tasks", opts, url.Values{"state": {f.State}, "volume": {f.Volume}})
}

// AllTasks returns every task that passes f, newest first.
func (c *Client) AllTasks(ctx context.Context, f TaskFilter) ([]apitypes.Task, error) {
	return all(ctx, func(ctx context.Context, o ListOptions) (apitypes.List[apitypes.Task], error) {
		return c.ListTasks(ctx, f, o)
	})
}

// GetTask returns a task at once.
func (c *Client) GetTask(ctx context.Context, id string) (apitypes.Task, error) {
	return c.GetTaskWait(ctx, id, 0)
}

// GetTaskWait returns the task once it is final or wait has passed, whichever
// comes first; the server does the waiting. wait <= 0 answers at once.
func (c *Client) GetTaskWait(ctx context.Context, id string, wait time.Duration) (apitypes.Task, error) {
	var q url.Values
	if wait > 0 {
		q = url.Values{"wait": {wait.String()}}
	}
	var out apitypes.Task
	err := c.get(ctx, p("/v1/tasks/", id), q, &out)
	return out, err
}

// CancelTask asks the server to cancel a task and returns it as it then is.
func (c *Client) CancelTask(ctx context.Context, id string) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/tasks/", id, "/cancel"), struct{}{}, &out)
	return out, err
}

// waitStep is how long one GET of WaitTask lets the server hold the answer:
// short, so progress shows; the server's wait is what avoids busy polling.
const waitStep = 2 * time.Second

// WaitTask follows task id until it is final and returns it. onProgress, when
// not nil, sees the task after every answer (the final one included).
//
// A task that ends failed or canceled is returned together with a *core.Error
// of KindTaskFailed (KindCorrupt when it failed on damaged data) whose message is "task <id> failed: <error>" (or "task <id>
// was canceled") and whose Code is the task's error code. An error of the API
// or of ctx ends the wait; the task goes on regardless.
func (c *Client) WaitTask(ctx context.Context, id string, onProgress func(apitypes.Task)) (apitypes.Task, error) {
	for {
		t, err := c.GetTaskWait(ctx, id, waitStep)
		if err != nil {
			return apitypes.Task{}, fmt.Errorf("wait for task %s: %w", id, err)
		}
		if onProgress != nil {
			onProgress(t)
		}
		if apitypes.TaskDone(t.State) {
			return t, TaskError(t)
		}
		if err := ctx.Err(); err != nil {
			return t, fmt.Errorf("wait for task %s: %w", id, err)
		}
	}
}

// TaskError returns nil for a task that did not fail, and otherwise a
// *core.Error of KindTaskFailed describing its failure.
func TaskError(t apitypes.Task) error {
	switch t.State {
	case apitypes.TaskFailed:
		msg := t.Error
		if msg == "" {
			msg = "no error message"
		}
		code, kind := t.ErrorCode, core.KindTaskFailed
		if code == "" {
			code = "task_failed"
		}
		if code == "corrupt" { // damage found (exit code 7, not 5)
			kind = core.KindCorrupt
		}
		return &core.Error{Kind: kind, Code: code, Message: fmt.Sprintf("task %s failed: %s", t.ID, msg)}
	case apitypes.TaskCanceled:
		return &core.Error{Kind: core.KindTaskFailed, Code: "canceled", Message: fmt.Sprintf("task %s was canceled", t.ID)}
	}
	return nil
}
