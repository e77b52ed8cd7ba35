//go:build linux

package filebackup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/internal/chunker"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// Restore writes the backup with root tree root into the directory target
// (created if missing). Nothing is ever created, written or changed outside
// target, whatever the trees hold: every name is one validated path
// component, and every directory is opened relative to its parent without
// following symlinks. See the package documentation for the details.
//
// Problems with single entries (an existing file without Overwrite, a
// damaged chunk) are counted in Stats, the other entries are restored, and
// the returned error names the first one. A full disk, a read-only target,
// a repository that cannot be read, or ctx's end stop the restore at once.
func Restore(ctx context.Context, repo Repository, root format.ID, target string, opts RestoreOptions) (Stats, error) {
	if root.IsZero() {
		return Stats{}, core.Invalid("restore: no root tree given")
	}
	if target == "" {
		return Stats{}, core.Invalid("restore: no target directory given")
	}
	includes, err := parseIncludes(opts.Include)
	if err != nil {
		return Stats{}, err
	}
	rootTree, err := LoadTree(ctx, repo, root)
	if err != nil {
		return Stats{}, err
	}
	if err := checkIncludes(ctx, repo, rootTree, includes); err != nil {
		return Stats{}, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return Stats{}, restoreIOError(target, "creating the target directory", err)
	}
	rootFd, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stats{}, restoreIOError(target, "opening the target directory", err)
	}
	defer unix.Close(rootFd)
	walkFd, err := unix.FcntlInt(uintptr(rootFd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return Stats{}, restoreIOError(target, "opening the target directory", err)
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &restorer{
		ctx: rctx, cancel: cancel, repo: repo, opts: opts,
		target: target, rootFd: rootFd, includes: includes,
		jobs:   make(chan *restoreJob, 2*workers),
		tokens: make(chan struct{}, 2*workers),
		window: max(1, min(workers, 4)),
		links:  make(map[devIno]*restoredFile),
	}
	stop := startProgress(opts.Progress, &r.c)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range r.jobs {
				r.runFile(j)
			}
		})
	}
	sel := selAll
	if len(includes) > 0 {
		sel = selSome
	}
	rootH := newDirHandle(walkFd)
	r.restoreTree(rootH, nil, rootTree, sel)
	rootH.release()
	close(r.jobs)
	wg.Wait()
	if r.ctx.Err() == nil {
		r.restoreLinks()
	}
	if r.ctx.Err() == nil {
		r.restoreDirMeta()
	}
	stop()
	stats := r.c.stats()
	switch {
	case ctx.Err() != nil:
		return stats, ctx.Err()
	case r.fatalErr() != nil:
		return stats, r.fatalErr()
	case r.firstErr != nil:
		what := "entries were"
		if stats.Errors == 1 {
			what = "entry was"
		}
		return stats, &core.Error{
			Kind: core.KindOf(r.firstErr), Code: core.CodeOf(r.firstErr),
			Message: fmt.Sprintf("restore: %d %s not restored", stats.Errors, what), Err: r.firstErr,
		}
	}
	return stats, nil
}

type include struct {
	arg   string
	comps []string
}

// parseIncludes splits the include paths into names; "" and "/" stand for
// everything.
func parseIncludes(args []string) ([]include, error) {
	var out []include
	for _, arg := range args {
		inc := include{arg: arg}
		for _, c := range strings.Split(arg, "/") {
			switch c {
			case "", ".":
				continue
			case "..":
				return nil, core.Invalid("include path %q: '..' is not allowed", arg)
			}
			if strings.IndexByte(c, 0) >= 0 {
				return nil, core.Invalid("include path %q contains a NUL byte", arg)
			}
			inc.comps = append(inc.comps, c)
		}
		out = append(out, inc)
	}
	return out, nil
}

// checkIncludes makes sure that every include names something in the
// backup, before anything is written.
func checkIncludes(ctx context.Context, repo Repository, root *Tree, includes []include) error {
	for _, inc := range includes {
		t := root
		for i, c := range inc.comps {
			n := t.Find(c)
			if n == nil {
				return core.E(core.KindNotFound, CodeNoSuchPath, "include path %q is not in the backup", inc.arg)
			}
			if i == len(inc.comps)-1 {
				break
			}
			if n.Type != TypeDir {
				return core.E(core.KindNotFound, CodeNoSuchPath, "include path %q is not in the backup (%q is a %s)", inc.arg, strings.Join(inc.comps[:i+1], "/"), n.Type)
			}
			var err error
			if t, err = LoadTree(ctx, repo, n.Subtree); err != nil {
				return fmt.Errorf("include path %q: %w", inc.arg, err)
			}
		}
	}
	return nil
}

