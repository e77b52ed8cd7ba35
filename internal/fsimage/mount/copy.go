package mount

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
)

// CopyOptions adjusts CopyOut.
type CopyOptions struct {
	// Overwrite replaces existing non-directory entries of the target.
	// Without it an existing entry where a file, symlink, device or fifo goes
	// is an error naming the path, and the entry is left as it is. Existing
	// directories are always merged into.
	Overwrite bool
	// NoOwners leaves owners alone even when running as root. Without root,
	// owners are never set (files belong to the user running the copy).
	NoOwners bool
}

// Stats counts what CopyOut did.
type Stats struct {
	Files     int64 // regular files written
	Dirs      int64 // directories copied (created or merged into)
	Symlinks  int64
	HardLinks int64 // names made as hard links of a file copied before
	Specials  int64 // fifos and device files created
	Skipped   int64 // devices without root, sockets
	Bytes     int64 // logical size of the files written
	// Warnings are things that lost nothing essential (a device skipped
	// without root, a time that could not be set); Errors are entries that
	// could not be copied. Each keeps its first 20 messages.
	Warnings       int64
	WarningSamples []string
	Errors         int64
	ErrorSamples   []string
}

const maxSamples = 20

// CopyOut copies the paths includes of fsys (absolute or relative to the
// image's root; "/" for everything; directories with all they hold) into
// the directory target, created if missing, recreating each path under it:
// "/etc/hosts" becomes target/etc/hosts. The directories above an include
// are created with the mode, owner and time of those in the image.
//
// Files keep their mode (setuid, setgid and sticky bits included), their
// modification time, and, when running as root, their owner; holes stay
// holes (the FS's holes, and runs of 4 KiB of zeros). Symbolic links are
// copied as links, hard links between copied names as hard links, fifos
// always, device files only as root (counted as skipped otherwise), sockets
// never. Each file is written under a temporary name in its directory and
// renamed into place when complete. An include that is itself a symbolic
// link is copied as the link; symbolic links before its last component are
// followed inside the image (fsimage.Resolve), never on the host. The
// target directory's own mode, owner and times are left alone.
//
// Nothing is written outside target, whatever the image holds: every write
// goes through an os.Root of target, which refuses to follow a symbolic
// link out of it; names from the image that are not single path components
// ("..", "a/b", NUL) are refused; a directory seen twice (a hard-linked
// directory, a loop) is copied once.
//
// An include missing from the image is a core.KindNotFound error raised
// before anything is written. Problems with single entries are counted in
// Stats and the other entries are copied; the error then names the first.
// A full or read-only target stops the copy at once.
func CopyOut(fsys fsimage.FS, includes []string, target string, opts CopyOptions) (Stats, error) {
	if len(includes) == 0 {
		return Stats{}, core.Invalid("copy out: no paths to copy (\"/\" copies everything)")
	}
	if target == "" {
		return Stats{}, core.Invalid("copy out: no target directory")
	}
	type job struct{ dest, src string }
	var jobs []job
	for _, inc := range includes {
		dest := path.Clean("/" + inc)
		src, err := fsimage.Resolve(fsys, dest, false)
		if err != nil {
			if core.IsNotFound(err) {
				return Stats{}, &core.Error{Kind: core.KindNotFound, Code: "not_found",
					Message: fmt.Sprintf("copy out: %s is not in the image", inc), Err: err}
			}
			return Stats{}, fmt.Errorf("copy out: %s: %w", inc, err)
		}
		jobs = append(jobs, job{dest, src})
	}
	// An include inside another one is already copied by it.
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].dest < jobs[j].dest })
	var kept []job
	for _, j := range jobs {
		if !slices.ContainsFunc(kept, func(k job) bool { return within(j.dest, k.dest) }) {
			kept = append(kept, j)
		}
	}

	if err := os.MkdirAll(target, 0o755); err != nil {
		return Stats{}, fmt.Errorf("copy out: creating the target directory: %w", err)
	}
	root, err := os.OpenRoot(target)
	if err != nil {
		return Stats{}, fmt.Errorf("copy out: opening the target directory: %w", err)
	}
	defer root.Close()
	c := &copier{
		fsys:   fsys,
		root:   root,
		opts:   opts,
		owners: geteuid() == 0 && !opts.NoOwners,
		asRoot: geteuid() == 0,
		links:  map[uint64]string{},
		dirs:   map[uint64]bool{},
		buf:    make([]byte, 1<<20),
	}
	for _, j := range kept {
		if err := c.parents(j.dest); err != nil {
			c.entryError(j.dest, err)
			continue
		}
		fi, err := fsys.Lstat(j.src)
		if err != nil {
			c.entryError(j.dest, err)
			continue
		}
		c.copyEntry(j.src, j.dest, fi)
		if c.fatal != nil {
			break
		}
	}
	c.finishDirs()
	if c.fatal != nil {
		return c.stats, c.fatal
	}
	if c.firstErr != nil {
		return c.stats, fmt.Errorf("copy out: %d entries could not be copied, the first: %w", c.stats.Errors, c.firstErr)
	}
	return c.stats, nil
}

