package cli

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
)

// The server's repositories (`cairn repository ...`). `cairn repo` is the
// serverless tool that opens a repository directly.

func (a *app) repositoryCommand() *cobra.Command {
	cmd := groupCommand("repository", "Backup repositories the server uses (directories or S3 buckets)", "repositories")
	cmd.AddCommand(
		a.repositoryCreateCommand(),
		a.repositoryListCommand(),
		a.repositoryShowCommand(),
		a.repositoryVerifyCommand(),
		a.repositoryPruneCommand(),
	)
	return cmd
}

func (a *app) repositoryCreateCommand() *cobra.Command {
	var req apitypes.RepositoryCreate
	var passwordFile string
	cmd := &cobra.Command{
		Use:   "create NAME --url DIR|s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX] [--default] [--node N]",
		Short: "Create a repository (or adopt an existing one with --password-file)",
		Long: `Create a repository for the project's backups: a directory on a node's host
(absolute path) or an S3 bucket. The server makes a random password and keeps it
encrypted; an admin can read it with ` + "`cairn repository show R --reveal-password`" + `,
so that ` + "`cairn repo`" + ` alone can always restore from the repository.
S3 credentials come from --s3-access-key/--s3-secret-key or AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY; they are stored encrypted too. The project's first
repository becomes its default.`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			req.Name = args[0]
			if strings.HasPrefix(req.URL, "s3:") && req.S3AccessKey == "" && req.S3SecretKey == "" {
				req.S3AccessKey, req.S3SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
			}
			if passwordFile != "" {
				b, err := os.ReadFile(passwordFile)
				if err != nil {
					return core.Invalid("reading --password-file: %v", err)
				}
				if req.Password = strings.TrimRight(string(b), "\r\n"); req.Password == "" {
					return core.Invalid("the password file %s is empty", passwordFile)
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.CreateRepository(ctx, req)
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, a.printRepositoryOf(ctx, c, "created"))
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.URL, "url", "", "absolute directory on the node's host, or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]")
	f.BoolVar(&req.Default, "default", false, "make it the project's default repository")
	f.StringVar(&req.Node, "node", "", "the node that reaches the repository (a directory is on its host)")
	f.StringVar(&passwordFile, "password-file", "", "adopt the existing repository at --url, whose password is in this file")
	f.StringVar(&req.S3AccessKey, "s3-access-key", "", "S3 access key (default AWS_ACCESS_KEY_ID)")
	f.StringVar(&req.S3SecretKey, "s3-secret-key", "", "S3 secret key (default AWS_SECRET_ACCESS_KEY)")
	f.StringVar(&req.S3Region, "s3-region", "", "S3 region")
	_ = cmd.MarkFlagRequired("url")
	return cmd
}

func (a *app) printRepositoryOf(ctx context.Context, c *client.Client, verb string) func(apitypes.Task) error {
	return func(t apitypes.Task) error {
		r, err := c.GetRepository(ctx, t.ResourceID, false)
		if err != nil {
			return fmt.Errorf("task %s succeeded but reading repository %s failed: %w", t.ID, t.ResourceID, err)
		}
		return a.print(r, func() {
			fmt.Fprintf(a.stdout, "%s repository %s (%s): %s, node %s%s\n", verb, r.Name, r.ID, r.URL, orDash(r.Node), repositoryNotes(r))
		})
	}
}

func repositoryNotes(r apitypes.Repository) string {
	var notes []string
	if r.Default {
		notes = append(notes, "default")
	}
	if r.SameDisk {
		notes = append(notes, "on the volumes' disk: protects against mistakes, not against losing the disk")
	}
	if len(notes) == 0 {
		return ""
	}
	return " (" + strings.Join(notes, "; ") + ")"
}

func repositoryState(r apitypes.Repository) string {
	if r.StateDetail != "" {
		return r.State + " (" + r.StateDetail + ")"
	}
	return r.State
}

func (a *app) repositoryListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the project's repositories",
		Args:    cobra.NoArgs,
		RunE: a.run(func(ctx context.Context, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			rs, err := c.AllRepositories(ctx)
			if err != nil {
				return err
			}
			return a.print(rs, func() {
				rows := make([][]string, 0, len(rs))
				for _, r := range rs {
					def, same := "", ""
					if r.Default {
						def = "yes"
					}
					if r.SameDisk {
						same = "yes"
					}
					rows = append(rows, []string{r.Name, r.ID, r.URL, orDash(r.Node), repositoryState(r), orDash(def), orDash(same)})
				}
				table(a.stdout, []string{"NAME", "ID", "URL", "NODE", "STATE", "DEFAULT", "SAME DISK"}, rows)
			})
		}),
	}
}

func (a *app) repositoryShowCommand() *cobra.Command {
	var reveal bool
	cmd := &cobra.Command{
		Use:   "show REPOSITORY [--reveal-password]",
		Short: "Show a repository (an admin may ask for its password)",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			r, err := c.GetRepository(ctx, args[0], reveal)
			if err != nil {
				return err
			}
			return a.print(r, func() {
				kv := [][2]string{{"name", r.Name}, {"id", r.ID}, {"project", r.Project}, {"url", r.URL}, {"node", orDash(r.Node)},
					{"state", repositoryState(r)}, {"default", fmt.Sprint(r.Default)}, {"same disk", fmt.Sprint(r.SameDisk)},
					{"created", r.CreatedAt.Format("2006-01-02 15:04:05Z07:00")}}
				if r.S3Region != "" {
					kv = append(kv, [2]string{"s3 region", r.S3Region})
				}
				if r.HasS3Keys {
					kv = append(kv, [2]string{"s3 keys", "stored (encrypted)"})
				}
				if r.Password != "" {
					kv = append(kv, [2]string{"password", r.Password})
				}
				for _, p := range kv {
					fmt.Fprintf(a.stdout, "%-10s %s\n", p[0]+":", p[1])
				}
				if r.Password != "" {
					fmt.Fprintf(a.stdout, "\nopen it without the server: CAIRN_REPO=%s cairn repo backups (the password when asked)\n", r.URL)
				}
			})
		}),
	}
	cmd.Flags().BoolVar(&reveal, "reveal-password", false, "also print the repository's password (admin only)")
	return cmd
}

func (a *app) repositoryVerifyCommand() *cobra.Command {
	var readData string
	cmd := &cobra.Command{
		Use:   "verify REPOSITORY [--read-data[=N%]]",
		Short: "Check a repository's structure, and with --read-data its data; exit 7 when something is damaged",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			pct, err := parseReadData(readData)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.VerifyRepository(ctx, args[0], apitypes.RepositoryVerify{ReadDataPercent: pct})
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				return a.print(t, func() {
					fmt.Fprintf(a.stdout, "repository %s: no problems (%s backups, %s packs, %s packs re-read)\n",
						args[0], t.Result["backups"], t.Result["packs"], t.Result["packs_read"])
				})
			})
		}),
	}
	cmd.Flags().StringVar(&readData, "read-data", "", "also re-read data: all packs, or a share such as 10%")
	cmd.Flags().Lookup("read-data").NoOptDefVal = "100%"
	return cmd
}

func (a *app) repositoryPruneCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "prune REPOSITORY",
		Short: "Remove the data no backup needs any more (one prune at a time per repository)",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.PruneRepository(ctx, args[0])
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				return a.print(t, func() {
					fmt.Fprintf(a.stdout, "repository %s pruned: %s packs deleted, %s repacked, %s bytes freed\n",
						args[0], t.Result["packs_deleted"], t.Result["packs_repacked"], t.Result["bytes_freed"])
				})
			})
		}),
	}
}