type selection int

const (
	selNone selection = iota
	selSome           // a directory above an include: restored, with only part of its content
	selAll            // restored with everything below
)

func hasPrefix(s, prefix []string) bool {
	return len(prefix) <= len(s) && slices.Equal(s[:len(prefix)], prefix)
}

func (r *restorer) selectPath(comps []string) selection {
	res := selNone
	for _, inc := range r.includes {
		if hasPrefix(comps, inc.comps) {
			return selAll
		}
		if hasPrefix(inc.comps, comps) {
			res = selSome
		}
	}
	return res
}

// dirHandle is an open directory of the target shared by the walk and the
// file workers; the last release closes it.
type dirHandle struct {
	fd   int
	refs atomic.Int32
}

func newDirHandle(fd int) *dirHandle {
	h := &dirHandle{fd: fd}
	h.refs.Store(1)
	return h
}

func (h *dirHandle) acquire() { h.refs.Add(1) }

func (h *dirHandle) release() {
	if h.refs.Add(-1) == 0 {
		unix.Close(h.fd)
	}
}

// restorer is one running Restore. One goroutine walks the trees, creating
// directories, symlinks, devices and fifos itself and handing regular files
// to the workers; hard links and the directories' metadata follow when all
// files are written.
type restorer struct {
	ctx      context.Context
	cancel   context.CancelFunc
	repo     Repository
	opts     RestoreOptions
	target   string
	rootFd   int
	includes []include
	c        counters

	jobs   chan *restoreJob
	tokens chan struct{} // bounds the chunks loaded and not yet written
	window int           // chunks of one file loaded ahead
	bufs   sync.Pool

	mu       sync.Mutex
	fatal    error
	firstErr error

	// Used by the walking goroutine only (and after the workers are done).
	links        map[devIno]*restoredFile
	pendingLinks []pendingLink
	dirs         []dirMeta
}

// restoredFile is the first name of a multi-link inode in this restore.
type restoredFile struct {
	comps []string
	node  *Node
	ok    atomic.Bool // written successfully
}

type pendingLink struct {
	first *restoredFile
	comps []string
	node  *Node
}

type dirMeta struct {
	comps []string
	node  *Node
}

type restoreJob struct {
	h     *dirHandle
	comps []string
	node  *Node
	first *restoredFile // set when this is the first name of an inode
}

func (r *restorer) fail(err error) {
	r.mu.Lock()
	if r.fatal == nil {
		r.fatal = err
	}
	r.mu.Unlock()
	r.cancel()
}

func (r *restorer) fatalErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fatal
}

// display returns the target path of an entry, for messages.
func (r *restorer) display(comps []string) string {
	return filepath.Join(r.target, strings.Join(comps, "/"))
}

// loadError marks an error of the repository.
type loadError struct{ err error }

func (e *loadError) Error() string { return e.err.Error() }
func (e *loadError) Unwrap() error { return e.err }

// isFatal reports whether err must end the whole restore: the target
// cannot take more data, or the repository cannot be read (as opposed to a
// single damaged or missing blob).
func isFatal(err error) bool {
	switch core.CodeOf(err) {
	case "no_space", "quota_exceeded", "read_only":
		return true
	}
	var le *loadError
	if errors.As(err, &le) {
		k := core.KindOf(le.err)
		return k != core.KindCorrupt && k != core.KindNotFound
	}
	return false
}

// entryError records that the entry at path could not be restored, or ends
// the restore when err is fatal.
func (r *restorer) entryError(path string, err error) {
	if r.ctx.Err() != nil {
		return // canceled, or stopped by a fatal error, which is reported
	}
	if isFatal(err) {
		r.fail(err)
		return
	}
	r.c.addError(path, err)
	r.mu.Lock()
	if r.firstErr == nil {
		r.firstErr = &core.Error{Kind: core.KindOf(err), Code: core.CodeOf(err), Message: displayPath(path), Err: err}
	}
	r.mu.Unlock()
}

