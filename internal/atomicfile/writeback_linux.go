package atomicfile

import (
	"os"
	"syscall"
)

// syncFileRangeWrite is SYNC_FILE_RANGE_WRITE: start writing the range's
// dirty pages, without waiting for them.
const syncFileRangeWrite = 2

// startWriteback starts the write-out of all of f's dirty pages. An error
// only means nothing was started: the final Sync still does the work.
func startWriteback(f *os.File) {
	_ = syscall.SyncFileRange(int(f.Fd()), 0, 0, syncFileRangeWrite)
}
