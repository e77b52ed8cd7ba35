package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/atomicfile"
	"github.com/cairn-backup/cairn/internal/chunker"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/filebackup"
	"github.com/cairn-backup/cairn/internal/qcow2"
	"github.com/cairn-backup/cairn/internal/qemu"
	"github.com/cairn-backup/cairn/internal/repo"
	"github.com/cairn-backup/cairn/internal/repo/format"
	"github.com/cairn-backup/cairn/internal/uncached"
)

// filterFlags are the flags that select backups.
type filterFlags struct {
	tags   []string
	host   string
	source string
}

func (f *filterFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.tags, "tag", nil, "only backups with this tag (repeatable: all must match)")
	cmd.Flags().StringVar(&f.host, "host", "", "only backups of this host")
	cmd.Flags().StringVar(&f.source, "source", "", "only backups of this source path")
}

func (f *filterFlags) filter() repo.Filter {
	return repo.Filter{Tags: f.tags, Host: f.host, Source: f.source}
}

// resolveBackup loads the backups and finds one from an id, prefix or latest.
func resolveBackup(ctx context.Context, r *repo.Repository, spec string, f repo.Filter) (*format.Manifest, error) {
	backups, err := r.Backups(ctx)
	if err != nil {
		return nil, err
	}
	return repo.Resolve(backups, spec, f)
}

func (ra *repoApp) backupCommand() *cobra.Command {
	var (
		image, snapshot, host, parent string
		tags, excludes                []string
		oneFS, forceShare             bool
	)
	cmd := &cobra.Command{
		Use:   "backup [PATH...] | --image FILE",
		Short: "Back up files and directories, or a disk image (raw or qcow2)",
	}
	fl := cmd.Flags()
	fl.StringVar(&image, "image", "", "back up this disk image (raw or qcow2) instead of files")
	fl.StringVar(&snapshot, "snapshot", "", "with a qcow2 --image: back up this internal snapshot (name or id)")
	fl.StringArrayVar(&tags, "tag", nil, "tag the backup (repeatable), e.g. volume=web or nightly")
	fl.StringVar(&host, "host", "", "record this host name (default: this machine's)")
	fl.StringVar(&parent, "parent", "", "the backup to compare with (default: the latest of the same host and paths)")
	fl.StringArrayVar(&excludes, "exclude", nil, "skip entries whose base name matches this glob (repeatable)")
	fl.BoolVar(&oneFS, "one-file-system", false, "do not cross mount points")
	fl.BoolVar(&forceShare, "force-share", false, "with --image: read an image that another process (a running VM) is writing, and let others write it meanwhile")
	cmd.RunE = ra.run(func(ctx context.Context, args []string) error {
		if (image == "") == (len(args) == 0) {
			return core.Invalid("give either PATH... or --image FILE")
		}
		if snapshot != "" && image == "" {
			return core.Invalid("--snapshot needs --image")
		}
		if forceShare && image == "" {
			return core.Invalid("--force-share needs --image")
		}
		for _, t := range tags {
			if t == "" || len(t) > format.MaxTagLen {
				return core.Invalid("invalid --tag %.40q: 1 to %d bytes", t, format.MaxTagLen)
			}
		}
		if host == "" {
			host, _ = os.Hostname()
		}
		return ra.locked(ctx, lockShared, "backup", func(r *repo.Repository) error {
			info := repo.BackupInfo{Host: host, Tags: tags}
			backups, err := r.Backups(ctx)
			if err != nil {
				return err
			}
			kind, paths := format.KindFiles, absAll(args)
			if image != "" {
				kind, paths = format.KindImage, absAll([]string{image})
			}
			if parent != "" {
				pm, err := repo.Resolve(backups, parent, repo.Filter{})
				if err != nil {
					return err
				}
				info.Parent = pm.ID
			} else if pm := repo.FindParent(backups, kind, host, paths); pm != nil {
				info.Parent = pm.ID
			}
			var m *format.Manifest
			if image != "" {
				m, err = ra.backupImage(ctx, r, image, snapshot, forceShare, info)
			} else {
				opts := filebackup.BackupOptions{Excludes: excludes, OneFileSystem: oneFS}
				if dir := ra.localRoot(); dir != "" {
					// Never the repository into itself.
					opts.SkipDirs = []string{dir}
					for _, p := range paths {
						if sameFile(p, dir) {
							return core.Invalid("backup path %s is the repository: a repository is not backed up into itself", p)
						}
					}
					if within(dir, paths) {
						fmt.Fprintf(ra.stderr, "cairn: note: the repository %s is left out of the backup\n", dir)
					}
				}
				m, err = ra.backupFiles(ctx, r, args, info, opts)
			}
			if err != nil {
				return err
			}
			if err := ra.print(backupOf(m), func() {
				fmt.Fprintf(ra.stdout, "backup %s saved: %s, %s added to the repository, in %.1fs\n",
					m.ID, core.FormatSize(backupOf(m).LogicalSize), core.FormatSize(m.Summary.BytesAdded), float64(backupOf(m).DurationMS)/1000)
			}); err != nil {
				return err
			}
			if m.Summary.Errors > 0 {
				// Saved, but not whole: a script must notice (exit 1).
				return core.E(core.KindInternal, "incomplete", "backup %s is saved without %s that could not be read (listed above)",
					m.ID, plural(m.Summary.Errors, "entry", "entries"))
			}
			return nil
		})
	})
	return cmd
}