// restoreIOError turns a system error on path into a message naming it; a
// full disk, an exceeded quota and a read-only file system get codes of
// their own (and end a restore).
func restoreIOError(path, what string, err error) error {
	var code, msg string
	switch {
	case errors.Is(err, unix.ENOSPC):
		code, msg = "no_space", "the disk is full"
	case errors.Is(err, unix.EDQUOT):
		code, msg = "quota_exceeded", "disk quota exceeded"
	case errors.Is(err, unix.EROFS):
		code, msg = "read_only", "read-only file system"
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
	return &core.Error{Kind: core.KindInternal, Code: code,
		Message: fmt.Sprintf("restoring %s: %s: %s", displayPath(path), what, msg), Err: err}
}

func conflict(format string, args ...any) error {
	return core.Conflict("exists", format, args...)
}

// restoreTree restores the nodes of t into the directory h, which is comps
// below the target.
func (r *restorer) restoreTree(h *dirHandle, comps []string, t *Tree, sel selection) {
	for _, n := range t.Nodes {
		if r.ctx.Err() != nil {
			return
		}
		cs := append(comps[:len(comps):len(comps)], n.Name)
		s := sel
		if s != selAll {
			s = r.selectPath(cs)
		}
		if s == selNone || (s == selSome && n.Type != TypeDir) {
			continue
		}
		path := r.display(cs)
		if err := CheckName(n.Name); err != nil { // DecodeTree checked already; never trust one layer
			r.entryError(path, err)
			continue
		}
		r.c.setCurrent(path)
		switch n.Type {
		case TypeDir:
			r.restoreDir(h, cs, n, s, path)
		case TypeFile:
			r.queueFile(h, cs, n)
		case TypeSymlink:
			if err := r.restoreSymlink(h.fd, n, path); err != nil {
				r.entryError(path, err)
			} else {
				r.c.symlinks.Add(1)
			}
		case TypeCharDev, TypeBlockDev, TypeFIFO:
			if err := r.restoreSpecial(h.fd, n, path); err != nil {
				r.entryError(path, err)
			}
		default:
			r.entryError(path, core.Corrupt("unknown node type %q", string(n.Type)))
		}
	}
}

func (r *restorer) restoreDir(h *dirHandle, comps []string, n *Node, sel selection, path string) {
	fd, err := r.mkdir(h.fd, n.Name, path)
	if err != nil {
		r.entryError(path, err)
		return
	}
	r.dirs = append(r.dirs, dirMeta{comps: comps, node: n})
	r.c.dirs.Add(1)
	sub := newDirHandle(fd)
	defer sub.release()
	t, err := LoadTree(r.ctx, r.repo, n.Subtree)
	if err != nil {
		r.entryError(path, &loadError{err})
		return
	}
	r.restoreTree(sub, comps, t, sel)
}

// mkdir creates directory name in dirfd (or takes the existing one) and
// opens it, never following a symlink.
func (r *restorer) mkdir(dirfd int, name, path string) (int, error) {
	err := unix.Mkdirat(dirfd, name, 0o700)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, restoreIOError(path, "creating the directory", err)
	}
	fd, err := openDirNoFollow(dirfd, name)
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
		return -1, restoreIOError(path, "opening the directory", err)
	}
	// Something else than a directory is in the way.
	if !r.opts.Overwrite {
		return -1, conflict("already exists and is not a directory (restore with overwrite to replace it)")
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil {
		return -1, restoreIOError(path, "removing the existing entry", err)
	}
	if err := unix.Mkdirat(dirfd, name, 0o700); err != nil {
		return -1, restoreIOError(path, "creating the directory", err)
	}
	fd, err = openDirNoFollow(dirfd, name)
	if err != nil {
		return -1, restoreIOError(path, "opening the directory", err)
	}
	return fd, nil
}

