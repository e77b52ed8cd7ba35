package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
)

// Volume backups through the server (`cairn backup ...`).

func (a *app) backupCommand() *cobra.Command {
	cmd := groupCommand("backup", "Back up volumes into repositories, and list their backups", "backups")
	cmd.AddCommand(a.backupCreateCommand(), a.backupListCommand(), a.backupShowCommand(), a.backupRestoreCommand(),
		a.backupForgetCommand(), a.backupVerifyCommand(), a.backupFilesCommand(), a.backupExportCommand(), a.backupUnexportCommand())
	return cmd
}

func (a *app) backupCreateCommand() *cobra.Command {
	var repository string
	cmd := &cobra.Command{
		Use:   "create VOL [--repository R]",
		Short: "Back up a volume (incremental after the first backup into that repository)",
		Long: `Back up a volume into a repository (default: the project's default repository).
A hidden system snapshot gives a consistent point in time, also while a VM writes
to the volume. The first backup into a repository reads every allocated cluster;
later ones read only the clusters changed since the previous backup's system
snapshot, computed from the qcow2 metadata. Every backup restores alone.`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.CreateBackup(ctx, args[0], apitypes.BackupCreate{Repository: repository})
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				b, err := c.GetBackup(ctx, t.ResourceID)
				if err != nil {
					return fmt.Errorf("task %s succeeded but reading backup %s failed: %w", t.ID, t.ResourceID, err)
				}
				return a.print(b, func() {
					how := "incremental"
					if why := t.Result["full_read"]; why != "" {
						how = "full (" + why + ")"
					}
					fmt.Fprintf(a.stdout, "backup %s of %s in %s: %s, %s read, %s added, %s, in %.1fs\n", b.ID, b.Volume, b.Repository,
						core.FormatSize(b.LogicalSize), core.FormatSize(b.BytesRead), core.FormatSize(b.BytesAdded), how, float64(b.DurationMS)/1000)
				})
			})
		}),
	}
	cmd.Flags().StringVar(&repository, "repository", "", "repository name or id (default: the project's default)")
	return cmd
}

func (a *app) backupListCommand() *cobra.Command {
	var repository string
	cmd := &cobra.Command{
		Use:     "list [VOL] [--repository R]",
		Aliases: []string{"ls"},
		Short:   "List backups, newest first",
		Args:    cobra.MaximumNArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			vol := ""
			if len(args) == 1 {
				vol = args[0]
			}
			bs, err := c.AllBackups(ctx, vol, repository)
			if err != nil {
				return err
			}
			return a.print(bs, func() {
				rows := make([][]string, 0, len(bs))
				for _, b := range bs {
					state := b.State
					if b.Error != "" {
						state += " (" + b.Error + ")"
					}
					rows = append(rows, []string{b.ID, b.CreatedAt.Local().Format("2006-01-02 15:04:05"), orDash(b.Volume), orDash(b.Repository),
						state, core.FormatSize(b.LogicalSize), core.FormatSize(b.BytesRead), core.FormatSize(b.BytesAdded), uniqueSize(b),
						orDash(shortID(b.ParentBackupID))})
				}
				table(a.stdout, []string{"ID", "CREATED", "VOLUME", "REPOSITORY", "STATE", "SIZE", "READ", "ADDED", "UNIQUE", "PARENT"}, rows)
			})
		}),
	}
	cmd.Flags().StringVar(&repository, "repository", "", "only backups in this repository")
	return cmd
}

// uniqueSize is what only this backup holds: forgetting it and pruning
// frees that much.
func uniqueSize(b apitypes.Backup) string {
	if b.UniqueBytes == nil {
		return "-"
	}
	return core.FormatSize(*b.UniqueBytes)
}

func (a *app) backupShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show BACKUP",
		Short: "Show a backup (id or unique id prefix)",
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
			return a.print(b, func() {
				kv := [][2]string{{"id", b.ID}, {"volume", orDash(b.Volume) + " (" + b.VolumeID + ")"}, {"repository", orDash(b.Repository)},
					{"state", b.State}, {"created", b.CreatedAt.Local().Format("2006-01-02 15:04:05 MST")},
					{"size", core.FormatSize(b.LogicalSize)}, {"read", core.FormatSize(b.BytesRead)}, {"added", core.FormatSize(b.BytesAdded)},
					{"unique", uniqueSize(b)},
					{"duration", fmt.Sprintf("%.1fs", float64(b.DurationMS)/1000)}, {"parent", orDash(b.ParentBackupID)}, {"tags", strings.Join(b.Tags, " ")}}
				if b.Error != "" {
					kv = append(kv, [2]string{"error", b.Error})
				}
				for _, p := range kv {
					fmt.Fprintf(a.stdout, "%-11s %s\n", p[0]+":", p[1])
				}
			})
		}),
	}
}