// sameFile reports whether paths a and b name the same existing file.
func sameFile(a, b string) bool {
	x, err1 := os.Stat(a)
	y, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(x, y)
}

// within reports whether dir is one of the absolute paths or below one.
func within(dir string, paths []string) bool {
	for _, p := range paths {
		if dir == p || strings.HasPrefix(dir, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

func absAll(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			a = p
		}
		out[i] = a
	}
	return out
}

// openImage opens a raw or qcow2 image for backup. Unless forceShare is
// set, an image that another process (a running VM) has open for writing
// is refused, and no process may open it for writing until done is called:
// QEMU's own locks, the way qemu-img reads an image.
func openImage(path, snapshot string, forceShare bool) (_ repo.ImageSource, _ func(), err error) {
	// Checked before opening: opening a named pipe would wait for a writer.
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return repo.ImageSource{}, nil, core.Invalid("%s is %s: --image reads disk image files (raw or qcow2)", path, describeType(fi.Mode()))
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return repo.ImageSource{}, nil, core.NotFound("image %s does not exist", path)
		}
		return repo.ImageSource{}, nil, fmt.Errorf("opening image: %w", err)
	}
	closers := []func(){func() { f.Close() }} // f holds the locks: closed last
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return repo.ImageSource{}, nil, err
	}
	if !fi.Mode().IsRegular() {
		return repo.ImageSource{}, nil, core.Invalid("%s is %s: --image reads disk image files (raw or qcow2)", path, describeType(fi.Mode()))
	}
	if !forceShare {
		if err := qemu.LockImageForReading(f); err != nil {
			if core.CodeOf(err) == "in_use" {
				return repo.ImageSource{}, nil, fmt.Errorf("%w: stop the VM first, back the volume up through the cairn server, or pass --force-share to read it anyway", err)
			}
			return repo.ImageSource{}, nil, err
		}
	}
	abs, _ := filepath.Abs(path)
	magic := make([]byte, 4)
	if n, _ := f.ReadAt(magic, 0); n == 4 && string(magic) == "QFI\xfb" {
		im, err := qcow2.Open(path)
		if err != nil {
			return repo.ImageSource{}, nil, err
		}
		closers = append(closers, func() { im.Close() })
		var l *qcow2.Layer
		if snapshot != "" {
			l, err = im.Snapshot(snapshot)
		} else {
			l, err = im.Active()
		}
		if err != nil {
			return repo.ImageSource{}, nil, err
		}
		ext, err := l.Extents()
		if err != nil {
			return repo.ImageSource{}, nil, err
		}
		ce := make([]chunker.Extent, len(ext))
		for i, e := range ext {
			ce[i] = chunker.Extent{Offset: e.Offset, Length: e.Length}
		}
		return repo.ImageSource{R: l, Size: l.Size(), Extents: ce, Format: "qcow2", Path: abs}, closeAll, nil
	}
	if snapshot != "" {
		return repo.ImageSource{}, nil, core.Invalid("--snapshot: %s is not a qcow2 image", path)
	}
	ext, err := chunker.SparseExtents(f)
	if err != nil {
		return repo.ImageSource{}, nil, err
	}
	// Read without filling the page cache: see package uncached.
	return repo.ImageSource{R: uncached.New(f), Size: fi.Size(), Extents: ext, Format: "raw", Path: abs}, closeAll, nil
}