// geteuid is os.Geteuid; tests replace it.
var geteuid = os.Geteuid

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

type copier struct {
	fsys   fsimage.FS
	root   *os.Root
	opts   CopyOptions
	owners bool // set uid and gid
	asRoot bool // may create devices
	links  map[uint64]string
	dirs   map[uint64]bool // directory inodes copied, against loops
	done   []dirAttrs      // directories to finish, children first
	buf    []byte

	stats    Stats
	firstErr error
	fatal    error
}

// dirAttrs are a copied directory's attributes, set once all copying is done
// (a read-only directory must stay writable until then).
type dirAttrs struct {
	dest string
	fi   fsimage.FileInfo
}

// rel turns an image path into a name for the Root.
func rel(dest string) string {
	if dest == "/" {
		return "."
	}
	return dest[1:]
}

func (c *copier) warn(dest, format string, args ...any) {
	c.stats.Warnings++
	if len(c.stats.WarningSamples) < maxSamples {
		c.stats.WarningSamples = append(c.stats.WarningSamples, dest+": "+fmt.Sprintf(format, args...))
	}
}

// entryError records a failed entry; errors of the target that will fail
// every other entry too (no space, read-only) stop the copy.
func (c *copier) entryError(dest string, err error) {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS) {
		c.fatal = fmt.Errorf("copy out: %s: %w", dest, err)
		return
	}
	c.stats.Errors++
	if c.firstErr == nil {
		c.firstErr = fmt.Errorf("%s: %w", dest, err)
	}
	if len(c.stats.ErrorSamples) < maxSamples {
		c.stats.ErrorSamples = append(c.stats.ErrorSamples, dest+": "+err.Error())
	}
}

// parents creates the directories above dest, with the attributes of the
// image's directories they stand for.
func (c *copier) parents(dest string) error {
	var comps []string
	for d := path.Dir(dest); d != "/"; d = path.Dir(d) {
		comps = append(comps, d)
	}
	slices.Reverse(comps)
	for _, d := range comps {
		created, err := c.mkdir(d)
		if err != nil {
			return err
		}
		if !created {
			continue
		}
		src, err := fsimage.Resolve(c.fsys, d, true)
		if err != nil {
			return err
		}
		fi, err := c.fsys.Lstat(src)
		if err != nil {
			return err
		}
		c.done = append(c.done, dirAttrs{d, fi})
	}
	return nil
}

// mkdir creates directory dest (private until finishDirs), or accepts an
// existing directory.
func (c *copier) mkdir(dest string) (created bool, err error) {
	err = c.root.Mkdir(rel(dest), 0o700)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return false, err
	}
	fi, lerr := c.root.Lstat(rel(dest))
	if lerr != nil {
		return false, lerr
	}
	if fi.IsDir() {
		return false, nil
	}
	if !c.opts.Overwrite {
		return false, core.Conflict("exists", "%s exists in the target and is not a directory", dest)
	}
	if err := c.root.Remove(rel(dest)); err != nil {
		return false, err
	}
	return true, c.root.Mkdir(rel(dest), 0o700)
}