// queueFile hands a regular file to the workers, or notes it as a hard link
// to a file of this restore.
func (r *restorer) queueFile(h *dirHandle, comps []string, n *Node) {
	j := &restoreJob{h: h, comps: comps, node: n}
	if n.Links > 1 {
		key := devIno{n.Device, n.Inode}
		first := r.links[key]
		switch {
		case first == nil:
			j.first = &restoredFile{comps: comps, node: n}
			r.links[key] = j.first
		case first.node.Size == n.Size && slices.Equal(first.node.Content, n.Content):
			r.pendingLinks = append(r.pendingLinks, pendingLink{first: first, comps: comps, node: n})
			return
		}
		// Same inode number but other content: not the same file, written
		// on its own.
	}
	h.acquire()
	select {
	case r.jobs <- j:
	case <-r.ctx.Done():
		h.release()
	}
}

func (r *restorer) runFile(j *restoreJob) {
	defer j.h.release()
	if r.ctx.Err() != nil {
		return
	}
	path := r.display(j.comps)
	r.c.setCurrent(path)
	if err := r.writeFile(j.h.fd, j.node, path); err != nil {
		r.entryError(path, err)
		return
	}
	if j.first != nil {
		j.first.ok.Store(true)
	}
	r.c.files.Add(1)
	r.c.bytes.Add(int64(j.node.Size))
}

// checkAbsent returns a conflict error if name exists in dirfd.
func checkAbsent(dirfd int, name, path string) error {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		return conflict("already exists (restore with overwrite to replace it)")
	case errors.Is(err, unix.ENOENT):
		return nil
	}
	return restoreIOError(path, "checking for an existing entry", err)
}

// tempName returns a fresh temporary name for name.
func tempName(name string) string {
	if len(name) > 200 {
		name = name[:200] // stay below NAME_MAX; the random part keeps it unique
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return "." + name + ".cairn-restore-" + hex.EncodeToString(rnd[:])
}

// writeFile writes regular file n into dirfd under a temporary name, checks
// its size, sets its metadata, and renames it into place. On any error the
// temporary is removed.
func (r *restorer) writeFile(dirfd int, n *Node, path string) error {
	if !r.opts.Overwrite {
		if err := checkAbsent(dirfd, n.Name, path); err != nil {
			return err
		}
	}
	var (
		tmp string
		fd  int
		err error
	)
	for tries := 0; ; tries++ {
		tmp = tempName(n.Name)
		err = retryEINTR(func() (err error) {
			fd, err = unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
			return err
		})
		if !errors.Is(err, unix.EEXIST) || tries > 10 {
			break
		}
	}
	if err != nil {
		return restoreIOError(path, "creating a temporary file", err)
	}
	placed := false
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
		if !placed {
			unix.Unlinkat(dirfd, tmp, 0)
		}
	}()
	size, err := r.writeContent(fd, n, path)
	if err != nil {
		return err
	}
	if size != n.Size {
		return core.Corrupt("content is %d bytes, the backup says %d", size, n.Size)
	}
	if err := r.setMetaFd(fd, n, path); err != nil {
		return err
	}
	err = unix.Close(fd)
	fd = -1
	if err != nil {
		return restoreIOError(path, "writing", err)
	}
	if err := r.rename(dirfd, tmp, n.Name, path); err != nil {
		return err
	}
	placed = true
	return nil
}

// rename moves the temporary tmp to name, replacing an existing
// non-directory only with Overwrite.
func (r *restorer) rename(dirfd int, tmp, name, path string) error {
	var err error
	if r.opts.Overwrite {
		err = unix.Renameat(dirfd, tmp, dirfd, name)
	} else {
		err = unix.Renameat2(dirfd, tmp, dirfd, name, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			// No RENAME_NOREPLACE on this file system: check, then rename.
			if err = checkAbsent(dirfd, name, path); err != nil {
				return err
			}
			err = unix.Renameat(dirfd, tmp, dirfd, name)
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST) && !r.opts.Overwrite:
		return conflict("already exists (restore with overwrite to replace it)")
	case errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY):
		return conflict("already exists and is a directory")
	}
	return restoreIOError(path, "renaming the temporary file into place", err)
}

type loadResult struct {
	data []byte
	err  error
	id   format.ID
}

func (r *restorer) getBuf() []byte {
	if b, ok := r.bufs.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return nil
}

func (r *restorer) putBuf(b []byte) {
	if cap(b) >= 64<<10 && cap(b) <= 16<<20 {
		b = b[:0]
		r.bufs.Put(&b)
	}
}

