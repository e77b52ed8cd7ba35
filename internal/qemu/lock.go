package qemu

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/internal/core"
)

// QEMU's image locking: a QEMU process (qemu-system-*, qemu-img,
// qemu-storage-daemon ...) that opens an image file holds open file
// description (OFD) read locks on single bytes of it: byte 100+i for each
// permission i it uses, byte 200+i for each permission it does not let others
// have. Before using a permission it checks byte 200+i for a lock of
// another process; before refusing one to others, byte 100+i. Permission 0
// is a consistent read, 1 is write. A qemu-storage-daemon with a writable
// qcow2 node holds bytes 100, 101, 103, 201 and 203 (QEMU 7.2).
const (
	lockPermBase   = 100
	lockSharedBase = 200
	permConsistent = 0
	permWrite      = 1
)

// LockImageForReading makes f, an image file opened for reading, safe to
// read as a whole, the way qemu-img does: it takes QEMU's locks for a
// consistent read that does not let others write (so that no VM starts
// writing to the image meanwhile), and fails with a conflict (code "in_use")
// when another process already has the image open
// for writing, such as a running VM. The locks belong to f's open file
// description and end when it is closed. A file system without OFD locks
// leaves the image unlocked and unchecked.
func LockImageForReading(f *os.File) error {
	for _, b := range []int64{lockPermBase + permConsistent, lockSharedBase + permWrite} {
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: b, Len: 1}
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		switch {
		case err == nil:
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES):
			return inUse(f.Name()) // only a write lock conflicts; QEMU takes none
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP):
			return nil
		default:
			return fmt.Errorf("locking %s: %w", f.Name(), err)
		}
	}
	// A writer locks byte 101 and then looks for a lock on 201, which we
	// now hold: whichever of us comes second sees the other.
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: lockPermBase + permWrite, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return fmt.Errorf("checking the locks of %s: %w", f.Name(), err)
	}
	if lk.Type != unix.F_UNLCK {
		UnlockImage(f)
		return inUse(f.Name())
	}
	return nil
}

// UnlockImage drops the locks LockImageForReading took on f.
func UnlockImage(f *os.File) {
	for _, b := range []int64{lockPermBase + permConsistent, lockSharedBase + permWrite} {
		lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: b, Len: 1}
		_ = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	}
}

func inUse(path string) error {
	return core.Conflict("in_use", "%s is in use: another process (a running VM's QEMU?) has it open for writing, so its blocks may change while they are read", path)
}
