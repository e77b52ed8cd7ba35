package atomicfile

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// WriteBehind wraps a file being filled through WriteAt (by any number of
// goroutines). Every step bytes, a goroutine of its own flushes the file to
// stable storage. The disk (and on a virtual machine the host's cache behind it,
// which only a flush drains) then works while the writers compute, and the
// Sync at the end, which a restore needs before it renames its output into
// place, has little left to wait for: on a 2 GiB restore that is a fifth of
// the time. After each flush the file's pages leave the page cache
// (posix_fadvise DONTNEED): a restore of a large image does not push out what
// the host caches for others, and its next writes reuse the memory just
// freed, which on a virtual machine costs far less than fresh pages. Writes
// go one at a time: the kernel serializes buffered writes to one file anyway,
// and threads waiting for it spin.
type WriteBehind struct {
	f        *os.File
	flush    func() error // f.Sync and the cache drop, but for tests
	step     int64
	mu       sync.Mutex // one write at a time
	written  int64      // under mu
	kick     chan struct{}
	stop     sync.Once
	done     chan struct{}
	flushErr error // the first error of a flush; read after done
}

// NewWriteBehind starts the write-behind of f; step <= 0 means 64 MiB. Call
// Sync or Stop to end it.
func NewWriteBehind(f *os.File, step int64) *WriteBehind {
	return newWriteBehind(f, step, func() error {
		if err := f.Sync(); err != nil {
			return err
		}
		// Advice only: what the fsync wrote is clean and may go; a failure
		// changes nothing but the cache.
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		return nil
	})
}

func newWriteBehind(f *os.File, step int64, flush func() error) *WriteBehind {
	if step <= 0 {
		step = 64 << 20
	}
	w := &WriteBehind{f: f, flush: flush, step: step, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for range w.kick {
			// An error is kept for Sync: the kernel reports a failed
			// write-out to each open file once, so the final fsync on
			// this same file would not see it again.
			if err := w.flush(); err != nil && w.flushErr == nil {
				w.flushErr = err
			}
		}
	}()
	return w
}

// WriteAt implements io.WriterAt.
func (w *WriteBehind) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.f.WriteAt(p, off)
	w.written += int64(n)
	if w.written/w.step != (w.written-int64(n))/w.step {
		select {
		case w.kick <- struct{}{}:
		default: // a write-out is already pending
		}
	}
	return n, err
}

// Sync stops the write-behind and flushes the file to stable storage. The
// writers must have returned.
func (w *WriteBehind) Sync() error {
	w.Stop()
	if w.flushErr != nil {
		return w.flushErr
	}
	return w.flush()
}

// Stop stops the write-behind (after the writers have returned), before the
// file is closed; it may be called more than once.
func (w *WriteBehind) Stop() {
	w.stop.Do(func() { close(w.kick) })
	<-w.done
}
