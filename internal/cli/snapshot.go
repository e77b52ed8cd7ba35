package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
)

func (a *app) snapshotCommand() *cobra.Command {
	cmd := groupCommand("snapshot", "Create, list, apply, revert and delete snapshots", "snapshots", "snap")
	cmd.AddCommand(
		a.snapshotCreateCommand(),
		a.snapshotListCommand(),
		a.snapshotShowCommand(),
		a.snapshotApplyCommand(),
		a.snapshotRevertCommand(),
		a.snapshotDeleteCommand(),
		a.snapshotToVolumeCommand(),
	)
	return cmd
}

// printSnapshotOf prints the snapshot a finished task acted on; vol is the
// volume as the user named it.
func (a *app) printSnapshotOf(ctx context.Context, c *client.Client, verb, vol string) func(apitypes.Task) error {
	return func(t apitypes.Task) error {
		s, err := c.GetSnapshot(ctx, t.VolumeID, t.ResourceID)
		if err != nil {
			return fmt.Errorf("task %s succeeded but reading snapshot %s failed: %w", t.ID, t.ResourceID, err)
		}
		return a.print(s, func() {
			fmt.Fprintf(a.stdout, "%s snapshot %s@%s (%s)\n", verb, vol, s.Name, s.ID)
		})
	}
}

func (a *app) snapshotCreateCommand() *cobra.Command {
	var name, description string
	cmd := &cobra.Command{
		Use:   "create VOL [--name N] [--description D]",
		Short: "Snapshot a volume (the snapshot becomes the head's parent)",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.CreateSnapshot(ctx, args[0], apitypes.SnapshotCreate{Name: name, Description: description})
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, a.printSnapshotOf(ctx, c, "created", args[0]))
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "snapshot name (generated when not given)")
	cmd.Flags().StringVar(&description, "description", "", "free text")
	return cmd
}

func (a *app) snapshotListCommand() *cobra.Command {
	var tree bool
	cmd := &cobra.Command{
		Use:     "list VOL [--tree]",
		Aliases: []string{"ls"},
		Short:   "List a volume's snapshots, oldest first, or draw their tree",
		Args:    cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			v, err := c.GetVolume(ctx, args[0])
			if err != nil {
				return err
			}
			snaps, err := c.AllSnapshots(ctx, v.ID)
			if err != nil {
				return err
			}
			return a.print(snaps, func() {
				if tree {
					fmt.Fprint(a.stdout, DrawTree(snaps, v.HeadParentID))
					return
				}
				names := make(map[string]string, len(snaps))
				for _, s := range snaps {
					names[s.ID] = s.Name
				}
				rows := make([][]string, 0, len(snaps))
				for _, s := range snaps {
					parent := "-"
					if s.ParentID != nil {
						parent = shortID(*s.ParentID)
						if n, ok := names[*s.ParentID]; ok {
							parent = n
						}
					}
					head := ""
					if v.HeadParentID != nil && *v.HeadParentID == s.ID {
						head = "*"
					}
					rows = append(rows, []string{s.Name, s.ID, parent, core.FormatSize(s.Size), core.FormatSize(s.UniqueBytes), s.State, showTime(s.CreatedAt), head})
				}
				table(a.stdout, []string{"NAME", "ID", "PARENT", "SIZE", "UNIQUE", "STATE", "CREATED", "HEAD"}, rows)
			})
		}),
	}
	cmd.Flags().BoolVar(&tree, "tree", false, "draw the snapshot tree with the live head")
	return cmd
}

func (a *app) snapshotShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show VOL@SNAP",
		Short: "Show a snapshot",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			addr, err := parseSnapshotAddress(args[0])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			s, err := c.GetSnapshot(ctx, addr.volume, addr.snapshot)
			if err != nil {
				return err
			}
			return a.print(s, func() {
				parent := "-"
				if s.ParentID != nil {
					parent = *s.ParentID
				}
				fields(a.stdout,
					"name", s.Name,
					"id", s.ID,
					"volume", s.VolumeID,
					"parent", parent,
					"state", s.State,
					"kind", orDash(s.Kind),
					"size", core.FormatSize(s.Size),
					"unique", core.FormatSize(s.UniqueBytes)+" (freed by deleting it)",
					"created", showTime(s.CreatedAt),
					"description", orDash(s.Description),
				)
			})
		}),
	}
}

