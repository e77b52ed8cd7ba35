package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
)

func (a *app) tokenCommand() *cobra.Command {
	cmd := groupCommand("token", "Manage API tokens of the acting project", "tokens")
	var role, forProject string
	create := &cobra.Command{
		Use:   "create NAME --role admin|operator|viewer [--for-project P]",
		Short: "Create a token; its secret is shown once",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			switch role {
			case apitypes.RoleAdmin, apitypes.RoleOperator, apitypes.RoleViewer:
			default:
				return core.Invalid("invalid --role %q: use admin, operator or viewer", role)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.CreateToken(ctx, apitypes.TokenCreate{Name: args[0], Project: forProject, Role: role})
			if err != nil {
				return err
			}
			return a.print(t, func() {
				fmt.Fprintf(a.stdout, "created token %s (%s), role %s in project %s\n", t.Name, t.ID, t.Role, t.Project)
				fmt.Fprintf(a.stdout, "secret (shown only now): %s\n", t.Secret)
			})
		}),
	}
	create.Flags().StringVar(&role, "role", "", "admin, operator or viewer")
	create.Flags().StringVar(&forProject, "for-project", "", "project of the token (default: the acting project)")
	_ = create.MarkFlagRequired("role")

	cmd.AddCommand(
		&cobra.Command{
			Use:     "list",
			Aliases: []string{"ls"},
			Short:   "List the acting project's tokens",
			Args:    cobra.NoArgs,
			RunE: a.run(func(ctx context.Context, _ []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				ts, err := c.AllTokens(ctx)
				if err != nil {
					return err
				}
				return a.print(ts, func() {
					rows := make([][]string, 0, len(ts))
					for _, t := range ts {
						rows = append(rows, []string{t.Name, t.ID, t.Project, t.Role, showTime(t.CreatedAt), showTimePtr(t.LastUsed)})
					}
					table(a.stdout, []string{"NAME", "ID", "PROJECT", "ROLE", "CREATED", "LAST USED"}, rows)
				})
			}),
		},
		create,
		&cobra.Command{
			Use:     "delete ID",
			Aliases: []string{"rm"},
			Short:   "Delete a token",
			Args:    cobra.ExactArgs(1),
			RunE: a.run(func(ctx context.Context, args []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				if err := c.DeleteToken(ctx, args[0]); err != nil {
					return err
				}
				if !a.json() {
					fmt.Fprintf(a.stdout, "deleted token %s\n", args[0])
				}
				return nil
			}),
		},
	)
	return cmd
}
