package repo

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/cairn-backup/cairn/internal/benchdata"
	"github.com/cairn-backup/cairn/internal/blob/mem"
)

// BenchmarkImageChunkSize backs up the benchmark image (30% holes, 40% text,
// 30% random) with each candidate chunk size, then again after 1% of it
// changed in scattered 64 KiB pieces. It reports throughput, the bytes the
// incremental backup stored per changed byte, and the index entries a TiB
// of such an image would need. docs/FORMAT.md records the results.
func BenchmarkImageChunkSize(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	img := filepath.Join(dir, "img.raw")
	for _, cs := range []int{64 << 10, 128 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("chunk=%dK", cs>>10), func(b *testing.B) {
			ctx := context.Background()
			var ratio float64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				if err := benchdata.Generate(img, size, 1); err != nil {
					b.Fatal(err)
				}
				r, err := Init(ctx, mem.New(), testPassword, InitOptions{ImageChunkSize: cs}, testOptions())
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				backupImageFile(b, r, img)
				b.StopTimer()
				changed, err := benchdata.Mutate(img, 0.01, 64<<10, 2)
				if err != nil {
					b.Fatal(err)
				}
				m := backupImageFile(b, r, img)
				ratio = float64(m.Summary.BytesAdded) / float64(changed)
				b.StartTimer()
			}
			b.SetBytes(size)
			b.ReportMetric(ratio, "stored/changed")
			b.ReportMetric(float64(1<<40)*0.7/float64(cs)/1e6, "Mblobs/TiB")
			_ = runtime.GOMAXPROCS(0)
		})
	}
}
