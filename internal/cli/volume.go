package cli

import (
	"context"
	"fmt"
	"github.com/cairn-backup/cairn/internal/atomicfile"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
)

func (a *app) volumeCommand() *cobra.Command {
	cmd := groupCommand("volume", "Create, list, grow, delete and export volumes", "volumes", "vol")
	cmd.AddCommand(
		a.volumeCreateCommand(),
		a.volumeImportCommand(),
		a.volumeListCommand(),
		a.volumeShowCommand(),
		a.volumeGrowCommand(),
		a.volumeDeleteCommand(),
		a.volumeExportCommand(),
		a.volumeExportCredentialsCommand(),
		a.volumeUnexportCommand(),
		a.volumeLabelCommand(),
	)
	return cmd
}

func checkKind(kind string) error {
	switch kind {
	case "", apitypes.KindRoot, apitypes.KindData:
		return nil
	}
	return core.Invalid("invalid --kind %q: use root or data", kind)
}

func (a *app) volumeCreateCommand() *cobra.Command {
	var size, kind, node string
	cmd := &cobra.Command{
		Use:   "create NAME --size SIZE [--kind root|data] [--node N]",
		Short: "Create an empty volume",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			n, err := parseSizeFlag(size)
			if err != nil {
				return err
			}
			if err := checkKind(kind); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.CreateVolume(ctx, apitypes.VolumeCreate{Name: args[0], Size: n, Kind: kind, Node: node})
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, a.printVolumeOf(ctx, c, "created"))
		}),
	}
	cmd.Flags().StringVar(&size, "size", "", "virtual size, e.g. 10G (binary units)")
	cmd.Flags().StringVar(&kind, "kind", "", "root or data (default data)")
	cmd.Flags().StringVar(&node, "node", "", "node to place the volume on")
	_ = cmd.MarkFlagRequired("size")
	return cmd
}

func (a *app) volumeImportCommand() *cobra.Command {
	var format, kind, node string
	cmd := &cobra.Command{
		Use:   "import NAME FILE [--format F] [--kind root|data] [--node N]",
		Short: "Make a volume from a disk image file on the node's host",
		Args:  cobra.ExactArgs(2),
		RunE: a.run(func(ctx context.Context, args []string) error {
			if err := checkKind(kind); err != nil {
				return err
			}
			path, err := filepath.Abs(args[1])
			if err != nil {
				return core.Invalid("invalid file %q: %v", args[1], err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.ImportVolume(ctx, apitypes.VolumeImport{Name: args[0], Path: path, Format: format, Kind: kind, Node: node})
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, a.printVolumeOf(ctx, c, "imported"))
		}),
	}
	cmd.Flags().StringVar(&format, "format", "", "image format: qcow2, raw, vmdk, vhdx (probed when not given)")
	cmd.Flags().StringVar(&kind, "kind", "", "root or data (default data)")
	cmd.Flags().StringVar(&node, "node", "", "node to place the volume on")
	return cmd
}

// printVolumeOf prints the volume a finished task acted on.
func (a *app) printVolumeOf(ctx context.Context, c *client.Client, verb string) func(apitypes.Task) error {
	return func(t apitypes.Task) error {
		v, err := c.GetVolume(ctx, t.ResourceID)
		if err != nil {
			return fmt.Errorf("task %s succeeded but reading volume %s failed: %w", t.ID, t.ResourceID, err)
		}
		return a.print(v, func() {
			fmt.Fprintf(a.stdout, "%s volume %s (%s): %s, %s, node %s, %s\n",
				verb, v.Name, v.ID, core.FormatSize(v.Size), v.Kind, orDash(v.Node), v.State)
		})
	}
}

func (a *app) volumeListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the project's volumes",
		Args:    cobra.NoArgs,
		RunE: a.run(func(ctx context.Context, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			vols, err := c.AllVolumes(ctx)
			if err != nil {
				return err
			}
			return a.print(vols, func() {
				rows := make([][]string, 0, len(vols))
				for _, v := range vols {
					rows = append(rows, []string{v.Name, v.ID, core.FormatSize(v.Size), core.FormatSize(v.Allocated),
						v.Kind, orDash(v.Node), volumeState(v), fmt.Sprint(v.SnapshotCount), fmt.Sprint(len(v.Exports))})
				}
				table(a.stdout, []string{"NAME", "ID", "SIZE", "ALLOCATED", "KIND", "NODE", "STATE", "SNAPSHOTS", "EXPORTS"}, rows)
			})
		}),
	}
}

