// Package uncached reads files without filling the page cache: a backup
// reads a disk image or a file tree once, and what it read should not push
// out what the host caches for others (its virtual machines, say).
//
// Reads use preadv2 with RWF_DONTCACHE (Linux 6.14 and later, on file
// systems that support it, such as ext4 and XFS): pages the read brings in
// are dropped once copied out, so the next read reuses them; pages already
// cached are read from the cache and stay. On a virtual machine whose freed
// memory goes back to the host, this is also much cheaper: reading a 2 GiB
// image that is not cached took 1.1-1.3 s instead of 3.3-4.2 s (most of it
// system time spent faulting fresh pages in). Where the kernel or the file
// system refuses the flag, reads are ordinary reads.
package uncached

import (
	"errors"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// rwfDontcache is RWF_DONTCACHE (include/uapi/linux/fs.h).
const rwfDontcache = 0x80

// Fd reads a file descriptor without filling the page cache. It is safe
// for concurrent use; the descriptor stays the caller's to close.
type Fd struct {
	fd int
	// plain is set once the kernel refused RWF_DONTCACHE for this file.
	plain atomic.Bool
}

// Supported reports whether the kernel reads fd without caching (it takes
// RWF_DONTCACHE for it); where it does not, reads are ordinary ones.
func Supported(fd int) bool {
	_, err := unix.Preadv2(fd, [][]byte{make([]byte, 1)}, 0, rwfDontcache)
	return err == nil
}

// NewFd returns a reader of fd.
func NewFd(fd int) *Fd { return &Fd{fd: fd} }

// Pread reads into p at off once, as pread(2) does: it returns 0 and no
// error at the end of the file, and may read less than len(p).
func (u *Fd) Pread(p []byte, off int64) (int, error) {
	for {
		var n int
		var err error
		if u.plain.Load() {
			n, err = unix.Pread(u.fd, p, off)
		} else {
			n, err = unix.Preadv2(u.fd, [][]byte{p}, off, rwfDontcache)
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
				// An older kernel, or a file system without the flag:
				// read this file the ordinary way from now on.
				u.plain.Store(true)
				continue
			}
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return max(n, 0), err
	}
}

// File reads an open file without filling the page cache. It is an
// io.ReaderAt, safe for concurrent use like *os.File.
type File struct {
	f  *os.File
	fd Fd
}

// New returns a reader of f. f stays the caller's to close, and must not be
// closed while a read runs.
func New(f *os.File) *File { return &File{f: f, fd: Fd{fd: int(f.Fd())}} }

// ReadAt implements io.ReaderAt, as (*os.File).ReadAt does: it reads
// len(p) bytes unless the file ends first (then io.EOF) or fails.
func (u *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &os.PathError{Op: "readat", Path: u.f.Name(), Err: errors.New("negative offset")}
	}
	n := 0
	for n < len(p) {
		m, err := u.fd.Pread(p[n:], off+int64(n))
		if err != nil {
			return n, &os.PathError{Op: "read", Path: u.f.Name(), Err: err}
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}