func (a *app) backupRestoreCommand() *cobra.Command {
	var req apitypes.BackupRestore
	cmd := &cobra.Command{
		Use:   "restore BACKUP (--to-volume NAME [--node N] | --to-file PATH.qcow2|PATH.raw | --in-place)",
		Short: "Restore a backup into a new volume, a file on the node's host, or its own volume (after a safety snapshot)",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			n := 0
			for _, set := range []bool{req.ToVolume != "", req.ToFile != "", req.InPlace} {
				if set {
					n++
				}
			}
			if n != 1 {
				return core.Invalid("give one of --to-volume NAME, --to-file PATH or --in-place")
			}
			if req.ToFile != "" {
				abs, err := filepath.Abs(req.ToFile)
				if err != nil {
					return core.Invalid("invalid --to-file %q: %v", req.ToFile, err)
				}
				req.ToFile = abs
			}
			if err := checkKind(req.Kind); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.RestoreBackup(ctx, args[0], req)
			if err != nil {
				return err
			}
			if req.ToVolume != "" {
				return a.act(ctx, c, t, a.printVolumeOf(ctx, c, "restored"))
			}
			if req.InPlace {
				return a.act(ctx, c, t, func(t apitypes.Task) error {
					v, err := c.GetVolume(ctx, t.ResourceID)
					if err != nil {
						return err
					}
					return a.print(v, func() {
						saved := t.Result["saved_snapshot_id"]
						if sn, err := c.GetSnapshot(ctx, v.ID, saved); err == nil {
							saved = sn.Name + " (" + sn.ID + ")"
						}
						fmt.Fprintf(a.stdout, "restored backup %s into volume %s; its previous state is snapshot %s (`cairn volume revert %s` undoes the restore)\n",
							args[0], v.Name, saved, v.Name)
					})
				})
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				return a.print(t, func() {
					fmt.Fprintf(a.stdout, "restored backup %s to %s on node %s\n", args[0], t.Result["file"], t.Node)
				})
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.ToVolume, "to-volume", "", "make a new volume of this name")
	f.StringVar(&req.ToFile, "to-file", "", "write this file on the node's host: .qcow2, or raw (sparse) for any other name")
	f.BoolVar(&req.InPlace, "in-place", false, "give the backup's own volume the backup's content, after a safety snapshot")
	f.StringVar(&req.Node, "node", "", "the node to restore on (default: one that reaches the repository)")
	f.StringVar(&req.Kind, "kind", "", "kind of the new volume: root or data (default data)")
	return cmd
}

func (a *app) backupForgetCommand() *cobra.Command {
	var pf policyFlags
	var repository string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "forget VOL --keep-last N | --keep-daily N ... | --keep-within DURATION [--repository R] [--dry-run]",
		Short: "Remove a volume's backups that a retention policy does not keep",
		Long: `Remove from a repository (default: the project's default) the backups of a volume
that the --keep-* rules do not keep (restic's meanings; a backup kept by any rule
stays). --dry-run lists exactly what would go and the bytes a prune would then
free, and changes nothing. The repository is pruned afterwards, at most once a day
(cairn repository prune runs one at once).`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			pol, err := pf.policy()
			if err != nil {
				return err
			}
			if pol.Empty() {
				return core.Invalid("give at least one --keep-* rule: an empty policy would forget every backup")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.ForgetBackups(ctx, args[0], apitypes.BackupForget{Repository: repository, KeepLast: pf.last, KeepHourly: pf.hourly,
				KeepDaily: pf.daily, KeepWeekly: pf.weekly, KeepMonthly: pf.monthly, KeepYearly: pf.yearly, KeepWithin: pf.within, DryRun: dryRun})
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				gone := strings.Fields(t.Result["forget"])
				return a.print(t, func() {
					verb := "forgot"
					if dryRun {
						verb = "would forget"
					}
					freed, _ := strconv.ParseInt(t.Result["bytes_freed"], 10, 64)
					fmt.Fprintf(a.stdout, "%s %s of %s, keeping %d; a prune frees %s\n", verb, plural(len(gone), "backup", "backups"), args[0],
						len(strings.Fields(t.Result["keep"])), core.FormatSize(freed))
					for _, id := range gone {
						fmt.Fprintf(a.stdout, "  %s %s\n", verb, id)
					}
					if id := t.Result["prune_task_id"]; id != "" {
						fmt.Fprintf(a.stdout, "prune queued: task %s\n", id)
					}
				})
			})
		}),
	}
	pf.add(cmd)
	cmd.Flags().StringVar(&repository, "repository", "", "the repository (default: the project's default)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would go and what it would free")
	return cmd
}

