package mount

import (
	"io/fs"
	"path"
	"syscall"
	"time"
	"unsafe"

	"github.com/cairn-backup/cairn/internal/fsimage"
)

// mknod creates the fifo or device file fi at tmp, relative to the
// directory opened through the Root (so no symbolic link is followed).
func (c *copier) mknod(tmp string, fi fsimage.FileInfo) error {
	dir, err := c.root.Open(rel(path.Dir(tmp)))
	if err != nil {
		return err
	}
	defer dir.Close()
	mode := uint32(fi.Mode.Perm())
	switch fi.Mode.Type() {
	case fs.ModeNamedPipe:
		mode |= syscall.S_IFIFO
	case fs.ModeDevice:
		mode |= syscall.S_IFBLK
	default:
		mode |= syscall.S_IFCHR
	}
	return syscall.Mknodat(int(dir.Fd()), path.Base(tmp), mode, int(fi.Rdev))
}

// atSymlinkNoFollow is Linux's AT_SYMLINK_NOFOLLOW (unexported in syscall).
const atSymlinkNoFollow = 0x100

// symlinkTime sets a symbolic link's own times (utimensat with
// AT_SYMLINK_NOFOLLOW, relative to its directory opened through the Root).
func (c *copier) symlinkTime(tmp string, t time.Time) error {
	dir, err := c.root.Open(rel(path.Dir(tmp)))
	if err != nil {
		return err
	}
	defer dir.Close()
	name, err := syscall.BytePtrFromString(path.Base(tmp))
	if err != nil {
		return err
	}
	ts := [2]syscall.Timespec{syscall.NsecToTimespec(t.UnixNano()), syscall.NsecToTimespec(t.UnixNano())}
	_, _, errno := syscall.Syscall6(syscall.SYS_UTIMENSAT, dir.Fd(), uintptr(unsafe.Pointer(name)),
		uintptr(unsafe.Pointer(&ts[0])), atSymlinkNoFollow, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