// writeContent loads n's chunks, up to r.window ahead and in parallel, and
// writes them in order, leaving holes for zero blocks. It returns the size
// written.
func (r *restorer) writeContent(fd int, n *Node, path string) (uint64, error) {
	fctx, fcancel := context.WithCancel(r.ctx)
	defer fcancel()
	window := make(chan chan loadResult, r.window)
	go func() {
		defer close(window)
		for _, id := range n.Content {
			select {
			case r.tokens <- struct{}{}:
			case <-fctx.Done():
				return
			}
			ch := make(chan loadResult, 1)
			select {
			case window <- ch:
			case <-fctx.Done():
				<-r.tokens
				return
			}
			go func() {
				data, err := r.repo.LoadBlob(fctx, format.DataBlob, id, r.getBuf())
				ch <- loadResult{data: data, err: err, id: id}
			}()
		}
	}()
	w := sparseWriter{fd: fd}
	var (
		total uint64
		err   error
	)
	for ch := range window {
		res := <-ch
		if err == nil {
			switch {
			case res.err != nil:
				err = &loadError{fmt.Errorf("loading chunk %s: %w", res.id.Short(), res.err)}
			case total+uint64(len(res.data)) > n.Size:
				err = core.Corrupt("content is longer than the %d bytes the backup says", n.Size)
			default:
				total += uint64(len(res.data))
				r.c.bytesRead.Add(int64(len(res.data)))
				if werr := w.write(res.data); werr != nil {
					err = restoreIOError(path, "writing", werr)
				}
			}
			if err != nil {
				fcancel()
			}
		}
		r.putBuf(res.data)
		<-r.tokens
	}
	if err == nil && fctx.Err() != nil {
		err = fctx.Err()
	}
	if err != nil {
		return 0, err
	}
	if err := w.finish(); err != nil {
		return 0, restoreIOError(path, "writing", err)
	}
	return total, nil
}

// holeBlock is the granularity of holes: an aligned block of this many zero
// bytes is skipped instead of written.
const holeBlock = 4096

// sparseWriter writes a new (empty) file sequentially, skipping aligned
// all-zero blocks, which read back as zeros from the holes they leave.
type sparseWriter struct {
	fd    int
	off   int64  // bytes fed so far
	carry []byte // the fed bytes of the current, incomplete block
}

