//go:build linux

package filebackup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/internal/chunker"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
	"github.com/cairn-backup/cairn/internal/uncached"
)

// Backup stores the file trees at paths in repo and returns the id of the
// root tree: one entry per path, named by the path's base name (the entries
// of "/" itself when "/" is given). See the package documentation for what
// is stored, what is skipped, and how errors are handled.
func Backup(ctx context.Context, repo Repository, paths []string, opts BackupOptions) (format.ID, Stats, error) {
	for _, p := range opts.Excludes {
		if _, err := filepath.Match(p, ""); err != nil {
			return format.ID{}, Stats{}, core.Invalid("invalid exclude pattern %q: %v", p, err)
		}
	}
	roots, err := resolveRoots(paths, opts.Excludes)
	if err != nil {
		return format.ID{}, Stats{}, err
	}
	cdc, err := chunker.NewCDC(chunker.DefaultCDCParams())
	if err != nil {
		return format.ID{}, Stats{}, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var parent *Tree
	if !opts.Parent.IsZero() {
		if parent, err = LoadTree(ctx, repo, opts.Parent); err != nil {
			return format.ID{}, Stats{}, fmt.Errorf("loading the parent backup: %w", err)
		}
	}

	skip := map[devIno]string{}
	for _, d := range opts.SkipDirs {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			skip[devIno{st.Dev, st.Ino}] = d
		}
	}
	for _, r := range roots {
		var st unix.Stat_t
		if err := unix.Stat(r.path, &st); err == nil {
			if d, ok := skip[devIno{st.Dev, st.Ino}]; ok {
				return format.ID{}, Stats{}, core.Invalid("backup path %q is %s, a directory left out of backups", r.arg, d)
			}
		}
	}

	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &archiver{
		ctx: actx, cancel: cancel, repo: repo, opts: opts, cdc: cdc, skip: skip,
		jobs:   make(chan *fileJob, 4*workers),
		saves:  make(chan *saveReq, workers),
		links:  make(map[devIno]*linkGroup),
		seen:   make(map[devIno]struct{}),
		users:  make(map[uint32]string),
		groups: make(map[uint32]string),
	}
	stop := startProgress(opts.Progress, &a.c)
	var fileWG, saveWG sync.WaitGroup
	for range workers {
		fileWG.Go(a.fileWorker)
		saveWG.Go(a.saver)
	}

	root := &dirState{path: "the root"}
	root.pending.Store(1)
	walkErr := a.walkRoots(root, roots, parent)
	if walkErr == nil {
		a.release(root)
	}
	close(a.jobs)
	fileWG.Wait()
	close(a.saves)
	saveWG.Wait()
	stop()
	stats := a.c.stats()

	switch {
	case ctx.Err() != nil:
		return format.ID{}, stats, ctx.Err()
	case a.fatalErr() != nil:
		return format.ID{}, stats, a.fatalErr()
	case walkErr != nil:
		return format.ID{}, stats, walkErr
	case a.rootID.IsZero():
		return format.ID{}, stats, core.E(core.KindInternal, "internal", "backup: root tree not saved")
	}
	return a.rootID, stats, nil
}

// rootPath is one path given to Backup.
type rootPath struct {
	arg  string // as given
	path string // absolute and clean
	dir  string // the directory holding it
	name string // its base name; "" for "/", whose entries become the root's
}

