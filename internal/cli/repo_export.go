package cli

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/nbd"
	"github.com/cairn-backup/cairn/internal/repo"
	"github.com/cairn-backup/cairn/internal/repo/format"
	"github.com/cairn-backup/cairn/internal/repo/nbdexport"
)

func (ra *repoApp) exportCommand() *cobra.Command {
	var (
		f      filterFlags
		listen string
		name   string
	)
	cmd := &cobra.Command{
		Use:   "export BACKUP [--listen ADDR] [--name NAME]",
		Short: "Serve an image backup read-only over NBD, straight from the repository, until interrupted",
		Long: `Serve an image backup over NBD (read-only), reading only what clients ask for:
nothing is restored first. Any NBD client can attach it: qemu-img, qemu-io,
nbdinfo, nbdcopy, or a VM (-drive file=nbd://...). All-zero chunks show as holes.
The repository stays locked (shared) while it runs; Ctrl-C stops it.`,
		Args: cobra.ExactArgs(1),
	}
	f.add(cmd)
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:10809", "address to listen on (beyond loopback anyone who can reach it can read the backup)")
	cmd.Flags().StringVar(&name, "name", "", "export name (default: the backup's id)")
	ra.addNoLock(cmd)
	cmd.RunE = ra.run(func(ctx context.Context, args []string) error {
		return ra.withImage(ctx, "export", args[0], f.filter(), func(m *format.Manifest, ir *repo.ImageReader) error {
			if name == "" {
				name = m.ID
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return core.Invalid("listening on %s: %v", listen, err)
			}
			exp := nbdexport.New(ir, fmt.Sprintf("cairn backup %s of %s", m.ID, m.Paths))
			srv := &nbd.Server{ReadOnly: true, Lookup: func(n string) (nbd.Export, bool) {
				if n == name || n == "" {
					return exp, true
				}
				return nil, false
			}, List: func() []string { return []string{name} }}
			uri := fmt.Sprintf("nbd://%s/%s", l.Addr(), name)
			res := map[string]any{"backup": backupOf(m), "uri": uri}
			if err := ra.print(res, func() {
				fmt.Fprintf(ra.stdout, "serving backup %s read-only at %s (Ctrl-C stops)\n", m.ID, uri)
			}); err != nil {
				l.Close()
				return err
			}
			if err := srv.Serve(ctx, l); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		})
	})
	return cmd
}

// withImage runs body with a reader of the image backup spec names, the
// repository locked (shared) meanwhile.
func (ra *repoApp) withImage(ctx context.Context, command, spec string, filter repo.Filter, body func(*format.Manifest, *repo.ImageReader) error) error {
	return ra.locked(ctx, lockReading, command, func(r *repo.Repository) error {
		m, err := resolveBackup(ctx, r, spec, filter)
		if err != nil {
			return err
		}
		ir, err := r.NewImageReader(ctx, m)
		if err != nil {
			return err
		}
		defer ir.Close()
		return body(m, ir)
	})
}
