// Package local is a blob.Store on a local directory: object "data/ab/cd" is
// the file ROOT/data/ab/cd.
//
// Save writes a hidden temporary file (".tmp-NAME-RANDOM") in the object's
// directory, fsyncs it, renames it over the object and fsyncs the directory,
// so a crash or power loss leaves either the old state or the whole new
// object, never a partial one. Temporary files never match a valid name, so
// List ignores them; RemoveTemp deletes those a crash left behind. A full
// disk fails the Save with an error that names the object and wraps
// syscall.ENOSPC; the temporary file is removed.
//
// Once an object of dropCacheMin bytes or more is on disk, Save asks the
// kernel to drop its pages from the page cache (posix_fadvise DONTNEED):
// packs are written once and read rarely, so a backup does not push out what
// the host's page cache holds for others (its virtual machines, say), and
// the pages it frees are the ones its next pack reuses, which on a virtual
// machine costs far less than fresh memory. Small objects (index objects,
// manifests, locks) are read back soon and stay cached.
//
// Every method may be called concurrently, also from several processes on one
// directory. Nothing is retried: local errors are not transient. Remove does
// not fsync the directory (a removal lost in a crash only leaves garbage that
// a later prune collects) and never removes directories.
package local

import (
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
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/core"
)

// File and directory modes of new objects. Repository contents are encrypted,
// but names and sizes are not: keep them to the owner.
const (
	fileMode = 0o600
	dirMode  = 0o700
)

const tempPrefix = ".tmp-"

// dropCacheMin is the size from which a saved object leaves the page cache.
const dropCacheMin = 1 << 20

// Store is a directory of objects.
type Store struct {
	root string
}

var _ blob.Store = (*Store)(nil)