func (ra *repoApp) backupImage(ctx context.Context, r *repo.Repository, path, snapshot string, forceShare bool, info repo.BackupInfo) (*format.Manifest, error) {
	src, done, err := openImage(path, snapshot, forceShare)
	if err != nil {
		return nil, err
	}
	defer done()
	prog, finish := ra.repoProgress("backup")
	defer finish()
	return r.BackupImage(ctx, src, info, prog)
}

func (ra *repoApp) backupFiles(ctx context.Context, r *repo.Repository, paths []string, info repo.BackupInfo, opts filebackup.BackupOptions) (*format.Manifest, error) {
	p := ra.newProgress("backup")
	if p != nil {
		opts.Progress = func(fp filebackup.Progress) {
			p.update(apitypes.Task{State: fmt.Sprintf("%d files, %s", fp.Files, core.FormatSize(fp.Bytes))})
		}
		defer p.finish()
	}
	res, err := r.BackupFiles(ctx, paths, info, opts)
	if err != nil {
		return nil, err
	}
	ra.samples("warning: not backed up", res.Stats.ErrorSamples, res.Stats.Errors)
	ra.samples("warning", res.Stats.WarningSamples, res.Stats.Warnings)
	return res.Manifest, nil
}

// samples prints the messages kept of total (warnings or errors), each
// after "cairn: LABEL: ", and how many more there were.
func (ra *repoApp) samples(label string, msgs []string, total int64) {
	for _, s := range msgs {
		fmt.Fprintf(ra.stderr, "cairn: %s: %s\n", label, s)
	}
	if n := total - int64(len(msgs)); n > 0 {
		fmt.Fprintf(ra.stderr, "cairn: %s: and %d more\n", label, n)
	}
}