func (w *sparseWriter) write(p []byte) error {
	if len(w.carry) > 0 {
		k := min(holeBlock-len(w.carry), len(p))
		w.carry = append(w.carry, p[:k]...)
		p = p[k:]
		w.off += int64(k)
		if len(w.carry) < holeBlock {
			return nil
		}
		if err := w.block(w.carry, w.off-holeBlock); err != nil {
			return err
		}
		w.carry = w.carry[:0]
	}
	full := len(p) / holeBlock * holeBlock
	start := -1 // start of the run of non-zero blocks being collected
	for i := 0; i < full; i += holeBlock {
		if chunker.IsZero(p[i : i+holeBlock]) {
			if start >= 0 {
				if err := pwriteAll(w.fd, p[start:i], w.off+int64(start)); err != nil {
					return err
				}
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		if err := pwriteAll(w.fd, p[start:full], w.off+int64(start)); err != nil {
			return err
		}
	}
	w.off += int64(full)
	if rest := p[full:]; len(rest) > 0 {
		if w.carry == nil {
			w.carry = make([]byte, 0, holeBlock)
		}
		w.carry = append(w.carry, rest...)
		w.off += int64(len(rest))
	}
	return nil
}

func (w *sparseWriter) block(b []byte, off int64) error {
	if chunker.IsZero(b) {
		return nil
	}
	return pwriteAll(w.fd, b, off)
}

// finish writes the last partial block and sets the file's size (which
// also makes the trailing hole).
func (w *sparseWriter) finish() error {
	if len(w.carry) > 0 {
		if err := w.block(w.carry, w.off-int64(len(w.carry))); err != nil {
			return err
		}
		w.carry = w.carry[:0]
	}
	return retryEINTR(func() error { return unix.Ftruncate(w.fd, w.off) })
}

func pwriteAll(fd int, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := unix.Pwrite(fd, p, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// permissionDenied reports whether err means missing privileges.
func permissionDenied(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}

// mode returns the mode to give n. Without Owners, the entry belongs to
// whoever restores, so setuid and setgid are kept only where that user or
// group is the node's own: a restore by root must not turn somebody's
// setuid file into a setuid-root one.
func (r *restorer) mode(n *Node, path string) uint32 {
	m := n.Mode
	if r.opts.Owners || m&0o6000 == 0 || n.Type == TypeDir {
		return m
	}
	if m&0o4000 != 0 && n.UID != uint32(os.Geteuid()) {
		m &^= 0o4000
	}
	if m&0o2000 != 0 && n.GID != uint32(os.Getegid()) {
		m &^= 0o2000
	}
	if m != n.Mode {
		r.c.addWarning(path, "setuid/setgid bits cleared: the owner %d:%d is not restored", n.UID, n.GID)
	}
	return m
}

// setMetaFd sets the metadata of an open file or directory: extended
// attributes, owner (with Owners), mode, then times (atime = mtime).
func (r *restorer) setMetaFd(fd int, n *Node, path string) error {
	for _, x := range n.Xattrs {
		if err := unix.Fsetxattr(fd, x.Name, x.Value, 0); err != nil {
			r.c.addWarning(path, "extended attribute %q not restored: %v", x.Name, err)
		}
	}
	if r.opts.Owners {
		if err := unix.Fchown(fd, int(n.UID), int(n.GID)); err != nil {
			if !permissionDenied(err) {
				return restoreIOError(path, "setting the owner", err)
			}
			r.c.addWarning(path, "owner %d:%d not restored: %v", n.UID, n.GID, err)
		}
	}
	if err := unix.Fchmod(fd, r.mode(n, path)); err != nil {
		return restoreIOError(path, "setting the mode", err)
	}
	if err := futimens(fd, n.ModTime, n.ModTime); err != nil {
		return restoreIOError(path, "setting the times", err)
	}
	return nil
}

// setMetaAt sets the metadata of entry name of dirfd (a symlink, device or
// fifo, which are not opened), never following a symlink.
func (r *restorer) setMetaAt(dirfd int, n *Node, path string) error {
	if len(n.Xattrs) > 0 {
		p := atPath(dirfd, n.Name, path)
		for _, x := range n.Xattrs {
			if err := unix.Lsetxattr(p, x.Name, x.Value, 0); err != nil {
				r.c.addWarning(path, "extended attribute %q not restored: %v", x.Name, err)
			}
		}
	}
	if r.opts.Owners {
		if err := unix.Fchownat(dirfd, n.Name, int(n.UID), int(n.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if !permissionDenied(err) {
				return restoreIOError(path, "setting the owner", err)
			}
			r.c.addWarning(path, "owner %d:%d not restored: %v", n.UID, n.GID, err)
		}
	}
	if n.Type != TypeSymlink {
		mode := r.mode(n, path)
		err := unix.Fchmodat(dirfd, n.Name, mode, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
			err = unix.Fchmodat(dirfd, n.Name, mode, 0) // no fchmodat2: the entry was just made, not a symlink
		}
		if err != nil {
			return restoreIOError(path, "setting the mode", err)
		}
	}
	if err := utimensNoFollow(dirfd, n.Name, n.ModTime, n.ModTime); err != nil {
		return restoreIOError(path, "setting the times", err)
	}
	return nil
}

// makeEntry runs create, and when the name is taken replaces a
// non-directory with Overwrite, or reports a conflict.
func (r *restorer) makeEntry(dirfd int, name, path, what string, create func() error) error {
	err := create()
	if errors.Is(err, unix.EEXIST) {
		if !r.opts.Overwrite {
			return conflict("already exists (restore with overwrite to replace it)")
		}
		if err := unix.Unlinkat(dirfd, name, 0); err != nil {
			if errors.Is(err, unix.EISDIR) {
				return conflict("already exists and is a directory")
			}
			return restoreIOError(path, "removing the existing entry", err)
		}
		err = create()
	}
	if err != nil {
		return restoreIOError(path, what, err)
	}
	return nil
}

func (r *restorer) restoreSymlink(dirfd int, n *Node, path string) error {
	err := r.makeEntry(dirfd, n.Name, path, "creating the symlink", func() error {
		return unix.Symlinkat(n.LinkTarget, dirfd, n.Name)
	})
	if err != nil {
		return err
	}
	return r.setMetaAt(dirfd, n, path)
}

func (r *restorer) restoreSpecial(dirfd int, n *Node, path string) error {
	var kind uint32
	switch n.Type {
	case TypeCharDev:
		kind = unix.S_IFCHR
	case TypeBlockDev:
		kind = unix.S_IFBLK
	default:
		kind = unix.S_IFIFO
	}
	err := r.makeEntry(dirfd, n.Name, path, "creating the "+string(n.Type), func() error {
		return unix.Mknodat(dirfd, n.Name, kind|0o600, int(n.Rdev))
	})
	if err != nil {
		if permissionDenied(err) {
			r.c.addWarning(path, "%s not created: %v (restore as root)", n.Type, errors.Unwrap(err))
			return nil
		}
		return err
	}
	r.c.others.Add(1)
	return r.setMetaAt(dirfd, n, path)
}

// openBeneath opens the directory comps below the target without following
// any symlink: openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS where the
// kernel has it, else one openat with O_NOFOLLOW per name.
func (r *restorer) openBeneath(comps []string) (int, error) {
	if len(comps) == 0 {
		return unix.FcntlInt(uintptr(r.rootFd), unix.F_DUPFD_CLOEXEC, 0)
	}
	for _, c := range comps {
		if err := CheckName(c); err != nil {
			return -1, err
		}
	}
	if !noOpenat2.Load() {
		how := unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		}
		var fd int
		err := retryEINTR(func() (err error) {
			fd, err = unix.Openat2(r.rootFd, strings.Join(comps, "/"), &how)
			return err
		})
		if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EPERM) {
			return fd, err
		}
		noOpenat2.Store(true) // an old kernel, or a seccomp filter
	}
	cur := r.rootFd
	for _, c := range comps {
		fd, err := openDirNoFollow(cur, c)
		if cur != r.rootFd {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}

var noOpenat2 atomic.Bool

// restoreLinks makes the hard links noted by the walk, once every file is
// written. A name whose first name was not restored gets its own copy.
func (r *restorer) restoreLinks() {
	for _, l := range r.pendingLinks {
		if r.ctx.Err() != nil {
			return
		}
		path := r.display(l.comps)
		r.c.setCurrent(path)
		newDir, err := r.openBeneath(l.comps[:len(l.comps)-1])
		if err != nil {
			r.entryError(path, restoreIOError(path, "opening the directory", err))
			continue
		}
		linked := false
		if l.first.ok.Load() {
			linked, err = r.link(newDir, l, path)
		}
		if err == nil && !linked {
			err = r.writeFile(newDir, l.node, path)
		}
		unix.Close(newDir)
		if err != nil {
			r.entryError(path, err)
			continue
		}
		if linked {
			r.c.hardlinks.Add(1)
		}
		r.c.files.Add(1)
		r.c.bytes.Add(int64(l.node.Size))
	}
}

// link makes l a hard link of its first name. It returns false (and no
// error) when the file system cannot link them, so that a copy is written.
func (r *restorer) link(newDir int, l pendingLink, path string) (bool, error) {
	fc := l.first.comps
	oldDir, err := r.openBeneath(fc[:len(fc)-1])
	if err != nil {
		return false, restoreIOError(path, "opening the directory of the first name", err)
	}
	defer unix.Close(oldDir)
	err = r.makeEntry(newDir, l.node.Name, path, "creating the hard link", func() error {
		// flags 0: a symlink at the old name would be linked itself, never followed.
		return unix.Linkat(oldDir, fc[len(fc)-1], newDir, l.node.Name, 0)
	})
	if err != nil {
		if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EMLINK) || permissionDenied(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// restoreDirMeta sets the directories' metadata after their content,
// deepest first.
func (r *restorer) restoreDirMeta() {
	for i := len(r.dirs) - 1; i >= 0; i-- {
		if r.ctx.Err() != nil {
			return
		}
		d := r.dirs[i]
		path := r.display(d.comps)
		fd, err := r.openBeneath(d.comps)
		if err != nil {
			r.entryError(path, restoreIOError(path, "opening the directory", err))
			continue
		}
		err = r.setMetaFd(fd, d.node, path)
		unix.Close(fd)
		if err != nil {
			r.entryError(path, err)
		}
	}
}
