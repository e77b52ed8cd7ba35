//go:build linux

package crypto

import (
	"bytes"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	hugePage = 2 << 20
	thpMode  = "/sys/kernel/mm/transparent_hugepage/enabled"
)

// prepareKDFMemory readies n bytes of the Go heap for the key derivation that
// follows. argon2 allocates its memory (64 MiB by default) fresh and touches
// every 4 KiB page of it once: 16,384 page faults, which on a virtual machine
// that hands free memory back to its host cost more than the derivation
// itself (measured: 190-220 ms for the first derivation of a process, 75 ms
// for the next). Here the same amount is allocated, offered to the kernel for
// transparent huge pages (MADV_HUGEPAGE), touched from every core and freed;
// the heap hands those pages to argon2's allocation right after, so it
// faults a few dozen times instead. Where huge pages are off (the system's
// setting is "never") nothing is done. Where the kernel has no huge page to
// give, the touching takes the small pages' faults, from every core, as
// argon2 would have. The derived key is the same either way: this only
// changes where its memory comes from.
func prepareKDFMemory(n int) {
	if n < 4*hugePage {
		return
	}
	if hugePagesOff() {
		return
	}
	b := make([]byte, n+hugePage)
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	off := int((p+hugePage-1)&^(hugePage-1) - p)
	span := (len(b) - off) &^ (hugePage - 1)
	// Advice only: where it fails the pages below are ordinary ones.
	_ = unix.Madvise(b[off:off+span], unix.MADV_HUGEPAGE)
	// Each core takes every so many 2 MiB blocks and touches each 4 KiB page
	// of them: a huge page faults on its first byte (the kernel zeroing it,
	// which on a virtual machine is as slow as the faults were), its other
	// pages cost a write each.
	workers := min(runtime.GOMAXPROCS(0), span/hugePage)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for blk := off + w*hugePage; blk < off+span; blk += workers * hugePage {
				for i := blk; i < blk+hugePage; i += 4096 {
					b[i] = 1
				}
			}
		})
	}
	wg.Wait()
	runtime.KeepAlive(b)
	runtime.GC()
}

// hugePagesOff reports whether the system gives no transparent huge pages
// (its setting is "never", or the kernel has none).
func hugePagesOff() bool {
	mode, err := os.ReadFile(thpMode)
	return err != nil || bytes.Contains(mode, []byte("[never]"))
}