func (a *app) backupVerifyCommand() *cobra.Command {
	var req apitypes.BackupVerify
	var all bool
	cmd := &cobra.Command{
		Use:   "verify (BACKUP... | --volume VOL | --all) [--repository R] [--repair]",
		Short: "Re-read backups' data and check it; exit 7 and mark them corrupt when damaged",
		Long: `Re-read every chunk the named backups (or every backup of --volume) need, and
check each: CRC32C, authentication, and the chunk's id recomputed from its data.
A damaged chunk marks every backup that needs it corrupt (exit code 7); a backup
found whole is ready again. --all re-reads the whole repository (default: the
project's default).

--repair rewrites each damaged chunk from the volume itself: a snapshot (or the
live disk, when no export holds it) whose bytes at that place hash to the
chunk's id. Damage without such a source stays, and is named in the error.`,
		RunE: a.run(func(ctx context.Context, args []string) error {
			req.Backups = args
			n := 0
			for _, set := range []bool{len(args) > 0, req.Volume != "", all} {
				if set {
					n++
				}
			}
			if n != 1 {
				return core.Invalid("give backups, --volume VOL or --all")
			}
			if all && req.Repair {
				return core.Invalid("--repair works on backups or --volume, not --all")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			var t apitypes.Task
			if all {
				ref := req.Repository
				if ref == "" {
					rs, err := c.AllRepositories(ctx)
					if err != nil {
						return err
					}
					for _, r := range rs {
						if r.Default {
							ref = r.Name
						}
					}
					if ref == "" {
						return core.NotFound("the project has no default repository: pass --repository")
					}
				}
				t, err = c.VerifyRepository(ctx, ref, apitypes.RepositoryVerify{ReadDataPercent: 100})
			} else {
				t, err = c.VerifyBackups(ctx, req)
			}
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				return a.print(t, func() {
					if n := t.Result["repaired"]; n != "" && n != "0" {
						fmt.Fprintf(a.stdout, "repaired %s damaged chunks from the volume\n", n)
					}
					fmt.Fprintf(a.stdout, "no problems: %s packs re-read, %s\n", t.Result["packs_read"], core.FormatSize(atoi64(t.Result["bytes_read"])))
				})
			})
		}),
	}
	cmd.Flags().StringVar(&req.Volume, "volume", "", "every backup of this volume in the repository")
	cmd.Flags().StringVar(&req.Repository, "repository", "", "the repository of --volume or --all (default: the project's default)")
	cmd.Flags().BoolVar(&all, "all", false, "re-read the whole repository")
	cmd.Flags().BoolVar(&req.Repair, "repair", false, "rewrite damaged chunks from the volume's snapshots or live disk where they hold the same bytes")
	return cmd
}

func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func (a *app) backupFilesCommand() *cobra.Command {
	var req apitypes.BackupFiles
	cmd := &cobra.Command{
		Use:   "files BACKUP --include PATH... --target DIR [--partition N] [--node N]",
		Short: "Copy files out of a volume backup (ext4 or XFS) into a directory on the node's host",
		Long: `Copy chosen files and directories out of the file system inside a volume backup
(ext4 or XFS, with or without a GPT/MBR partition table), read straight from the
repository, into a directory on the node's host; nothing is written outside it.`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			if len(req.Include) == 0 || req.Target == "" {
				return core.Invalid("give --include PATH (repeatable) and --target DIR")
			}
			abs, err := filepath.Abs(req.Target)
			if err != nil {
				return core.Invalid("invalid --target %q: %v", req.Target, err)
			}
			req.Target = abs
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.CopyBackupFiles(ctx, args[0], req)
			if err != nil {
				return err
			}
			return a.act(ctx, c, t, func(t apitypes.Task) error {
				return a.print(t, func() {
					fmt.Fprintf(a.stdout, "copied %s files (%s) from %s of backup %s into %s on node %s\n", t.Result["files"],
						core.FormatSize(atoi64(t.Result["bytes"])), t.Result["file_system"], args[0], req.Target, t.Node)
				})
			})
		}),
	}
	f := cmd.Flags()
	f.StringArrayVar(&req.Include, "include", nil, "a path in the backup's file system, such as /etc/hosts (repeatable)")
	f.StringVar(&req.Target, "target", "", "directory on the node's host to copy into")
	f.IntVar(&req.Partition, "partition", 0, "the partition to read (1 = the first; 0: the only readable file system)")
	f.BoolVar(&req.Overwrite, "overwrite", false, "replace existing files in the target")
	f.StringVar(&req.Node, "node", "", "the node to copy on (default: one that reaches the repository)")
	return cmd
}