// plural is "1 file" or "n files".
func plural[N int | int64](n N, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func (ra *repoApp) backupsCommand() *cobra.Command {
	var f filterFlags
	cmd := &cobra.Command{Use: "backups", Short: "List the backups, oldest first", Args: cobra.NoArgs}
	f.add(cmd)
	cmd.RunE = ra.run(func(ctx context.Context, _ []string) error {
		r, err := ra.open(ctx, false)
		if err != nil {
			return err
		}
		defer r.Close()
		backups, err := r.Backups(ctx)
		if err != nil {
			return err
		}
		out := []apitypes.Backup{}
		for _, m := range backups {
			if f.filter().Match(m) {
				out = append(out, backupOf(m))
			}
		}
		return ra.print(out, func() {
			rows := [][]string{}
			for _, b := range out {
				rows = append(rows, []string{shortID(b.ID), showTime(b.CreatedAt), b.Kind, b.Host, core.FormatSize(b.LogicalSize),
					core.FormatSize(b.BytesAdded), strings.Join(b.Paths, " "), strings.Join(b.Tags, ",")})
			}
			table(ra.stdout, []string{"ID", "TIME", "KIND", "HOST", "SIZE", "ADDED", "PATHS", "TAGS"}, rows)
			for _, b := range out {
				if b.SkippedEntries > 0 {
					fmt.Fprintf(ra.stdout, "backup %s is incomplete: saved without %s that could not be read\n",
						shortID(b.ID), plural(b.SkippedEntries, "entry", "entries"))
				}
			}
		})
	})
	return cmd
}

// lsEntry is one line of `repo ls --output json`.
type lsEntry struct {
	Path   string `json:"path"`
	Type   string `json:"type"`
	Mode   string `json:"mode"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Size   uint64 `json:"size"`
	MTime  string `json:"mtime"`
	Target string `json:"target,omitempty"`
}

// inBackup turns a path as it was on the backed-up host (absolute, at or
// below one of the backup's paths) into its name in the backup, where each
// backed-up path is a top-level entry under its last name: with /srv/www
// backed up, /srv/www/index.html is www/index.html. Any other path is
// returned as given.
func inBackup(m *format.Manifest, p string) string {
	if !strings.HasPrefix(p, "/") {
		return p
	}
	clean := path.Clean(p)
	for _, root := range m.Paths {
		root = path.Clean(root)
		if root == "/" || !strings.HasPrefix(root, "/") {
			continue
		}
		if clean == root || strings.HasPrefix(clean, root+"/") {
			return path.Base(root) + clean[len(root):]
		}
	}
	return p
}

// topLevelHint says how paths in backup m are named, for a "not found"
// error: nothing for a backup of / (whose names are the host's).
func topLevelHint(m *format.Manifest) string {
	var tops []string
	for _, root := range m.Paths {
		root = path.Clean(root)
		if root == "/" || !strings.HasPrefix(root, "/") {
			return ""
		}
		tops = append(tops, path.Base(root)+"/")
	}
	if len(tops) == 0 {
		return ""
	}
	return fmt.Sprintf(" (its paths start with %s, or give them as they were on the host, below %s)",
		strings.Join(tops, " or "), strings.Join(m.Paths, " or "))
}

func (ra *repoApp) lsCommand() *cobra.Command {
	var f filterFlags
	cmd := &cobra.Command{Use: "ls BACKUP [PATH]", Short: "List the files of a backup (below PATH)", Args: cobra.RangeArgs(1, 2),
		Long: `List the files of a file backup, or those below PATH. Each backed-up path is a
top-level name in the backup (/srv/www is www); PATH may be given that way
(www/index.html) or as it was on the host (/srv/www/index.html).`}
	f.add(cmd)
	cmd.RunE = ra.run(func(ctx context.Context, args []string) error {
		r, err := ra.open(ctx, true)
		if err != nil {
			return err
		}
		defer r.Close()
		m, err := resolveBackup(ctx, r, args[0], f.filter())
		if err != nil {
			return err
		}
		if m.Kind != format.KindFiles {
			return core.Invalid("backup %s is a disk image of %s: nothing to list (restore it with --to-file)", m.ID, core.FormatSize(m.Image.Size))
		}
		prefix := ""
		if len(args) == 2 {
			prefix = strings.Trim(inBackup(m, args[1]), "/")
		}
		out := []lsEntry{}
		found := prefix == ""
		err = filebackup.Walk(ctx, r, *m.Tree, func(path string, n *filebackup.Node) error {
			if prefix != "" && path != prefix && !strings.HasPrefix(path, prefix+"/") {
				return nil
			}
			found = true
			out = append(out, lsEntry{Path: path, Type: string(n.Type), Mode: fmt.Sprintf("%04o", n.Mode), UID: n.UID, GID: n.GID,
				Size: n.Size, MTime: n.ModTime.Format("2006-01-02T15:04:05.999999999Z07:00"), Target: n.LinkTarget})
			return nil
		})
		if err != nil {
			return err
		}
		if !found {
			return core.NotFound("no %q in backup %s%s", prefix, m.ID, topLevelHint(m))
		}
		return ra.print(out, func() {
			for _, e := range out {
				line := fmt.Sprintf("%-8s %s %5d %5d %10d %s %s", e.Type, e.Mode, e.UID, e.GID, e.Size, e.MTime[:min(19, len(e.MTime))], e.Path)
				if e.Target != "" {
					line += " -> " + e.Target
				}
				fmt.Fprintln(ra.stdout, line)
			}
		})
	})
	return cmd
}

func (ra *repoApp) restoreCommand() *cobra.Command {
	var (
		f                   filterFlags
		target, toFile      string
		includes            []string
		overwrite, noOwners bool
	)
	cmd := &cobra.Command{
		Use:   "restore BACKUP (--target DIR [--include PATH]... | --to-file OUT.raw|OUT.qcow2)",
		Short: "Restore a file backup into a directory, or an image backup to a file",
		Args:  cobra.ExactArgs(1),
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&target, "target", "", "restore files into this directory")
	fl.StringArrayVar(&includes, "include", nil, "restore only this path of the backup, with everything below it (repeatable); www/x or, as on the host, /srv/www/x")
	fl.StringVar(&toFile, "to-file", "", "restore an image backup to this file: .qcow2 makes a qcow2 image, anything else raw (sparse); never a device")
	ra.addNoLock(cmd)
	fl.BoolVar(&overwrite, "overwrite", false, "replace existing files (and an existing --to-file, keeping its mode and owner)")
	fl.BoolVar(&noOwners, "no-owners", false, "do not restore file owners (the default when not root)")
	cmd.RunE = ra.run(func(ctx context.Context, args []string) error {
		if (target == "") == (toFile == "") {
			return core.Invalid("give either --target DIR or --to-file FILE")
		}
		if toFile != "" && len(includes) > 0 {
			return core.Invalid("--include goes with --target")
		}
		return ra.locked(ctx, lockReading, "restore", func(r *repo.Repository) error {
			m, err := resolveBackup(ctx, r, args[0], f.filter())
			if err != nil {
				return err
			}
			if toFile != "" {
				return ra.restoreImage(ctx, r, m, toFile, overwrite)
			}
			for i, inc := range includes {
				includes[i] = inBackup(m, inc)
			}
			p := ra.newProgress("restore")
			opts := filebackup.RestoreOptions{Include: includes, Overwrite: overwrite, Owners: !noOwners && os.Geteuid() == 0}
			if p != nil {
				opts.Progress = func(fp filebackup.Progress) {
					p.update(apitypes.Task{State: "running", BytesDone: fp.Bytes, BytesTotal: max(m.Summary.Bytes, fp.Bytes)})
				}
			}
			st, err := r.RestoreFiles(ctx, m, target, opts)
			p.finish()
			if core.CodeOf(err) == filebackup.CodeNoSuchPath {
				err = fmt.Errorf("%w%s", err, topLevelHint(m))
			}
			// The entries that failed or lost metadata, also when the
			// restore as a whole failed: the error names only the first.
			ra.samples("warning", st.WarningSamples, st.Warnings)
			ra.samples("error", st.ErrorSamples, st.Errors)
			if err != nil {
				return err
			}
			if st.Errors > 0 {
				return fmt.Errorf("restore of backup %s into %s: %s could not be restored", m.ID, target, plural(st.Errors, "entry", "entries"))
			}
			out := map[string]any{"backup": backupOf(m), "target": target, "files": st.Files, "dirs": st.Dirs, "bytes": st.Bytes}
			return ra.print(out, func() {
				fmt.Fprintf(ra.stdout, "restored backup %s into %s: %s, %s, %s\n", m.ID, target,
					plural(st.Files, "file", "files"), plural(st.Dirs, "directory", "directories"), core.FormatSize(st.Bytes))
			})
		})
	})
	return cmd
}

// restoreImage writes an image backup to out through a temporary file in the
// same directory, renamed into place only when complete.
func (ra *repoApp) restoreImage(ctx context.Context, r *repo.Repository, m *format.Manifest, out string, overwrite bool) error {
	if m.Kind != format.KindImage {
		return core.Invalid("backup %s is a file backup: restore it with --target", m.ID)
	}
	out, asQcow2, err := imageOutput(out, overwrite)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".cairn-restore-*")
	if err != nil {
		return fmt.Errorf("creating the output: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if err := tmp.Truncate(m.Image.Size); err != nil {
		return fmt.Errorf("sizing %s: %w", tmpName, err)
	}
	prog, finish := ra.repoProgress("restore")
	wb := atomicfile.NewWriteBehind(tmp, 0)
	err = r.RestoreImage(ctx, m, wb, prog)
	finish()
	if err != nil {
		wb.Stop()
		return diskFull(err, out)
	}
	if err := wb.Sync(); err != nil {
		return diskFull(fmt.Errorf("writing %s: %w", out, err), out)
	}
	if err := tmp.Close(); err != nil {
		return diskFull(fmt.Errorf("writing %s: %w", out, err), out)
	}
	final := tmpName
	if asQcow2 {
		q := tmpName + ".qcow2"
		if err := qemu.Convert(ctx, qemu.ConvertRequest{Source: tmpName, SourceFormat: "raw", Dest: q, DestFormat: "qcow2"}, nil); err != nil {
			os.Remove(q)
			return diskFull(fmt.Errorf("converting to qcow2: %w", err), out)
		}
		os.Remove(tmpName)
		tmpName, final = q, q
	}
	if err := takeOver(final, out); err != nil {
		os.Remove(final)
		return fmt.Errorf("restoring to %s: %w", out, err)
	}
	if err := os.Rename(final, out); err != nil {
		os.Remove(final)
		return fmt.Errorf("moving the restored image into place: %w", err)
	}
	ok = true
	res := map[string]any{"backup": backupOf(m), "file": out, "size": m.Image.Size}
	return ra.print(res, func() {
		fmt.Fprintf(ra.stdout, "restored backup %s to %s (%s)\n", m.ID, out, core.FormatSize(m.Image.Size))
	})
}

// foreignFormats are image file name extensions of formats that restore
// does not write.
var foreignFormats = map[string]string{
	".vmdk": "VMDK", ".vdi": "VDI", ".vhd": "VHD", ".vhdx": "VHDX", ".vpc": "VHD", ".qed": "QED", ".qcow": "qcow (version 1)",
}

// imageOutput checks the --to-file of an image restore before any work: the
// path to write (an existing symbolic link is followed, so that its target
// is replaced, not the link) and whether it is a qcow2 file (named .qcow2)
// rather than raw. The restore writes a new file beside it and renames it
// over it, so anything but a regular file is refused: a block device would
// be replaced by a file in /dev, not written.
func imageOutput(out string, overwrite bool) (string, bool, error) {
	ext := strings.ToLower(filepath.Ext(out))
	if f, ok := foreignFormats[ext]; ok {
		return "", false, core.Invalid("%s: restore writes raw (any name but .qcow2) or qcow2 images, not %s: restore to %s.raw, then convert it with qemu-img convert -O %s",
			out, f, strings.TrimSuffix(out, filepath.Ext(out)), ext[1:])
	}
	fi, err := os.Lstat(out)
	if err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if resolved, rerr := filepath.EvalSymlinks(out); rerr == nil {
			out = resolved
			fi, err = os.Lstat(out)
		}
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return out, ext == ".qcow2", nil
	case err != nil:
		return "", false, fmt.Errorf("restoring to %s: %w", out, err)
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		return "", false, core.Invalid("%s is a block device: --to-file writes an image file; restore to a file, then copy it onto the device (qemu-img convert -n -O raw FILE %s)", out, out)
	case fi.IsDir():
		return "", false, core.Invalid("%s is a directory: give the image file's name (%s), or restore a file backup with --target",
			out, filepath.Join(out, "NAME.raw"))
	case !fi.Mode().IsRegular():
		return "", false, core.Invalid("%s is %s, not a regular file: choose another --to-file", out, describeType(fi.Mode()))
	case !overwrite:
		return "", false, core.Conflict("exists", "%s exists: remove it or use --overwrite", out)
	}
	return out, ext == ".qcow2", nil
}

// takeOver gives the restored image file the mode and owner of the file it
// replaces (an image a VM runs from keeps the permissions it had), or mode
// 0600 when it replaces nothing: a disk image holds everything on the disk.
// An owner that only root may give is left as it is for other users.
func takeOver(file, old string) error {
	fi, err := os.Stat(old)
	if errors.Is(err, fs.ErrNotExist) {
		return os.Chmod(file, 0o600)
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(file, fi.Mode().Perm()); err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := os.Chown(file, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, fs.ErrPermission) {
			return err
		}
	}
	return nil
}

// describeType names the kind of file of a mode that is not a regular file
// (a symbolic link here is one that leads nowhere).
func describeType(m fs.FileMode) string {
	if m&fs.ModeSymlink != 0 {
		return "a symbolic link to nothing"
	}
	return core.DescribeMode(m)
}

// diskFull rewords a no-space error so that it says so plainly.
func diskFull(err error, path string) error {
	if err != nil && strings.Contains(err.Error(), "no space left on device") {
		return fmt.Errorf("restoring to %s: the disk is full (nothing was left in place): %w", path, err)
	}
	return err
}

func (ra *repoApp) catCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cat config | backup ID | index NAME | pack ID | blob ID | tree ID | key ID | locks",
		Short: "Print a repository object, decoded (blob: its plaintext bytes)",
		Args:  cobra.RangeArgs(1, 2),
	}
	cmd.RunE = ra.run(func(ctx context.Context, args []string) error {
		what := args[0]
		if noArg := what == "config" || what == "locks"; noArg != (len(args) == 1) {
			return core.Invalid("usage: cairn repo cat %s", cmd.Use[4:])
		}
		r, err := ra.open(ctx, what == "blob" || what == "tree")
		if err != nil {
			return err
		}
		defer r.Close()
		switch what {
		case "config":
			return writeJSON(ra.stdout, r.Config())
		case "locks":
			locks, err := r.Locks(ctx)
			if err != nil {
				return err
			}
			return writeJSON(ra.stdout, locks)
		case "backup":
			m, err := resolveBackup(ctx, r, args[1], repo.Filter{})
			if err != nil {
				return err
			}
			return writeJSON(ra.stdout, m)
		case "key":
			keys, err := r.Keys(ctx)
			if err != nil {
				return err
			}
			for _, k := range keys {
				if k.ID == args[1] {
					return writeJSON(ra.stdout, k)
				}
			}
			return core.NotFound("no key %q", args[1])
		case "index":
			packs, err := r.IndexFile(ctx, args[1])
			if err != nil {
				return err
			}
			return writeJSON(ra.stdout, packs)
		case "pack":
			id, err := format.ParseID(args[1])
			if err != nil {
				return err
			}
			entries, err := r.PackHeader(ctx, id)
			if err != nil {
				return err
			}
			return writeJSON(ra.stdout, entries)
		case "blob", "tree":
			id, err := format.ParseID(args[1])
			if err != nil {
				return err
			}
			loc, ok := r.Lookup(id)
			if !ok {
				return core.NotFound("no blob %s in the index", id)
			}
			b, err := r.LoadBlob(ctx, loc.Type, id, nil)
			if err != nil {
				return err
			}
			if what == "tree" {
				t, err := filebackup.DecodeTree(b)
				if err != nil {
					return err
				}
				return writeJSON(ra.stdout, t)
			}
			_, err = io.Copy(ra.stdout, bytes.NewReader(b))
			return err
		}
		return core.Invalid("cat: unknown object kind %q: use config, backup, index, pack, blob, tree, key or locks", what)
	})
	return cmd
}
