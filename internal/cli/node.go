package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
)

// nodeCommand is the client's `node` group. cmd/cairn passes its own `node`
// command (the worker) to NewRoot, which then takes these subcommands.
func (a *app) nodeCommand() *cobra.Command {
	cmd := groupCommand("node", "List, show, add and delete nodes (hosts running `cairn node`)", "nodes")
	cmd.AddCommand(
		&cobra.Command{
			Use:     "list",
			Aliases: []string{"ls"},
			Short:   "List nodes",
			Args:    cobra.NoArgs,
			RunE: a.run(func(ctx context.Context, _ []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				ns, err := c.AllNodes(ctx)
				if err != nil {
					return err
				}
				return a.print(ns, func() {
					rows := make([][]string, 0, len(ns))
					for _, n := range ns {
						rows = append(rows, []string{n.Name, n.ID, orDash(n.Address), n.State,
							core.FormatSize(n.Capacity), core.FormatSize(n.Available), showTimePtr(n.HeartbeatAt)})
					}
					table(a.stdout, []string{"NAME", "ID", "ADDRESS", "STATE", "CAPACITY", "AVAILABLE", "HEARTBEAT"}, rows)
				})
			}),
		},
		&cobra.Command{
			Use:   "show N",
			Short: "Show a node",
			Args:  cobra.ExactArgs(1),
			RunE: a.run(func(ctx context.Context, args []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				n, err := c.GetNode(ctx, args[0])
				if err != nil {
					return err
				}
				return a.print(n, func() {
					fields(a.stdout,
						"name", n.Name,
						"id", n.ID,
						"address", orDash(n.Address),
						"state", n.State,
						"capacity", core.FormatSize(n.Capacity),
						"available", core.FormatSize(n.Available),
						"heartbeat", showTimePtr(n.HeartbeatAt),
						"created", showTime(n.CreatedAt),
					)
				})
			}),
		},
		&cobra.Command{
			Use:   "add NAME",
			Short: "Add a node; prints its token once",
			Args:  cobra.ExactArgs(1),
			RunE: a.run(func(ctx context.Context, args []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				n, err := c.CreateNode(ctx, apitypes.NodeCreate{Name: args[0]})
				if err != nil {
					return err
				}
				return a.print(n, func() {
					fmt.Fprintf(a.stdout, "added node %s (%s)\n", n.Name, n.ID)
					fmt.Fprintf(a.stdout, "node token (shown only now): %s\n", n.Token)
				})
			}),
		},
		&cobra.Command{
			Use:     "delete N",
			Aliases: []string{"rm"},
			Short:   "Delete a node",
			Args:    cobra.ExactArgs(1),
			RunE: a.run(func(ctx context.Context, args []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				if err := c.DeleteNode(ctx, args[0]); err != nil {
					return err
				}
				if !a.json() {
					fmt.Fprintf(a.stdout, "deleted node %s\n", args[0])
				}
				return nil
			}),
		},
	)
	return cmd
}
