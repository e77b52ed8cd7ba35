package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

func (a *app) projectCommand() *cobra.Command {
	cmd := groupCommand("project", "Manage projects (tenants; admin)", "projects")
	cmd.AddCommand(
		&cobra.Command{
			Use:     "list",
			Aliases: []string{"ls"},
			Short:   "List projects",
			Args:    cobra.NoArgs,
			RunE: a.run(func(ctx context.Context, _ []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				ps, err := c.AllProjects(ctx)
				if err != nil {
					return err
				}
				return a.print(ps, func() {
					rows := make([][]string, 0, len(ps))
					for _, p := range ps {
						rows = append(rows, []string{p.Name, p.ID, showTime(p.CreatedAt)})
					}
					table(a.stdout, []string{"NAME", "ID", "CREATED"}, rows)
				})
			}),
		},
		&cobra.Command{
			Use:   "create NAME",
			Short: "Create a project",
			Args:  cobra.ExactArgs(1),
			RunE: a.run(func(ctx context.Context, args []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				p, err := c.CreateProject(ctx, apitypes.ProjectCreate{Name: args[0]})
				if err != nil {
					return err
				}
				return a.print(p, func() { fmt.Fprintf(a.stdout, "created project %s (%s)\n", p.Name, p.ID) })
			}),
		},
		&cobra.Command{
			Use:   "show P",
			Short: "Show a project",
			Args:  cobra.ExactArgs(1),
			RunE: a.run(func(ctx context.Context, args []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				p, err := c.GetProject(ctx, args[0])
				if err != nil {
					return err
				}
				return a.print(p, func() {
					fields(a.stdout, "name", p.Name, "id", p.ID, "created", showTime(p.CreatedAt))
				})
			}),
		},
		&cobra.Command{
			Use:     "delete P",
			Aliases: []string{"rm"},
			Short:   "Delete a project",
			Args:    cobra.ExactArgs(1),
			RunE: a.run(func(ctx context.Context, args []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				if err := c.DeleteProject(ctx, args[0]); err != nil {
					return err
				}
				// The API answers 204 without a body: nothing to print as JSON.
				if !a.json() {
					fmt.Fprintf(a.stdout, "deleted project %s\n", args[0])
				}
				return nil
			}),
		},
	)
	return cmd
}