// resolveRoots checks the paths: they must exist, and the names they give
// the root tree's entries must be distinct.
func resolveRoots(paths []string, excludes []string) ([]rootPath, error) {
	if len(paths) == 0 {
		return nil, core.Invalid("backup: no paths given")
	}
	owner := make(map[string]string) // root entry name -> the path giving it
	claim := func(name, arg string) error {
		if other, ok := owner[name]; ok {
			return core.Invalid("backup paths %q and %q both give the name %q in the backup: back up their parent or back them up separately", other, arg, name)
		}
		owner[name] = arg
		return nil
	}
	var roots []rootPath
	for _, arg := range paths {
		if arg == "" {
			return nil, core.Invalid("backup: empty path")
		}
		abs, err := filepath.Abs(arg)
		if err != nil {
			return nil, core.Invalid("backup path %q: %v", arg, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(abs, &st); err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				return nil, core.NotFound("backup path %q does not exist", arg)
			}
			return nil, core.E(core.KindInvalid, "unreadable", "backup path %q: %v", arg, err)
		}
		if abs == "/" {
			names, err := readDirNames("/")
			if err != nil {
				return nil, core.E(core.KindInvalid, "unreadable", "backup path %q: %v", arg, err)
			}
			for _, n := range names {
				if !excluded(excludes, n) {
					if err := claim(n, arg); err != nil {
						return nil, err
					}
				}
			}
			roots = append(roots, rootPath{arg: arg, path: "/", dir: "/"})
			continue
		}
		r := rootPath{arg: arg, path: abs, dir: filepath.Dir(abs), name: filepath.Base(abs)}
		if err := claim(r.name, arg); err != nil {
			return nil, err
		}
		roots = append(roots, r)
	}
	slices.SortFunc(roots, func(a, b rootPath) int { return strings.Compare(a.name, b.name) })
	return roots, nil
}

func readDirNames(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func excluded(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := filepath.Match(p, name); ok {
			return true
		}
	}
	return false
}

type devIno struct{ dev, ino uint64 }

// archiver is one running Backup. One goroutine walks the directories (in
// name order) and hands regular files to the file workers, which read and
// chunk them and hand the chunks to the savers (or save a chunk themselves
// when every saver is busy). A directory's tree is encoded and saved by
// whichever goroutine finishes its last pending entry, so the walk never
// waits for content; the trees do not depend on the order in which the
// work completes.
type archiver struct {
	ctx    context.Context
	cancel context.CancelFunc
	repo   Repository
	opts   BackupOptions
	cdc    *chunker.CDC
	c      counters

	jobs  chan *fileJob
	saves chan *saveReq

	fatalMu sync.Mutex
	fatal   error

	linksMu sync.Mutex
	links   map[devIno]*linkGroup // multi-link inodes being or already read

	skip map[devIno]string // SkipDirs

	// Used by the walking goroutine only.
	seen          map[devIno]struct{} // multi-link inodes seen
	users, groups map[uint32]string

	rootID format.ID // set by whoever saves the root tree
}

// dirState is a directory whose tree is not saved yet. pending counts the
// walker's hold (released when the walker has listed the directory), the
// files being read, and the subdirectories not yet saved.
type dirState struct {
	parent  *dirState
	node    *Node // nil for the root tree
	path    string
	entries []*entry // appended by the walker only, read once pending is 0
	pending atomic.Int64
}

type entry struct {
	node *Node
	drop atomic.Bool // the entry could not be backed up
}

// linkGroup is an inode with several names: the first name found is read,
// the others get its content.
type linkGroup struct {
	done    bool
	ok      bool
	content []format.ID
	size    uint64
	waiters []linkWaiter
}

type linkWaiter struct {
	dir     *dirState
	e       *entry
	path    string
	changed bool
}

type fileJob struct {
	dir     *dirState
	e       *entry
	fd      int
	path    string
	changed bool       // the parent has an entry of this name
	group   *linkGroup // non-nil when this is the name read for a link group
}

type saveReq struct {
	chunk  chunker.Chunk
	id     *format.ID
	wg     *sync.WaitGroup
	failed *atomic.Bool
	path   string
}

func (a *archiver) fail(err error) {
	a.fatalMu.Lock()
	if a.fatal == nil {
		a.fatal = err
	}
	a.fatalMu.Unlock()
	a.cancel()
}

func (a *archiver) fatalErr() error {
	a.fatalMu.Lock()
	defer a.fatalMu.Unlock()
	return a.fatal
}