func (c *copier) copyEntry(src, dest string, fi fsimage.FileInfo) {
	if fi.Mode.IsDir() {
		c.copyDir(src, dest, fi)
		return
	}
	if err := c.checkAbsent(dest); err != nil {
		c.entryError(dest, err)
		return
	}
	if fi.Nlink > 1 {
		if first, ok := c.links[fi.Inode]; ok && first != dest {
			if err := c.hardLink(first, dest); err != nil {
				c.entryError(dest, err)
				return
			}
			c.stats.HardLinks++
			return
		}
	}
	var err error
	switch fi.Mode.Type() {
	case 0:
		err = c.copyFile(src, dest, fi)
	case fs.ModeSymlink:
		err = c.copySymlink(src, dest, fi)
	case fs.ModeNamedPipe, fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		if fi.Mode.Type() != fs.ModeNamedPipe && !c.asRoot {
			c.stats.Skipped++
			c.warn(dest, "device file not created: that needs root")
			return
		}
		err = c.copySpecial(dest, fi)
	default:
		c.stats.Skipped++
		c.warn(dest, "%s not copied", core.DescribeMode(fi.Mode))
		return
	}
	if err != nil {
		c.entryError(dest, err)
		return
	}
	if fi.Nlink > 1 {
		c.links[fi.Inode] = dest
	}
}

