package filebackup

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cairn-backup/cairn/internal/repo/format"
)

// Repository is what file backups need of a backup repository.
type Repository interface {
	// SaveBlob stores plaintext as a blob of type t unless the repository already holds a blob
	// with the same id, and returns the id. It does not keep buf after returning.
	// Safe for concurrent use; it may block while uploads catch up.
	SaveBlob(ctx context.Context, t format.BlobType, buf []byte) (format.ID, error)
	// LoadBlob returns the plaintext of blob id of type t, verified (a damaged blob is a core.KindCorrupt error
	// naming the id). It may reuse dst's storage. Safe for concurrent use.
	LoadBlob(ctx context.Context, t format.BlobType, id format.ID, dst []byte) ([]byte, error)
}

// BackupOptions tune Backup. The zero value is a full backup of everything
// below the paths with GOMAXPROCS workers.
type BackupOptions struct {
	// Parent is the root tree of an earlier backup of the same paths, zero if
	// none. A file whose size, mtime, ctime, inode and device equal those of
	// the parent's entry at the same path is not read again: its content ids
	// are reused.
	Parent format.ID
	// Excludes are glob patterns (filepath.Match) matched against the base
	// name of every entry below the given paths; a match is skipped with
	// everything below it. The given paths themselves are never excluded.
	Excludes []string
	// Workers is how many files are read and chunked at once, and how many
	// chunks are saved at once; <= 0 means runtime.GOMAXPROCS(0).
	Workers int
	// Progress, when set, is called about ten times a second and once at the
	// end, never concurrently.
	Progress func(Progress)
	// OneFileSystem keeps the walk on the file system of each given path: a
	// directory on another file system (a mount point) is stored, empty.
	OneFileSystem bool
	// SkipDirs are directories left out wherever the walk meets them
	// (matched by device and inode, so also through another path): the
	// repository being written, for one. A missing one is ignored; a given
	// path that is one of them is an error.
	SkipDirs []string
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Include lists paths inside the backup ("etc/ssh" and "/etc/ssh" are the
	// same) to restore, each with everything below it and with the
	// directories above it; empty restores everything. An include that
	// names nothing in the backup is a core.KindNotFound error, raised before
	// anything is written.
	Include []string
	// Overwrite replaces existing non-directory entries of the target. Without
	// it an existing entry at the place of a file, symlink, device or fifo is
	// an error naming the path, and the entry is left untouched. Existing
	// directories are always merged into.
	Overwrite bool
	// Owners restores the owning user and group ids (needs root).
	Owners bool
	// Progress, when set, is called about ten times a second and once at the
	// end, never concurrently.
	Progress func(Progress)
	// Workers is how many files are written at once; <= 0 means
	// runtime.GOMAXPROCS(0). Chunks of a file are loaded ahead in parallel.
	Workers int
}

// Progress is a snapshot of a running Backup or Restore.
type Progress struct {
	Files     int64 // regular files done (every hard link name counts)
	Dirs      int64 // directories
	Others    int64 // symlinks, devices, fifos
	Bytes     int64 // logical size of the files done
	BytesRead int64 // backup: bytes read from files; restore: bytes loaded from the repository
	// Backup only, compared with the parent.
	NewFiles, ChangedFiles, UnchangedFiles int64
	Warnings, Errors                       int64
	CurrentPath                            string // a path being worked on
}

// maxSamples is how many error and warning messages Stats keeps.
const maxSamples = 20

// Stats are the final counts of a Backup or a Restore.
type Stats struct {
	Files     int64 // regular file names (each hard link name counts)
	Dirs      int64 // directories below the root
	Symlinks  int64
	Others    int64 // devices and fifos
	Sockets   int64 // backup: sockets, which are skipped
	Hardlinks int64 // backup: file names whose inode was already seen; restore: hard links created
	Bytes     int64 // logical size of the files
	BytesRead int64 // backup: bytes read from files; restore: bytes loaded from the repository
	// Backup only: files not in the parent, in it but changed, and
	// unchanged (not read).
	NewFiles, ChangedFiles, UnchangedFiles int64
	// Warnings are problems that lost nothing essential: a file that changed
	// while read, an owner or attribute that could not be set, a device that
	// could not be created without privileges.
	Warnings       int64
	WarningSamples []string // the first 20 warnings, "path: message"
	// Errors are entries that could not be backed up or restored.
	Errors       int64
	ErrorSamples []string // the first 20 errors, "path: message"
}

// counters are the live counts behind Progress and Stats.
type counters struct {
	files, dirs, symlinks, others, sockets, hardlinks atomic.Int64
	bytes, bytesRead                                  atomic.Int64
	newFiles, changedFiles, unchangedFiles            atomic.Int64
	warnings, errors                                  atomic.Int64

	cur atomic.Pointer[string]

	mu          sync.Mutex
	errSamples  []string
	warnSamples []string
}

func (c *counters) setCurrent(path string) { c.cur.Store(&path) }

func (c *counters) addError(path string, err error) {
	c.errors.Add(1)
	c.mu.Lock()
	if len(c.errSamples) < maxSamples {
		c.errSamples = append(c.errSamples, displayPath(path)+": "+err.Error())
	}
	c.mu.Unlock()
}

func (c *counters) addWarning(path string, format string, args ...any) {
	c.warnings.Add(1)
	c.mu.Lock()
	if len(c.warnSamples) < maxSamples {
		c.warnSamples = append(c.warnSamples, displayPath(path)+": "+fmt.Sprintf(format, args...))
	}
	c.mu.Unlock()
}

func (c *counters) progress() Progress {
	p := Progress{
		Files: c.files.Load(), Dirs: c.dirs.Load(), Others: c.symlinks.Load() + c.others.Load(),
		Bytes: c.bytes.Load(), BytesRead: c.bytesRead.Load(),
		NewFiles: c.newFiles.Load(), ChangedFiles: c.changedFiles.Load(), UnchangedFiles: c.unchangedFiles.Load(),
		Warnings: c.warnings.Load(), Errors: c.errors.Load(),
	}
	if s := c.cur.Load(); s != nil {
		p.CurrentPath = *s
	}
	return p
}

func (c *counters) stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{
		Files: c.files.Load(), Dirs: c.dirs.Load(), Symlinks: c.symlinks.Load(), Others: c.others.Load(),
		Sockets: c.sockets.Load(), Hardlinks: c.hardlinks.Load(),
		Bytes: c.bytes.Load(), BytesRead: c.bytesRead.Load(),
		NewFiles: c.newFiles.Load(), ChangedFiles: c.changedFiles.Load(), UnchangedFiles: c.unchangedFiles.Load(),
		Warnings: c.warnings.Load(), WarningSamples: append([]string(nil), c.warnSamples...),
		Errors: c.errors.Load(), ErrorSamples: append([]string(nil), c.errSamples...),
	}
}

// progressInterval is how often Progress is called.
const progressInterval = 100 * time.Millisecond

// startProgress calls fn with snapshots of c every progressInterval until the
// returned stop is called; stop waits for the last periodic call to return
// and then makes the final call. With a nil fn it does nothing.
func startProgress(fn func(Progress), c *counters) (stop func()) {
	if fn == nil {
		return func() {}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fn(c.progress())
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-exited
			fn(c.progress())
		})
	}
}

// displayPath quotes a path for a message when it is not printable UTF-8.
func displayPath(p string) string {
	if !utf8.ValidString(p) {
		return strconv.Quote(p)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return strconv.Quote(p)
		}
	}
	return p
}

// CodeNoSuchPath is the code of the error a restore returns, before writing
// anything, when an include path names nothing in the backup.
const CodeNoSuchPath = "no_such_path"
