package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
)

func (a *app) backupExportCommand() *cobra.Command {
	var req apitypes.BackupExportCreate
	var tlsDir string
	cmd := &cobra.Command{
		Use:   "export BACKUP [--node N] [--tls-dir DIR]",
		Short: "Serve a volume backup read-only over NBD, straight from the repository; prints the NBD URI",
		Long: `Serve a volume backup over NBD (read-only) from a node, reading from the repository
only what clients ask for: nothing is restored first. Attach it with qemu-img, qemu-io,
nbdinfo, nbdcopy or a VM (-drive file=nbd://...,readonly=on); all-zero chunks show as
holes. The export stays until ` + "`cairn backup unexport`" + ` and comes back on the same URI when
the node restarts. Meanwhile retention keeps the backup and a prune of its repository
waits.

An export that requires TLS (URI nbds://..., beyond loopback or on a server run with
--export-tls) admits only clients with a certificate of this project: --tls-dir DIR
writes one as DIR/ca-cert.pem, DIR/client-cert.pem and DIR/client-key.pem.`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			if tlsDir != "" && a.noWait {
				return core.Invalid("--tls-dir waits for the export: leave out --no-wait")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.CreateBackupExport(ctx, args[0], req)
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				e, err := c.GetBackupExport(ctx, args[0], t.ResourceID)
				if err != nil {
					return fmt.Errorf("task %s succeeded but reading export %s failed: %w", t.ID, t.ResourceID, err)
				}
				switch {
				case e.TLS && tlsDir != "":
					_, err := writeCredentials(tlsDir, func() (apitypes.ExportCredentials, error) {
						return c.BackupExportCredentials(ctx, e.BackupID, e.ID)
					})
					if err != nil {
						return fmt.Errorf("export %s is ready at %s, but its client credentials were not written: %w", e.ID, e.URI, err)
					}
				case e.TLS:
					fmt.Fprintf(a.stderr, "the export requires TLS: export with --tls-dir DIR to get client credentials\n")
				case tlsDir != "":
					fmt.Fprintf(a.stderr, "the export is served without TLS (on loopback): no credentials needed, none written to %s\n", tlsDir)
				}
				return a.print(e, func() { fmt.Fprintln(a.stdout, e.URI) })
			})
		}),
	}
	cmd.Flags().StringVar(&req.Node, "node", "", "the node to serve it (default: one that reaches the repository)")
	cmd.Flags().StringVar(&tlsDir, "tls-dir", "", "for a TLS export, write the client credentials QEMU needs into this directory")
	return cmd
}

func (a *app) backupUnexportCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "unexport BACKUP",
		Short: "Stop serving a backup over NBD",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			b, err := c.GetBackup(ctx, args[0])
			if err != nil {
				return err
			}
			es, err := c.BackupExports(ctx, b.ID)
			if err != nil {
				return err
			}
			if len(es) == 0 {
				return core.NotFound("backup %s is not exported", b.ID)
			}
			uris := make([]string, len(es))
			for i, e := range es {
				uris[i] = e.URI
			}
			return a.unexport(ctx, c, "backup "+b.ID, uris, func(i int) (apitypes.Task, error) {
				return c.DeleteBackupExport(ctx, b.ID, es[i].ID)
			})
		}),
	}
}
