package benchdata

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// lseek(2) whence values of Linux, which package syscall does not name.
const (
	seekData = 3
	seekHole = 4
)

// TestGenerateSparse walks the image with SEEK_DATA / SEEK_HOLE: the holes
// are about 30% of it, exactly the regions Layout makes holes (a file system
// may allocate a little more than was written, never less).
func TestGenerateSparse(t *testing.T) {
	path := generate(t, "img.raw", testSize, 1)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	var data int64
	for off := int64(0); off < testSize; {
		start, err := f.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // only a hole after off
		}
		if err != nil {
			t.Fatalf("SEEK_DATA at %d: %v", off, err)
		}
		end, err := f.Seek(start, seekHole)
		if err != nil {
			t.Fatalf("SEEK_HOLE at %d: %v", start, err)
		}
		data += end - start
		off = end
	}
	holes := testSize - data

	var want int64
	for i, k := range Layout(testSize, 1) {
		if k == Hole {
			want += min(int64(RegionSize), testSize-int64(i)*RegionSize)
		}
	}
	if holes == 0 {
		t.Fatalf("file system of %s reports no holes: SEEK_DATA/SEEK_HOLE are supported by ext4, xfs and tmpfs", t.TempDir())
	}
	frac := float64(holes) / testSize
	if frac < 0.27 || frac > 0.33 || holes > want || holes < want-2*RegionSize {
		t.Errorf("holes: %d bytes (%.1f%%), want %d (%.1f%%)", holes, 100*frac, want, 100*float64(want)/testSize)
	}
	t.Logf("holes: %d of %d bytes (%.1f%%)", holes, testSize, 100*frac)
}
