//go:build linux

package filebackup

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hasProc reports whether /proc/self/fd is usable: paths through it name an
// entry relative to an open directory without resolving the directory's path
// again (for the xattr calls, which have no *at form).
var hasProc = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/self/fd")
	return err == nil
})

// atPath returns a path that names entry name of the directory open as
// dirfd, for calls without an *at form. fallback is the entry's full path,
// used when /proc is not mounted. The last component is name, which the
// callers never follow if it is a symlink (the l* xattr calls).
func atPath(dirfd int, name, fallback string) string {
	if hasProc() {
		return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
	}
	return fallback
}

// xattrUnsupported reports whether err means that the file system or the
// entry does not support extended attributes.
func xattrUnsupported(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

// readXattrs returns the extended attributes of path (not following a
// symlink), sorted by name. A file system without xattrs gives none.
func readXattrs(path string) ([]Xattr, error) {
	return listXattrs(
		func(dst []byte) (int, error) { return unix.Llistxattr(path, dst) },
		func(name string, dst []byte) (int, error) { return unix.Lgetxattr(path, name, dst) })
}

func listXattrs(list func([]byte) (int, error), get func(string, []byte) (int, error)) ([]Xattr, error) {
	var buf []byte
	for tries := 0; ; tries++ {
		sz, err := list(nil)
		if err != nil {
			if xattrUnsupported(err) {
				return nil, nil
			}
			return nil, err
		}
		if sz == 0 {
			return nil, nil
		}
		buf = make([]byte, sz)
		n, err := list(buf)
		if errors.Is(err, unix.ERANGE) && tries < 10 {
			continue // the list grew between the calls
		}
		if err != nil {
			return nil, err
		}
		buf = buf[:n]
		break
	}
	var out []Xattr
	for _, name := range strings.Split(string(buf), "\x00") {
		if name == "" {
			continue
		}
		v, err := getXattr(name, get)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the list was read
		}
		if err != nil {
			return nil, err
		}
		out = append(out, Xattr{Name: name, Value: v})
	}
	slices.SortFunc(out, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
	out = slices.CompactFunc(out, func(a, b Xattr) bool { return a.Name == b.Name })
	return out, nil
}

func getXattr(name string, get func(string, []byte) (int, error)) ([]byte, error) {
	for tries := 0; ; tries++ {
		sz, err := get(name, nil)
		if err != nil {
			return nil, err
		}
		if sz == 0 {
			return []byte{}, nil
		}
		v := make([]byte, sz)
		n, err := get(name, v)
		if errors.Is(err, unix.ERANGE) && tries < 10 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return v[:n], nil
	}
}

// readlinkat returns the target of symlink name in dirfd.
func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
		if size > 1<<20 {
			return "", unix.ENAMETOOLONG
		}
	}
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

func timeOf(ts unix.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec) }

// futimens sets the access and modification times of the file open as fd
// (utimensat with a NULL path, which Linux applies to fd itself).
func futimens(fd int, atime, mtime time.Time) error {
	ts := [2]unix.Timespec{timespec(atime), timespec(mtime)}
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// utimensNoFollow sets the times of entry name of dirfd, not following a
// symlink.
func utimensNoFollow(dirfd int, name string, atime, mtime time.Time) error {
	return unix.UtimesNanoAt(dirfd, name, []unix.Timespec{timespec(atime), timespec(mtime)}, unix.AT_SYMLINK_NOFOLLOW)
}

// retryEINTR repeats f while it fails with EINTR.
func retryEINTR(f func() error) error {
	for {
		err := f()
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