func (a *archiver) walkRoots(root *dirState, roots []rootPath, parent *Tree) error {
	prevOf := func(name string) *Node {
		if parent == nil {
			return nil
		}
		return parent.Find(name)
	}
	for _, r := range roots {
		if r.name == "" { // "/": its entries are the root tree's
			fd, err := openDirNoFollow(unix.AT_FDCWD, "/")
			if err != nil {
				return core.E(core.KindInvalid, "unreadable", "backup path %q: %v", r.arg, err)
			}
			var st unix.Stat_t
			err = unix.Fstat(fd, &st)
			if err == nil {
				err = a.walkEntries(root, fd, "/", parent, st.Dev)
			}
			unix.Close(fd)
			if err != nil {
				return err
			}
			continue
		}
		dirfd, err := unix.Open(r.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return core.E(core.KindInvalid, "unreadable", "backup path %q: %v", r.arg, err)
		}
		err = a.entry(root, dirfd, r.name, r.path, prevOf(r.name), 0, true)
		unix.Close(dirfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// walkEntries backs up the entries of the directory open as fd into d.
func (a *archiver) walkEntries(d *dirState, fd int, path string, prev *Tree, rootDev uint64) error {
	names, err := readDirNamesFd(fd, path)
	if err != nil {
		a.c.addError(path, fmt.Errorf("listing the directory: %w", err))
		return nil
	}
	slices.Sort(names)
	for _, name := range names {
		if excluded(a.opts.Excludes, name) {
			continue
		}
		var pn *Node
		if prev != nil {
			pn = prev.Find(name)
		}
		if err := a.entry(d, fd, name, childPath(path, name), pn, rootDev, false); err != nil {
			return err
		}
	}
	return nil
}

// readDirNamesFd lists the directory open as fd (through a duplicate, which
// an *os.File owns and closes).
func readDirNamesFd(fd int, path string) ([]string, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(nfd), path)
	defer f.Close()
	return f.Readdirnames(-1)
}

func childPath(dir, name string) string {
	if strings.HasSuffix(dir, "/") {
		return dir + name
	}
	return dir + "/" + name
}

// openDirNoFollow opens directory name of dirfd for listing, refusing a
// symlink.
func openDirNoFollow(dirfd int, name string) (int, error) {
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Openat(dirfd, name, flags|unix.O_NOATIME, 0)
		if errors.Is(err, unix.EPERM) {
			fd, err = unix.Openat(dirfd, name, flags, 0)
		}
		return err
	})
	return fd, err
}

// openFileNoFollow opens regular file name of dirfd for reading, with
// O_NOATIME when permitted. O_NONBLOCK keeps a fifo that replaced the file
// since it was examined from blocking the walk.
func openFileNoFollow(dirfd int, name string) (int, error) {
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Openat(dirfd, name, flags|unix.O_NOATIME, 0)
		if errors.Is(err, unix.EPERM) {
			fd, err = unix.Openat(dirfd, name, flags, 0)
		}
		return err
	})
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, errors.New("no longer a regular file")
	}
	return fd, nil
}

func (a *archiver) userName(uid uint32) string {
	if s, ok := a.users[uid]; ok {
		return s
	}
	s := ""
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil && utf8.ValidString(u.Username) {
		s = u.Username
	}
	a.users[uid] = s
	return s
}

func (a *archiver) groupName(gid uint32) string {
	if s, ok := a.groups[gid]; ok {
		return s
	}
	s := ""
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil && utf8.ValidString(g.Name) {
		s = g.Name
	}
	a.groups[gid] = s
	return s
}

func (a *archiver) add(d *dirState, n *Node) *entry {
	e := &entry{node: n}
	d.entries = append(d.entries, e)
	return e
}