// Open returns the store rooted at dir. A missing dir is created when create
// is true (repository init) and is an error of kind core.KindNotFound
// otherwise.
func Open(dir string, create bool) (*Store, error) {
	if dir == "" {
		return nil, core.Invalid("local blob store: empty directory path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local blob store %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		if err := mkdirAllSynced(abs); err != nil {
			return nil, fmt.Errorf("creating blob store directory %s: %w", abs, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		return nil, &core.Error{Kind: core.KindNotFound, Code: "not_found",
			Message: fmt.Sprintf("blob store directory %s does not exist (create the repository first)", abs), Err: err}
	case err != nil:
		return nil, fmt.Errorf("blob store directory %s: %w", abs, err)
	case !fi.IsDir():
		return nil, core.Invalid("blob store location %s is not a directory", abs)
	}
	return &Store{root: abs}, nil
}

// Root returns the store's absolute directory.
func (s *Store) Root() string { return s.root }

func (s *Store) path(name string) string {
	return filepath.Join(s.root, filepath.FromSlash(name))
}

// Save implements blob.Store.
func (s *Store) Save(ctx context.Context, name string, r io.Reader, size int64) (err error) {
	if err := blob.ValidName(name); err != nil {
		return err
	}
	if size < 0 {
		return core.Invalid("saving blob %s: negative size %d", name, size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	final := s.path(name)
	dir := filepath.Dir(final)
	if err := mkdirAllSynced(dir); err != nil {
		return saveError(name, err)
	}
	f, err := os.CreateTemp(dir, tempPrefix+path.Base(name)+"-*")
	if err != nil {
		return saveError(name, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(fileMode); err != nil {
		return saveError(name, err)
	}
	if err := writeAll(ctx, f, r, size, name); err != nil {
		return saveError(name, err)
	}
	if err := f.Sync(); err != nil {
		return saveError(name, err)
	}
	if size >= dropCacheMin {
		// Advice only: the pages are clean after the fsync, and a failure
		// changes nothing but the cache.
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
	if err := f.Close(); err != nil {
		return saveError(name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return saveError(name, err)
	}
	if err := syncDir(dir); err != nil {
		// The object is complete under its name; only its durability is in
		// doubt. Report it: the caller must not believe it is on disk.
		return saveError(name, err)
	}
	return nil
}

// saveError names the object and explains a full disk.
func saveError(name string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("saving blob %s: %w", name, err)
	}
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("saving blob %s: the disk is full, nothing was stored: %w", name, err)
	}
	if errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("saving blob %s: disk quota exceeded, nothing was stored: %w", name, err)
	}
	return fmt.Errorf("saving blob %s: %w", name, err)
}

// Load implements blob.Store.
func (s *Store) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	f, size, err := s.openRegular(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := blob.CheckRange(name, offset, length, size); err != nil {
		_ = f.Close()
		return nil, err
	}
	if length == 0 {
		length = size - offset
	}
	// The file is never written in place (Save renames a new one over it),
	// so the open file keeps exactly these bytes while we read.
	return &fileReader{
		Reader: blob.ContextReader(ctx, io.NewSectionReader(f, offset, length)),
		f:      f,
	}, nil
}

type fileReader struct {
	io.Reader
	f *os.File
}

func (r *fileReader) Close() error { return r.f.Close() }

// readError maps a missing file (or a directory standing where a parent
// would be) to blob.NotExist.
func (s *Store) readError(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return blob.NotExist(name)
	}
	return fmt.Errorf("reading blob %s: %w", name, err)
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, name string) (blob.Info, error) {
	if err := blob.ValidName(name); err != nil {
		return blob.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	fi, err := os.Stat(s.path(name))
	if err != nil {
		return blob.Info{}, s.readError(name, err)
	}
	if !fi.Mode().IsRegular() {
		return blob.Info{}, blob.NotExist(name)
	}
	return blob.Info{Name: name, Size: fi.Size()}, nil
}

// Remove implements blob.Store. unlink(2) refuses directories, so a name that
// is a directory counts as a missing object and nothing is removed.
func (s *Store) Remove(ctx context.Context, name string) error {
	if err := blob.ValidName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := syscall.Unlink(s.path(name))
	if err == nil || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) {
		return nil
	}
	return fmt.Errorf("removing blob %s: %w", name, &os.PathError{Op: "unlink", Path: s.path(name), Err: err})
}

// List implements blob.Store. It walks only the directories that can hold
// matching names.
func (s *Store) List(ctx context.Context, prefix string, fn func(blob.Info) error) error {
	if err := blob.ValidPrefix(prefix); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	start := s.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = s.path(prefix[:i])
	}
	var fnErr error
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == start && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) {
				return filepath.SkipAll // nothing stored under the prefix
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if d.IsDir() {
			if p == start || p == s.root {
				return nil
			}
			// Descend only where names can still match the prefix.
			if !strings.HasPrefix(name+"/", prefix) && !strings.HasPrefix(prefix, name+"/") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(name, prefix) || blob.ValidName(name) != nil {
			return nil // temporary files, foreign files, other prefixes
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(blob.Info{Name: name, Size: fi.Size()}); err != nil {
			fnErr = err
			return err
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
			return err
		}
		return fmt.Errorf("listing blobs %q in %s: %w", prefix, s.root, err)
	}
	return nil
}

// Close implements blob.Store.
func (s *Store) Close() error { return nil }

// RemoveTemp deletes the temporary files of Saves that never finished (a
// crash, a kill) and that are older than olderThan, so that Saves running now
// in other processes are left alone. It returns how many it removed.
func (s *Store) RemoveTemp(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	removed := 0
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed++
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("removing temporary files in %s: %w", s.root, err)
	}
	return removed, nil
}

// mkdirAllSynced creates dir and its missing parents, fsyncing each parent
// after adding an entry to it, so a new directory survives a crash together
// with the objects that a caller then puts in it.
func mkdirAllSynced(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return &os.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSynced(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, dirMode); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		// A concurrent Save made it and may not have synced parent yet.
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ListsConsistently reports true: a file renamed into place or removed
// is seen so by the next directory listing.
func (s *Store) ListsConsistently() bool { return true }

var _ blob.Opener = (*Store)(nil)

// Open implements blob.Opener: an open file, which keeps its bytes while
// Save renames another over its name or Remove unlinks it.
func (s *Store) Open(ctx context.Context, name string) (blob.ObjectReader, error) {
	f, size, err := s.openRegular(ctx, name)
	if err != nil {
		return nil, err
	}
	return &openFile{File: f, size: size}, nil
}

// openRegular opens the file of object name and returns its size; a
// missing object, or anything but a regular file, is blob.NotExist.
func (s *Store) openRegular(ctx context.Context, name string) (*os.File, int64, error) {
	if err := blob.ValidName(name); err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(s.path(name))
	if err != nil {
		return nil, 0, s.readError(name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("loading blob %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, 0, blob.NotExist(name)
	}
	return f, fi.Size(), nil
}

type openFile struct {
	*os.File
	size int64
}

func (o *openFile) Size() int64 { return o.size }

// writeAll copies the size bytes of r into f. Bytes already in memory (a
// pack) go down in one write, not through io.Copy's 32 KiB buffer.
func writeAll(ctx context.Context, f *os.File, r io.Reader, size int64, name string) error {
	if br, ok := r.(*blob.BytesReader); ok && int64(br.Len()) == size {
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err := f.Write(br.Bytes())
		return err
	}
	_, err := io.Copy(f, blob.SizedReader(blob.ContextReader(ctx, r), size, name))
	return err
}
