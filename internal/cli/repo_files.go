package cli

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
	"github.com/cairn-backup/cairn/internal/fsimage/mount"
	"github.com/cairn-backup/cairn/internal/repo"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

func (ra *repoApp) filesCommand() *cobra.Command {
	var (
		f         filterFlags
		includes  []string
		target    string
		list      string
		partition int
		overwrite bool
	)
	cmd := &cobra.Command{
		Use:   "files BACKUP (--include PATH... --target DIR | --list PATH) [--partition N]",
		Short: "Copy files out of a disk image backup (ext4 or XFS, partitioned or not), without restoring it",
		Long: `Read the file systems inside an image backup straight from the repository (GPT or MBR
partitions, ext4 or XFS) and copy chosen files and directories into a directory of
this host, with their modes, times and (as root) owners; symbolic links stay links,
and nothing is ever written outside the target, whatever the image holds. --list
shows a directory instead. With several readable file systems, --partition picks one.`,
		Args: cobra.ExactArgs(1),
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringArrayVar(&includes, "include", nil, "a file or directory of the image to copy, such as /etc/hosts (repeatable)")
	fl.StringVar(&target, "target", "", "copy into this directory (paths are kept below it)")
	fl.StringVar(&list, "list", "", "list this directory of the image instead")
	fl.IntVar(&partition, "partition", 0, "the partition to read (1 = the first; 0: the only readable file system)")
	fl.BoolVar(&overwrite, "overwrite", false, "replace existing files in the target")
	cmd.RunE = ra.run(func(ctx context.Context, args []string) error {
		if (list == "") == (len(includes) == 0) || (len(includes) > 0) != (target != "") {
			return core.Invalid("give --include PATH... with --target DIR, or --list PATH")
		}
		return ra.withImage(ctx, "files", args[0], f.filter(), func(m *format.Manifest, ir *repo.ImageReader) error {
			fsys, where, err := mount.Pick(ir, ir.Size(), partition)
			if err != nil {
				return fmt.Errorf("backup %s: %w", m.ID, err)
			}
			if list != "" {
				return ra.listImageDir(fsys, list)
			}
			st, err := mount.CopyOut(fsys, includes, target, mount.CopyOptions{Overwrite: overwrite, NoOwners: os.Geteuid() != 0})
			if err != nil {
				return err
			}
			if perr := ra.print(st, func() {
				fmt.Fprintf(ra.stdout, "copied from %s of backup %s: %s (%s), %s, %s, %s\n",
					where, m.ID, plural(st.Files, "file", "files"), core.FormatSize(st.Bytes), plural(st.Dirs, "directory", "directories"),
					plural(st.Symlinks, "link", "links"), plural(st.HardLinks, "hard link", "hard links"))
				for _, w := range st.WarningSamples {
					fmt.Fprintf(ra.stdout, "warning: %s\n", w)
				}
			}); perr != nil {
				return perr
			}
			if st.Errors > 0 {
				return fmt.Errorf("%d entries could not be copied, for example: %s", st.Errors, strings.Join(st.ErrorSamples, "; "))
			}
			return nil
		})
	})
	ra.addNoLock(cmd)
	return cmd
}

func (ra *repoApp) listImageDir(fsys fsimage.FS, dir string) error {
	entries, err := fsys.ReadDir(dir)
	if err != nil {
		return err
	}
	return ra.print(entries, func() {
		for _, e := range entries {
			line := fmt.Sprintf("%s %6d %6d %12d %s %s", e.Mode, e.UID, e.GID, e.Size, e.ModTime.Format("2006-01-02 15:04:05"), e.Name)
			if e.Mode&os.ModeSymlink != 0 {
				if t, err := fsys.Readlink(strings.TrimSuffix(dir, "/") + "/" + e.Name); err == nil {
					line += " -> " + t
				}
			}
			fmt.Fprintln(ra.stdout, line)
		}
	})
}
