package qcow2

import (
	"fmt"
	"math/rand/v2"
	"os"
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

// bench20G is a 20 GiB image with 64 KiB clusters and every L2 entry
// preallocated (sparse on disk): snapshot A, then 1% of the clusters
// rewritten in scattered 64 KiB writes, snapshot B. It is built once per
// process and removed by TestMain.
var bench20G struct {
	once    sync.Once
	dir     string
	path    string
	changed int64 // clusters rewritten between A and B
}

func bench20GiB(b *testing.B) string {
	b.Helper()
	testenv.RequireTool(b, "qemu-img", "qemu-io")
	bench20G.once.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-qcow2-bench-")
		if err != nil {
			b.Fatal(err)
		}
		bench20G.dir = dir
		img := filepath.Join(dir, "20g.qcow2")
		qemuImg(b, dir, "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536,preallocation=metadata", img, "20G")
		snapshotCreate(b, img, "A")
		const clusters = 20 << 30 >> 16
		r := rand.New(rand.NewPCG(20, 100))
		var cmds []string
		for _, c := range r.Perm(clusters)[:clusters/100] {
			cmds = append(cmds, fmt.Sprintf("write -P 0x%02x %d 64k", 1+c%255, int64(c)<<16))
		}
		qemuIO(b, img, cmds...) // one qemu-io for all of them
		snapshotCreate(b, img, "B")
		bench20G.path, bench20G.changed = img, int64(len(cmds))
	})
	if bench20G.path == "" {
		b.Fatal("the 20 GiB image was not built (see the first benchmark's error)")
	}
	return bench20G.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bench20G.dir != "" {
		os.RemoveAll(bench20G.dir)
	}
	os.Exit(code)
}

// BenchmarkChangedClusters20GiB: what an incremental backup starts with,
// opening the image and both snapshots included.
func BenchmarkChangedClusters20GiB(b *testing.B) {
	img := bench20GiB(b)
	for b.Loop() {
		im, err := Open(img)
		if err != nil {
			b.Fatal(err)
		}
		from, err := im.Snapshot("A")
		if err != nil {
			b.Fatal(err)
		}
		to, err := im.Snapshot("B")
		if err != nil {
			b.Fatal(err)
		}
		ch, err := ChangedClusters(from, to)
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for _, e := range ch {
			n += e.Length
		}
		if n != bench20G.changed<<16 {
			b.Fatalf("ChangedClusters found %d bytes, %d were rewritten", n, bench20G.changed<<16)
		}
		im.Close()
	}
}

// BenchmarkUniqueBytes20GiB: every table of the image walked, opening it
// included.
func BenchmarkUniqueBytes20GiB(b *testing.B) {
	img := bench20GiB(b)
	for b.Loop() {
		im, err := Open(img)
		if err != nil {
			b.Fatal(err)
		}
		u, err := im.UniqueBytes()
		if err != nil {
			b.Fatal(err)
		}
		// A: its L1 table, the 40 L2 tables the writes copied, the old data
		if want := (1 + 40 + bench20G.changed) << 16; u["A"] != want || u["B"] != 1<<16 {
			b.Fatalf("UniqueBytes = %v, want A %d and B %d", u, want, 1<<16)
		}
		im.Close()
	}
}