func (a *app) snapshotApplyCommand() *cobra.Command {
	var saveCurrent bool
	var name string
	cmd := &cobra.Command{
		Use:   "apply VOL@SNAP [--save-current] [--name NEWVOLNAME]",
		Short: "Make the volume's disk the snapshot's (what changed since is lost unless --save-current)",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			addr, err := parseSnapshotAddress(args[0])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.ApplySnapshot(ctx, addr.volume, addr.snapshot, apitypes.SnapshotApply{SaveCurrent: saveCurrent, Name: name})
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				v, err := c.GetVolume(ctx, t.ResourceID)
				if err != nil {
					return fmt.Errorf("task %s succeeded but reading volume %s failed: %w", t.ID, t.ResourceID, err)
				}
				return a.print(v, func() {
					fmt.Fprintf(a.stdout, "applied snapshot %s to volume %s (%s)\n", addr.snapshot, v.Name, v.ID)
					if id := t.Result["saved_snapshot_id"]; id != "" {
						saved := id
						if s, err := c.GetSnapshot(ctx, v.ID, id); err == nil {
							saved = s.Name + " (" + s.ID + ")"
						}
						fmt.Fprintf(a.stdout, "the former state is saved as snapshot %s\n", saved)
					}
				})
			})
		}),
	}
	cmd.Flags().BoolVar(&saveCurrent, "save-current", false, "snapshot the current state first")
	cmd.Flags().StringVar(&name, "name", "", "new name for a deleted volume whose name was taken")
	return cmd
}

func (a *app) snapshotRevertCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "revert VOL",
		Short: "Throw away what changed since the last snapshot or apply (apply the head's parent)",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.RevertVolume(ctx, args[0])
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				v, err := c.GetVolume(ctx, t.ResourceID)
				if err != nil {
					return fmt.Errorf("task %s succeeded but reading volume %s failed: %w", t.ID, t.ResourceID, err)
				}
				return a.print(v, func() {
					to := "its last snapshot"
					if v.HeadParentID != nil {
						to = "snapshot " + *v.HeadParentID
						if s, err := c.GetSnapshot(ctx, v.ID, *v.HeadParentID); err == nil {
							to = "snapshot " + s.Name
						}
					}
					fmt.Fprintf(a.stdout, "reverted volume %s to %s\n", v.Name, to)
				})
			})
		}),
	}
}

func (a *app) snapshotDeleteCommand() *cobra.Command {
	var subtree bool
	cmd := &cobra.Command{
		Use:     "delete VOL@SNAP [--subtree]",
		Aliases: []string{"rm"},
		Short:   "Delete a snapshot (its children move to its parent), or with --subtree it and its descendants",
		Args:    cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			addr, err := parseSnapshotAddress(args[0])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.DeleteSnapshot(ctx, addr.volume, addr.snapshot, subtree)
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				return a.print(t, func() {
					if subtree {
						fmt.Fprintf(a.stdout, "deleted snapshot %s and its descendants\n", addr)
					} else {
						fmt.Fprintf(a.stdout, "deleted snapshot %s\n", addr)
					}
				})
			})
		}),
	}
	cmd.Flags().BoolVar(&subtree, "subtree", false, "delete the descendants too")
	return cmd
}

func (a *app) snapshotToVolumeCommand() *cobra.Command {
	var name, node string
	cmd := &cobra.Command{
		Use:   "to-volume VOL@SNAP --name NEW [--node N]",
		Short: "Make a new volume from a snapshot",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			addr, err := parseSnapshotAddress(args[0])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.SnapshotToVolume(ctx, addr.volume, addr.snapshot, apitypes.SnapshotToVolume{Name: name, Node: node})
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, a.printVolumeOf(ctx, c, "created"))
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the new volume")
	cmd.Flags().StringVar(&node, "node", "", "node to place the new volume on")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}