func volumeState(v apitypes.Volume) string {
	if v.StateDetail != "" {
		return v.State + " (" + v.StateDetail + ")"
	}
	return v.State
}

func (a *app) volumeShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show VOL",
		Short: "Show a volume",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			v, err := c.GetVolume(ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(v, func() {
				head := "- (no snapshot yet, or none applied)"
				if v.HeadParentID != nil {
					head = *v.HeadParentID
					if s, err := c.GetSnapshot(ctx, v.ID, *v.HeadParentID); err == nil {
						head = s.Name + " (" + s.ID + ")"
					}
				}
				fields(a.stdout,
					"name", v.Name,
					"id", v.ID,
					"project", v.Project,
					"kind", v.Kind,
					"node", orDash(v.Node),
					"state", volumeState(v),
					"size", core.FormatSize(v.Size),
					"allocated", core.FormatSize(v.Allocated),
					"format", orDash(v.Format),
					"head parent", head,
					"snapshots", fmt.Sprint(v.SnapshotCount),
					"created", showTime(v.CreatedAt),
					"updated", showTime(v.UpdatedAt),
				)
				for _, e := range v.Exports {
					fmt.Fprintf(a.stdout, "export: %s\n", describeExport(e))
				}
				for _, k := range sortedKeys(v.Labels) {
					fmt.Fprintf(a.stdout, "label: %s=%s\n", k, v.Labels[k])
				}
			})
		}),
	}
}

func describeExport(e apitypes.Export) string {
	what := "live volume"
	if e.SnapshotID != nil {
		what = "snapshot " + *e.SnapshotID
	}
	mode := "read-only"
	if e.Writable {
		mode = "writable"
	}
	if e.TLS {
		mode += ", TLS"
	}
	return fmt.Sprintf("%s  %s, %s, %s (id %s)", e.URI, what, mode, e.State, e.ID)
}

func (a *app) volumeGrowCommand() *cobra.Command {
	var size string
	cmd := &cobra.Command{
		Use:   "grow VOL --size SIZE",
		Short: "Grow a volume to a new virtual size",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			n, err := parseSizeFlag(size)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.GrowVolume(ctx, args[0], apitypes.VolumeGrow{Size: n})
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, a.printVolumeOf(ctx, c, "grew"))
		}),
	}
	cmd.Flags().StringVar(&size, "size", "", "new virtual size, e.g. 20G")
	_ = cmd.MarkFlagRequired("size")
	return cmd
}

func (a *app) volumeDeleteCommand() *cobra.Command {
	var purge bool
	cmd := &cobra.Command{
		Use:     "delete VOL [--purge]",
		Aliases: []string{"rm"},
		Short:   "Delete a volume's disk (its snapshots stay unless --purge)",
		Args:    cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.DeleteVolume(ctx, args[0], purge)
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				return a.print(t, func() {
					fmt.Fprintf(a.stdout, "deleted volume %s\n", args[0])
					if purge {
						return
					}
					if v, err := c.GetVolume(ctx, t.ResourceID); err == nil && v.SnapshotCount > 0 {
						fmt.Fprintf(a.stdout, "its %d snapshots are kept; `cairn volume delete %s --purge` removes them\n", v.SnapshotCount, args[0])
					}
				})
			})
		}),
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "remove the snapshots and the file too")
	return cmd
}

