package qcow2

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// benchImage makes a sparse 1 GiB image with 64 KiB clusters: 128 MiB of
// data in 1 MiB runs spread over the disk, and some zero clusters.
func benchImage(b *testing.B) *Layer {
	b.Helper()
	testenv.RequireTool(b, "qemu-img", "qemu-io")
	dir := b.TempDir()
	img := filepath.Join(dir, "bench.qcow2")
	qemuImg(b, dir, "create", "-q", "-f", "qcow2", img, "1G")
	var cmds []string
	for i := range 128 {
		cmds = append(cmds, fmt.Sprintf("write -P 0x%02x %dM 1M", i+1, i*8))
	}
	for i := range 16 {
		cmds = append(cmds, fmt.Sprintf("write -z %dM 256k", i*64+3))
	}
	qemuIO(b, img, cmds...)
	im := mustOpen(b, img)
	return mustLayer(b, im, "")
}

// BenchmarkReadAt reads the whole disk, holes included, with 4 MiB reads.
func BenchmarkReadAt(b *testing.B) {
	l := benchImage(b)
	buf := make([]byte, 4<<20)
	b.SetBytes(l.Size())
	b.ResetTimer()
	for range b.N {
		for off := int64(0); off < l.Size(); off += int64(len(buf)) {
			if _, err := l.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkReadExtents reads what a backup reads: the extents only, with
// four goroutines.
func BenchmarkReadExtents(b *testing.B) {
	l := benchImage(b)
	ext, err := l.Extents()
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, e := range ext {
		total += e.Length
	}
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		next := make(chan Extent)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 1<<20)
				for e := range next {
					for off := e.Offset; off < e.End(); off += int64(len(buf)) {
						n := min(int64(len(buf)), e.End()-off)
						if _, err := l.ReadAt(buf[:n], off); err != nil {
							b.Error(err)
							return
						}
					}
				}
			}()
		}
		for _, e := range ext {
			next <- e
		}
		close(next)
		wg.Wait()
	}
}

// BenchmarkExtents walks the tables of the disk (the L2 tables come from
// the cache after the first round).
func BenchmarkExtents(b *testing.B) {
	l := benchImage(b)
	b.ResetTimer()
	for range b.N {
		if _, err := l.Extents(); err != nil {
			b.Fatal(err)
		}
	}
}
