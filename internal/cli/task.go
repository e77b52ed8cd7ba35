package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
)

func (a *app) taskCommand() *cobra.Command {
	cmd := groupCommand("task", "Follow and cancel the asynchronous work of the server", "tasks")
	cmd.AddCommand(
		a.taskListCommand(),
		a.taskShowCommand(),
		a.taskWaitCommand(),
		a.taskCancelCommand(),
	)
	return cmd
}

func (a *app) taskListCommand() *cobra.Command {
	var f client.TaskFilter
	cmd := &cobra.Command{
		Use:     "list [--state S] [--volume V]",
		Aliases: []string{"ls"},
		Short:   "List tasks, newest first",
		Args:    cobra.NoArgs,
		RunE: a.run(func(ctx context.Context, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			tasks, err := c.AllTasks(ctx, f)
			if err != nil {
				return err
			}
			return a.print(tasks, func() {
				rows := make([][]string, 0, len(tasks))
				for _, t := range tasks {
					rows = append(rows, []string{t.ID, t.Kind, t.State, taskProgress(t), orDash(taskVolume(t)), showTime(t.CreatedAt)})
				}
				table(a.stdout, []string{"ID", "KIND", "STATE", "PROGRESS", "VOLUME", "CREATED"}, rows)
			})
		}),
	}
	cmd.Flags().StringVar(&f.State, "state", "", "only tasks in this state: queued, running, succeeded, failed, canceled")
	cmd.Flags().StringVar(&f.Volume, "volume", "", "only tasks of this volume (name or id)")
	return cmd
}

// taskVolume is the volume a task concerns.
func taskVolume(t apitypes.Task) string {
	if t.VolumeID == "" && t.ResourceType == "volume" {
		return t.ResourceID
	}
	return t.VolumeID
}

func (a *app) printTask(t apitypes.Task) error {
	return a.print(t, func() {
		kv := []string{
			"id", t.ID,
			"kind", t.Kind,
			"state", t.State,
			"project", t.Project,
			"node", orDash(t.Node),
			"resource", t.ResourceType + " " + t.ResourceID,
			"volume", orDash(taskVolume(t)),
			"progress", taskProgress(t),
			"created", showTime(t.CreatedAt),
			"started", showTimePtr(t.StartedAt),
			"finished", showTimePtr(t.FinishedAt),
		}
		if t.Error != "" {
			kv = append(kv, "error", t.Error)
			if t.ErrorCode != "" {
				kv = append(kv, "error code", t.ErrorCode)
			}
		}
		for _, k := range sortedKeys(t.Result) {
			kv = append(kv, k, t.Result[k])
		}
		fields(a.stdout, kv...)
		if len(t.Log) > 0 {
			fmt.Fprintln(a.stdout, "log:")
			for _, l := range t.Log {
				fmt.Fprintf(a.stdout, "  %s\n", l)
			}
		}
	})
}

func (a *app) taskShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a task with its log",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.GetTask(ctx, args[0])
			if err != nil {
				return err
			}
			return a.printTask(t)
		}),
	}
}

func (a *app) taskWaitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for a task to end (exit 5 when it failed)",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.GetTask(ctx, args[0])
			if err != nil {
				return err
			}
			final, err := a.wait(ctx, c, t)
			if final.ID == "" {
				return err
			}
			// The task is what `task wait` shows, failed or not; a failure
			// still ends in exit 5.
			if a.json() {
				if perr := writeJSON(a.stdout, final); perr != nil {
					return perr
				}
			} else if err == nil {
				fmt.Fprintf(a.stdout, "task %s %s (%s)\n", final.ID, final.State, final.Kind)
			}
			return err
		}),
	}
}

func (a *app) taskCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Ask the server to cancel a task",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.CancelTask(ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(t, func() {
				fmt.Fprintf(a.stdout, "task %s %s (%s)\n", t.ID, t.State, t.Kind)
			})
		}),
	}
}