func (a *app) volumeExportCommand() *cobra.Command {
	var writable bool
	var tlsDir string
	cmd := &cobra.Command{
		Use:   "export VOL[@SNAP] [--writable] [--tls-dir DIR]",
		Short: "Export a volume or a snapshot over NBD; prints the NBD URI",
		Long: `Export a volume or a snapshot over NBD and print the URI clients connect to.

An export that requires TLS (URI nbds://..., beyond loopback or on a server run with
--export-tls) admits only clients with a certificate of this project. --tls-dir DIR
fetches one and writes DIR/ca-cert.pem, DIR/client-cert.pem and DIR/client-key.pem,
the layout QEMU reads with --object tls-creds-x509,id=tls0,endpoint=client,dir=DIR.`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			addr, err := parseVolumeOrSnapshot(args[0])
			if err != nil {
				return err
			}
			if tlsDir != "" && a.noWait {
				return core.Invalid("--tls-dir waits for the export: leave out --no-wait, or fetch the credentials later with `cairn volume export-credentials`")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.CreateExport(ctx, addr.volume, apitypes.ExportCreate{Snapshot: addr.snapshot, Writable: writable})
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				e, err := c.GetExport(ctx, t.VolumeID, t.ResourceID)
				if err != nil {
					return fmt.Errorf("task %s succeeded but reading export %s failed: %w", t.ID, t.ResourceID, err)
				}
				switch {
				case e.TLS && tlsDir != "":
					if _, err := a.writeExportCredentials(ctx, c, e.VolumeID, e.ID, tlsDir); err != nil {
						return fmt.Errorf("export %s is ready at %s, but its client credentials were not written: %w", e.ID, e.URI, err)
					}
				case e.TLS:
					fmt.Fprintf(a.stderr, "the export requires TLS: fetch client credentials with `cairn volume export-credentials %s %s --tls-dir DIR`, or export with --tls-dir DIR\n", addr.volume, e.ID)
				case tlsDir != "":
					fmt.Fprintf(a.stderr, "the export is served without TLS (on loopback): no credentials needed, none written to %s\n", tlsDir)
				}
				return a.print(e, func() { fmt.Fprintln(a.stdout, e.URI) })
			})
		}),
	}
	cmd.Flags().BoolVar(&writable, "writable", false, "let clients write (the live volume only)")
	cmd.Flags().StringVar(&tlsDir, "tls-dir", "", "for a TLS export, write the client credentials QEMU needs into this directory")
	return cmd
}

func (a *app) volumeExportCredentialsCommand() *cobra.Command {
	var tlsDir string
	cmd := &cobra.Command{
		Use:   "export-credentials VOL EXPORT_ID --tls-dir DIR",
		Short: "Write the client credentials of a TLS export into a directory",
		Long: `Fetch a client certificate of this project for a TLS export and write
DIR/ca-cert.pem, DIR/client-cert.pem and DIR/client-key.pem (mode 0600), the layout
QEMU reads with --object tls-creds-x509,id=tls0,endpoint=client,dir=DIR. Each run
issues a new certificate, valid for a year. With --output json it also prints the
API's answer, private key included.`,
		Args: cobra.ExactArgs(2),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			cr, err := a.writeExportCredentials(ctx, c, args[0], args[1], tlsDir)
			if err != nil {
				return err
			}
			return a.print(cr, func() {
				fmt.Fprintf(a.stdout, "wrote ca-cert.pem, client-cert.pem and client-key.pem for %s to %s\n", cr.Identity, tlsDir)
			})
		}),
	}
	cmd.Flags().StringVar(&tlsDir, "tls-dir", "", "directory to write the credentials into (created if missing)")
	_ = cmd.MarkFlagRequired("tls-dir")
	return cmd
}

// writeExportCredentials fetches a TLS export's client credentials and
// writes them into dir under the names QEMU's tls-creds-x509 reads on the
// client side.
func (a *app) writeExportCredentials(ctx context.Context, c *client.Client, volume, exportID, dir string) (apitypes.ExportCredentials, error) {
	return writeCredentials(dir, func() (apitypes.ExportCredentials, error) { return c.ExportCredentials(ctx, volume, exportID) })
}

// writeCredentials writes the credentials fetch returns into dir.
func writeCredentials(dir string, fetch func() (apitypes.ExportCredentials, error)) (apitypes.ExportCredentials, error) {
	cr, err := fetch()
	if err != nil {
		return cr, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return cr, fmt.Errorf("credentials directory: %w", err)
	}
	for _, f := range []struct {
		name string
		data string
		mode os.FileMode
	}{
		{"ca-cert.pem", cr.CACert, 0o644},
		{"client-cert.pem", cr.ClientCert, 0o644},
		{"client-key.pem", cr.ClientKey, 0o600},
	} {
		if err := atomicfile.Write(filepath.Join(dir, f.name), []byte(f.data), f.mode); err != nil {
			return cr, fmt.Errorf("writing credentials: %w", err)
		}
	}
	return cr, nil
}

