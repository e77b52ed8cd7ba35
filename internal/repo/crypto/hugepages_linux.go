//go:build linux

package crypto

import (
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

const hugePage = 2 << 20

// prepareKDFMemory readies n bytes of the Go heap for the key derivation that
// follows. argon2 allocates its memory (64 MiB by default) fresh and touches
// every 4 KiB page of it once: 16,384 page faults, which on a virtual machine
// that hands free memory back to its host cost more than the derivation
// itself (measured: 190-220 ms for the first derivation of a process, 75 ms
// for the next). Here the same amount is allocated, offered to the kernel for
// transparent huge pages (MADV_HUGEPAGE; honoured when the system's setting is
// "madvise" or "always"), touched once per 2 MiB and freed; the heap hands
// those pages to argon2's allocation right after, so it faults a few dozen
// times instead. Where huge pages are off or the heap places argon2's memory
// elsewhere, the derivation costs what it did without this, and the result
// is the same either way: this only changes where the memory comes from.
func prepareKDFMemory(n int) {
	if n < 4*hugePage {
		return
	}
	b := make([]byte, n+hugePage)
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	off := int((p+hugePage-1)&^(hugePage-1) - p)
	span := (len(b) - off) &^ (hugePage - 1)
	// Advice only: on a kernel without transparent huge pages it fails and
	// the pages below are ordinary ones.
	_ = unix.Madvise(b[off:off+span], unix.MADV_HUGEPAGE)
	// The kernel zeroes each huge page as it is touched; on a virtual
	// machine that is as slow as the faults were, so every core takes a share.
	workers := min(runtime.GOMAXPROCS(0), span/hugePage)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := off + w*hugePage; i < off+span; i += workers * hugePage {
				b[i] = 1
			}
		})
	}
	wg.Wait()
	runtime.KeepAlive(b)
	runtime.GC()
}