// checkAbsent fails when something is at dest and Overwrite is off.
func (c *copier) checkAbsent(dest string) error {
	fi, err := c.root.Lstat(rel(dest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return core.Conflict("exists", "%s exists in the target as a directory", dest)
	}
	if !c.opts.Overwrite {
		return core.Conflict("exists", "%s exists in the target (Overwrite replaces it)", dest)
	}
	return nil
}

func (c *copier) copyDir(src, dest string, fi fsimage.FileInfo) {
	if c.dirs[fi.Inode] {
		c.entryError(dest, core.Corrupt("directory inode %d appears a second time in the image (a loop?); copied once", fi.Inode))
		return
	}
	c.dirs[fi.Inode] = true
	if _, err := c.mkdir(dest); err != nil {
		c.entryError(dest, err)
		return
	}
	c.stats.Dirs++
	entries, err := c.fsys.ReadDir(src)
	if err != nil {
		c.entryError(dest, err)
	}
	for _, e := range entries {
		if !fsimage.ValidName(e.Name) {
			c.entryError(dest, core.Corrupt("entry %q is not a valid file name", e.Name))
			continue
		}
		c.copyEntry(path.Join(src, e.Name), path.Join(dest, e.Name), e)
		if c.fatal != nil {
			return
		}
	}
	if dest != "/" {
		c.done = append(c.done, dirAttrs{dest, fi})
	}
}

// finishDirs sets the attributes of the copied directories, children
// before parents.
func (c *copier) finishDirs() {
	// Deepest first: a parent that loses its search permission must come
	// after its children.
	sort.SliceStable(c.done, func(i, j int) bool {
		return strings.Count(c.done[i].dest, "/") > strings.Count(c.done[j].dest, "/")
	})
	for _, d := range c.done {
		name := rel(d.dest)
		if c.owners {
			if err := c.root.Lchown(name, int(d.fi.UID), int(d.fi.GID)); err != nil {
				c.warn(d.dest, "setting the owner: %v", err)
			}
		}
		if err := c.root.Chmod(name, d.fi.Mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			c.warn(d.dest, "setting the mode: %v", err)
		}
		if err := c.root.Chtimes(name, d.fi.ModTime, d.fi.ModTime); err != nil {
			c.warn(d.dest, "setting the time: %v", err)
		}
	}
}

// tempName returns a fresh name next to dest for a file being made.
func tempName(dest string) string {
	var b [8]byte
	rand.Read(b[:])
	return path.Join(path.Dir(dest), ".cairn-tmp-"+hex.EncodeToString(b[:]))
}

// place renames the finished tmp to dest, or removes it on failure.
func (c *copier) place(tmp, dest string, err error) error {
	if err == nil {
		err = c.root.Rename(rel(tmp), rel(dest))
	}
	if err != nil {
		c.root.Remove(rel(tmp))
	}
	return err
}

func (c *copier) hardLink(first, dest string) error {
	tmp := tempName(dest)
	return c.place(tmp, dest, c.root.Link(rel(first), rel(tmp)))
}

func (c *copier) copyFile(src, dest string, fi fsimage.FileInfo) error {
	in, err := c.fsys.Open(src)
	if err != nil {
		return err
	}
	tmp := tempName(dest)
	out, err := c.root.OpenFile(rel(tmp), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = c.writeContent(out, in)
	if err == nil && c.owners {
		err = out.Chown(int(fi.UID), int(fi.GID))
	}
	if err == nil {
		err = out.Chmod(fi.Mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky))
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = c.root.Chtimes(rel(tmp), fi.ModTime, fi.ModTime)
	}
	if err = c.place(tmp, dest, err); err != nil {
		return err
	}
	c.stats.Files++
	c.stats.Bytes += in.Size()
	return nil
}

// holeBlock is the unit of zeros CopyOut leaves as a hole.
const holeBlock = 4096

// writeContent copies in to out, skipping the holes in's FS reports and
// aligned 4 KiB blocks of zeros, then sets out's size.
func (c *copier) writeContent(out *os.File, in fsimage.File) error {
	size := in.Size()
	sparse, _ := in.(fsimage.SparseFile)
	for off := int64(0); off < size; {
		start, end := off, size
		if sparse != nil {
			var err error
			if start, end, err = sparse.NextData(off); err != nil {
				return err
			}
			if start >= size {
				break
			}
			if start < off || end <= start || end > size {
				return core.Corrupt("the image reports data at [%d, %d) after %d in a file of %d bytes", start, end, off, size)
			}
		}
		for pos := start; pos < end; {
			n := int(min(int64(len(c.buf)), end-pos))
			m, err := in.ReadAt(c.buf[:n], pos)
			if m < n {
				if err == nil || errors.Is(err, io.EOF) {
					err = core.Corrupt("file ends at %d, before its size %d", pos+int64(m), size)
				}
				return err
			}
			if err := writeNonZero(out, c.buf[:n], pos); err != nil {
				return err
			}
			pos += int64(n)
		}
		off = end
	}
	return out.Truncate(size)
}

// writeNonZero writes b at off, leaving out the aligned blocks of zeros.
func writeNonZero(out *os.File, b []byte, off int64) error {
	for i := 0; i < len(b); {
		// The block [i, j) ends at the next block boundary of the file.
		j := min(len(b), i+holeBlock-int((off+int64(i))%holeBlock))
		if isZero(b[i:j]) {
			i = j
			continue
		}
		k := j
		for k < len(b) {
			next := min(len(b), k+holeBlock)
			if isZero(b[k:next]) {
				break
			}
			k = next
		}
		if _, err := out.WriteAt(b[i:k], off+int64(i)); err != nil {
			return err
		}
		i = k
	}
	return nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func (c *copier) copySymlink(src, dest string, fi fsimage.FileInfo) error {
	target, err := c.fsys.Readlink(src)
	if err != nil {
		return err
	}
	tmp := tempName(dest)
	err = c.root.Symlink(target, rel(tmp))
	if err == nil && c.owners {
		err = c.root.Lchown(rel(tmp), int(fi.UID), int(fi.GID))
	}
	if err == nil {
		if terr := c.symlinkTime(tmp, fi.ModTime); terr != nil {
			c.warn(dest, "setting the time of the link: %v", terr)
		}
	}
	if err = c.place(tmp, dest, err); err != nil {
		return err
	}
	c.stats.Symlinks++
	return nil
}

func (c *copier) copySpecial(dest string, fi fsimage.FileInfo) error {
	tmp := tempName(dest)
	err := c.mknod(tmp, fi)
	if err == nil && c.owners {
		err = c.root.Lchown(rel(tmp), int(fi.UID), int(fi.GID))
	}
	if err == nil {
		err = c.root.Chmod(rel(tmp), fi.Mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
	}
	if err == nil {
		err = c.root.Chtimes(rel(tmp), fi.ModTime, fi.ModTime)
	}
	if err = c.place(tmp, dest, err); err != nil {
		return err
	}
	c.stats.Specials++
	return nil
}