func (a *app) volumeUnexportCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "unexport VOL|VOL@SNAP",
		Short: "Stop the exports of a volume or of one of its snapshots",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			addr, err := parseVolumeOrSnapshot(args[0])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			v, err := c.GetVolume(ctx, addr.volume)
			if err != nil {
				return err
			}
			var snapID string
			if addr.snapshot != "" {
				s, err := c.GetSnapshot(ctx, v.ID, addr.snapshot)
				if err != nil {
					return err
				}
				snapID = s.ID
			}
			exports, err := c.AllExports(ctx, v.ID)
			if err != nil {
				return err
			}
			var match []apitypes.Export
			for _, e := range exports {
				if (e.SnapshotID == nil && snapID == "") || (e.SnapshotID != nil && *e.SnapshotID == snapID) {
					match = append(match, e)
				}
			}
			if len(match) == 0 {
				return core.NotFound("%s is not exported", args[0])
			}
			uris := make([]string, len(match))
			for i, e := range match {
				uris[i] = e.URI
			}
			return a.unexport(ctx, c, args[0], uris, func(i int) (apitypes.Task, error) { return c.DeleteExport(ctx, v.ID, match[i].ID) })
		}),
	}
}

// unexport deletes exports one after the other. The JSON output is the final
// (or, with --no-wait, the queued) task, or an array of them when there were
// several exports.
func (a *app) unexport(ctx context.Context, c *client.Client, what string, uris []string, stop func(i int) (apitypes.Task, error)) error {
	var tasks []apitypes.Task
	for i := range uris {
		t, err := stop(i)
		if err != nil {
			return err
		}
		if !a.noWait {
			if t, err = a.wait(ctx, c, t); err != nil {
				return err
			}
		}
		tasks = append(tasks, t)
	}
	if a.json() {
		if len(tasks) == 1 {
			return writeJSON(a.stdout, tasks[0])
		}
		return writeJSON(a.stdout, tasks)
	}
	for i, t := range tasks {
		if a.noWait {
			fmt.Fprintf(a.stdout, "task %s %s (%s); follow it with: cairn task wait %s\n", t.ID, t.State, t.Kind, t.ID)
		} else {
			fmt.Fprintf(a.stdout, "unexported %s (%s)\n", what, uris[i])
		}
	}
	return nil
}

func (a *app) volumeLabelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "label VOL key=value... [key-...]",
		Short: "Set labels of a volume (key=value) or remove them (key-); schedule selectors match labels",
		Long: `Set labels of a volume with key=value, or remove one with key- (as kubectl does).
Other labels stay as they are. A schedule with --selector runs on every volume whose
labels hold all of its pairs, at each run.`,
		Args: cobra.MinimumNArgs(2),
		RunE: a.run(func(ctx context.Context, args []string) error {
			req, err := parseLabelArgs(args[1:])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			v, err := c.LabelVolume(ctx, args[0], req)
			if err != nil {
				return err
			}
			return a.print(v, func() {
				if len(v.Labels) == 0 {
					fmt.Fprintf(a.stdout, "volume %s has no labels\n", v.Name)
					return
				}
				pairs := make([]string, 0, len(v.Labels))
				for _, k := range sortedKeys(v.Labels) {
					pairs = append(pairs, k+"="+v.Labels[k])
				}
				fmt.Fprintf(a.stdout, "volume %s labels: %s\n", v.Name, strings.Join(pairs, " "))
			})
		}),
	}
}

// parseLabelArgs turns key=value (set) and key- (remove) into a request.
func parseLabelArgs(args []string) (apitypes.VolumeLabels, error) {
	req := apitypes.VolumeLabels{Labels: map[string]*string{}}
	for _, arg := range args {
		var key string
		var value *string
		if k, v, ok := strings.Cut(arg, "="); ok {
			key, value = k, &v
		} else if k, ok := strings.CutSuffix(arg, "-"); ok {
			key = k
		}
		if key == "" {
			return req, core.Invalid("invalid label %q: use key=value to set a label or key- to remove it", arg)
		}
		if _, dup := req.Labels[key]; dup {
			return req, core.Invalid("label %s is given twice", key)
		}
		req.Labels[key] = value
	}
	return req, nil
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