// entry backs up entry name of the directory open as dirfd into d. prev is
// the parent backup's node of the same path, if any. It returns only errors
// that end the backup; problems with the entry are counted and the entry is
// left out.
func (a *archiver) entry(d *dirState, dirfd int, name, path string, prev *Node, rootDev uint64, isRoot bool) error {
	if err := a.ctx.Err(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := retryEINTR(func() error { return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
		if isRoot && errors.Is(err, unix.ENOENT) {
			return core.NotFound("backup path %q does not exist", path)
		}
		a.c.addError(path, fmt.Errorf("lstat: %w", err))
		return nil
	}
	if isRoot {
		rootDev = st.Dev
	}
	kind := st.Mode & unix.S_IFMT
	if kind == unix.S_IFSOCK {
		a.c.sockets.Add(1)
		return nil
	}
	n := &Node{
		Name:       name,
		Mode:       st.Mode & 07777,
		UID:        st.Uid,
		GID:        st.Gid,
		User:       a.userName(st.Uid),
		Group:      a.groupName(st.Gid),
		ModTime:    clampTime(timeOf(st.Mtim)),
		ChangeTime: clampTime(timeOf(st.Ctim)),
		Inode:      st.Ino,
		Device:     st.Dev,
		Links:      uint64(st.Nlink),
	}
	xattrs, err := readXattrs(atPath(dirfd, name, path))
	if err != nil {
		a.c.addWarning(path, "extended attributes not read: %v", err)
	}
	n.Xattrs = xattrs

	switch kind {
	case unix.S_IFREG:
		n.Type = TypeFile
		return a.file(d, dirfd, n, path, prev, &st)
	case unix.S_IFDIR:
		if _, ok := a.skip[devIno{st.Dev, st.Ino}]; ok && !isRoot {
			return nil
		}
		n.Type = TypeDir
		return a.dir(d, dirfd, n, path, prev, rootDev)
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, name)
		if err == nil && target == "" {
			err = errors.New("empty target")
		}
		if err != nil {
			a.c.addError(path, fmt.Errorf("readlink: %w", err))
			return nil
		}
		n.Type, n.LinkTarget = TypeSymlink, target
		a.c.symlinks.Add(1)
	case unix.S_IFCHR:
		n.Type, n.Rdev = TypeCharDev, st.Rdev
		a.c.others.Add(1)
	case unix.S_IFBLK:
		n.Type, n.Rdev = TypeBlockDev, st.Rdev
		a.c.others.Add(1)
	case unix.S_IFIFO:
		n.Type = TypeFIFO
		a.c.others.Add(1)
	default:
		a.c.addError(path, fmt.Errorf("unknown file type %#o", kind))
		return nil
	}
	a.add(d, n)
	return nil
}

// dir backs up a directory: its entries are walked now, its tree is saved
// once its last file is read.
func (a *archiver) dir(d *dirState, dirfd int, n *Node, path string, prev *Node, rootDev uint64) error {
	sub := &dirState{parent: d, node: n, path: path}
	sub.pending.Store(1)
	if a.opts.OneFileSystem && n.Device != rootDev {
		// A mount point: stored, empty.
		a.add(d, n)
		d.pending.Add(1)
		a.c.dirs.Add(1)
		a.release(sub)
		return nil
	}
	fd, err := openDirNoFollow(dirfd, n.Name)
	if err != nil {
		a.c.addError(path, fmt.Errorf("opening the directory: %w", err))
		return nil
	}
	defer unix.Close(fd)
	var prevTree *Tree
	if prev != nil && prev.Type == TypeDir {
		prevTree, err = LoadTree(a.ctx, a.repo, prev.Subtree)
		if err != nil {
			if a.ctx.Err() != nil {
				return a.ctx.Err()
			}
			a.c.addWarning(path, "the parent backup's listing could not be loaded, reading every file: %v", err)
			prevTree = nil
		}
	}
	a.c.setCurrent(path)
	a.add(d, n)
	d.pending.Add(1)
	a.c.dirs.Add(1)
	if err := a.walkEntries(sub, fd, path, prevTree, rootDev); err != nil {
		return err
	}
	a.release(sub)
	return nil
}

// file backs up a regular file: unchanged since the parent, it takes the
// parent's content; another name of an inode being read waits for it;
// otherwise a file worker reads it.
func (a *archiver) file(d *dirState, dirfd int, n *Node, path string, prev *Node, st *unix.Stat_t) error {
	n.Size = uint64(st.Size)
	key := devIno{st.Dev, st.Ino}
	multi := st.Nlink > 1
	if multi {
		if _, ok := a.seen[key]; ok {
			a.c.hardlinks.Add(1)
		} else {
			a.seen[key] = struct{}{}
		}
	}
	if prev != nil && prev.Type == TypeFile && prev.Size == n.Size && prev.ModTime.Equal(n.ModTime) &&
		prev.ChangeTime.Equal(n.ChangeTime) && prev.Inode == n.Inode && prev.Device == n.Device {
		n.Content = slices.Clip(prev.Content)
		a.add(d, n)
		a.c.files.Add(1)
		a.c.bytes.Add(int64(n.Size))
		a.c.unchangedFiles.Add(1)
		return nil
	}
	changed := prev != nil
	e := a.add(d, n)
	job := &fileJob{dir: d, e: e, path: path, changed: changed}
	if multi {
		a.linksMu.Lock()
		g := a.links[key]
		switch {
		case g != nil && !g.done:
			g.waiters = append(g.waiters, linkWaiter{dir: d, e: e, path: path, changed: changed})
			d.pending.Add(1)
			a.linksMu.Unlock()
			return nil
		case g != nil && g.ok:
			content, size := g.content, g.size
			a.linksMu.Unlock()
			a.linked(e, content, size, changed)
			return nil
		case g == nil:
			g = &linkGroup{}
			a.links[key] = g
			job.group = g
		}
		// g failed: this name is read on its own.
		a.linksMu.Unlock()
	}
	if testHookBeforeOpen != nil {
		testHookBeforeOpen(path)
	}
	fd, err := openFileNoFollow(dirfd, n.Name)
	if err != nil {
		e.drop.Store(true)
		a.c.addError(path, fmt.Errorf("opening: %w", err))
		a.completeGroup(job, false)
		return nil
	}
	job.fd = fd
	d.pending.Add(1)
	select {
	case a.jobs <- job:
		return nil
	case <-a.ctx.Done():
		unix.Close(fd)
		return a.ctx.Err()
	}
}

// testHookBeforeOpen, set by tests only, runs before a file is opened for
// reading (to make files vanish or grow at that moment).
var testHookBeforeOpen func(path string)

// linked gives a file the content read for another name of its inode.
func (a *archiver) linked(e *entry, content []format.ID, size uint64, changed bool) {
	e.node.Content, e.node.Size = content, size
	a.countFile(size, changed)
}

func (a *archiver) countFile(size uint64, changed bool) {
	a.c.files.Add(1)
	a.c.bytes.Add(int64(size))
	if changed {
		a.c.changedFiles.Add(1)
	} else {
		a.c.newFiles.Add(1)
	}
}

// completeGroup ends the reading of a link group's first name and gives its
// content to the names waiting for it.
func (a *archiver) completeGroup(j *fileJob, ok bool) {
	g := j.group
	if g == nil {
		return
	}
	a.linksMu.Lock()
	g.done, g.ok = true, ok
	if ok {
		g.content, g.size = j.e.node.Content, j.e.node.Size
	}
	ws := g.waiters
	g.waiters = nil
	a.linksMu.Unlock()
	for _, w := range ws {
		switch {
		case ok:
			a.linked(w.e, g.content, g.size, w.changed)
		case a.ctx.Err() == nil:
			w.e.drop.Store(true)
			a.c.addError(w.path, fmt.Errorf("not read: reading %s, another name of the same file, failed", displayPath(j.path)))
		default:
			w.e.drop.Store(true)
		}
		a.release(w.dir)
	}
}

// release drops one pending count of d; the last one saves d's tree, and
// so on up the directories.
func (a *archiver) release(d *dirState) {
	for d != nil {
		if d.pending.Add(-1) != 0 {
			return
		}
		if a.ctx.Err() != nil {
			return
		}
		t := &Tree{Nodes: make([]*Node, 0, len(d.entries))}
		for _, e := range d.entries {
			if !e.drop.Load() {
				t.Nodes = append(t.Nodes, e.node)
			}
		}
		t.Sort()
		b, err := EncodeTree(t)
		if err != nil {
			a.fail(fmt.Errorf("encoding the listing of %s: %w", displayPath(d.path), err))
			return
		}
		id, err := a.repo.SaveBlob(a.ctx, format.TreeBlob, b)
		if err != nil {
			a.fail(fmt.Errorf("saving the listing of %s: %w", displayPath(d.path), err))
			return
		}
		if d.node == nil {
			a.rootID = id
			return
		}
		d.node.Subtree = id
		d = d.parent
	}
}

func (a *archiver) fileWorker() {
	for j := range a.jobs {
		a.readFile(j)
		a.release(j.dir)
	}
}

func (a *archiver) saver() {
	for r := range a.saves {
		a.save(r)
	}
}

// fileReader reads a file for the chunker, counting the bytes and stopping
// when the backup is canceled. It reads without filling the page cache
// (package uncached): what was cached stays, the rest is let go, so a backup
// of a whole tree does not push out what the host caches for others.
type fileReader struct {
	a  *archiver
	fd *uncached.Fd
	n  int64
}

func (r *fileReader) Read(p []byte) (int, error) {
	if err := r.a.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.fd.Pread(p, r.n)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	r.n += int64(n)
	r.a.c.bytesRead.Add(int64(n))
	return n, nil
}

// readFile reads, chunks and saves one file.
func (a *archiver) readFile(j *fileJob) {
	defer unix.Close(j.fd)
	if a.ctx.Err() != nil {
		j.e.drop.Store(true)
		a.completeGroup(j, false)
		return
	}
	a.c.setCurrent(j.path)
	r := &fileReader{a: a, fd: uncached.NewFd(j.fd)}
	s := a.cdc.Scan(r)
	var (
		ids    []*format.ID
		wg     sync.WaitGroup
		failed atomic.Bool
		err    error
	)
	for {
		var c chunker.Chunk
		c, err = s.Next()
		if err != nil {
			break
		}
		id := new(format.ID)
		ids = append(ids, id)
		wg.Add(1)
		req := &saveReq{chunk: c, id: id, wg: &wg, failed: &failed, path: j.path}
		select {
		case a.saves <- req:
		default:
			a.save(req) // every saver is busy: do it here
		}
	}
	wg.Wait()
	n := j.e.node
	switch {
	case failed.Load() || a.ctx.Err() != nil:
		j.e.drop.Store(true)
		a.completeGroup(j, false)
		return
	case err != io.EOF:
		j.e.drop.Store(true)
		a.c.addError(j.path, err)
		a.completeGroup(j, false)
		return
	}
	n.Content = make([]format.ID, len(ids))
	for i, id := range ids {
		n.Content[i] = *id
	}
	if got := uint64(r.n); got != n.Size {
		a.c.addWarning(j.path, "changed size while being read (%d bytes before, %d read): stored what was read", n.Size, got)
		n.Size = got
	}
	a.countFile(n.Size, j.changed)
	a.completeGroup(j, true)
}

// save stores one chunk.
func (a *archiver) save(r *saveReq) {
	defer r.wg.Done()
	defer r.chunk.Release()
	if a.ctx.Err() != nil {
		r.failed.Store(true)
		return
	}
	data := r.chunk.Data
	if data == nil {
		data = make([]byte, r.chunk.Length)
	}
	id, err := a.repo.SaveBlob(a.ctx, format.DataBlob, data)
	if err != nil {
		r.failed.Store(true)
		a.fail(fmt.Errorf("saving content of %s: %w", displayPath(r.path), err))
		return
	}
	*r.id = id
}
