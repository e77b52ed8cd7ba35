package chunker

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"testing"
	"testing/iotest"

	"github.com/cairn-backup/cairn/internal/core"
)

func mustFixed(t testing.TB, size int) *Fixed {
	t.Helper()
	f, err := NewFixed(size)
	if err != nil {
		t.Fatalf("NewFixed(%d): %v", size, err)
	}
	return f
}

func TestNewFixed(t *testing.T) {
	for _, n := range []int{4 << 10, 64 << 10, 128 << 10, 256 << 10, 16 << 20} {
		if f := mustFixed(t, n); f.Size() != n {
			t.Errorf("Size() = %d, want %d", f.Size(), n)
		}
	}
	for _, n := range []int{0, -1, 2 << 10, 96 << 10, 32 << 20, 64<<10 + 1} {
		_, err := NewFixed(n)
		var ce *core.Error
		if !errors.As(err, &ce) || ce.Kind != core.KindInvalid {
			t.Errorf("NewFixed(%d): %v, want an invalid error", n, err)
		}
	}
}

func TestIsZero(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 63, 64, 65, 4096, 64 << 10, 64<<10 + 3, 300 << 10} {
		b := make([]byte, n)
		if !IsZero(b) {
			t.Fatalf("IsZero(%d zeros) = false", n)
		}
		positions := []int{0, n / 2, n - 1}
		if n <= 130 {
			positions = nil
			for i := range n {
				positions = append(positions, i)
			}
		}
		for _, p := range positions {
			if n == 0 {
				continue
			}
			b[p] = 0x80
			if IsZero(b) {
				t.Fatalf("IsZero(%d bytes, byte %d set) = true", n, p)
			}
			b[p] = 0
		}
	}
}

// imageWithZeros returns n bytes of mixed data in which every third chunk
// of size bytes is zero.
func imageWithZeros(n, size int, seed uint64) []byte {
	data := mixedData(n, seed)
	for off := 0; off < n; off += 3 * size {
		clear(data[off:min(off+size, n)])
	}
	return data
}

// checkFixed checks that chunks are aligned, of the right size, reassemble
// data, and are Zero exactly when their bytes are.
func checkFixed(t *testing.T, f *Fixed, chunks []Chunk, data []byte) {
	t.Helper()
	if got := join(chunks); !bytes.Equal(got, data) {
		t.Fatalf("round trip of %d bytes: got %d bytes, different", len(data), len(got))
	}
	for i, c := range chunks {
		if c.Offset%int64(f.Size()) != 0 {
			t.Fatalf("chunk %d at unaligned offset %d", i, c.Offset)
		}
		if c.Length != f.Size() && (i != len(chunks)-1 || c.Length > f.Size()) {
			t.Fatalf("chunk %d of %d has length %d, size %d", i, len(chunks), c.Length, f.Size())
		}
		if want := IsZero(data[c.Offset:c.End()]); c.Zero != want {
			t.Fatalf("chunk %d at %d: Zero = %v, want %v", i, c.Offset, c.Zero, want)
		}
	}
}

func TestFixedRoundTrip(t *testing.T) {
	for _, size := range []int{4 << 10, 64 << 10, 256 << 10} {
		f := mustFixed(t, size)
		sizes := []int{0, 1, size - 1, size, size + 1, 2 * size, 7*size + 13}
		for i := range 4 {
			sizes = append(sizes, int(randomBytes(2, uint64(i+size))[0])*size/17)
		}
		for _, n := range sizes {
			data := imageWithZeros(n, size, uint64(n))
			checkFixed(t, f, collect(t, f.Scan(bytes.NewReader(data))), data)
			checkFixed(t, f, collect(t, f.Scan(iotest.HalfReader(bytes.NewReader(data)))), data)
			s, err := f.ScanExtents(bytes.NewReader(data), int64(n), []Extent{{0, int64(n)}})
			if err != nil {
				t.Fatal(err)
			}
			checkFixed(t, f, collect(t, s), data)
		}
	}
}

// holeReader is an image whose holes hold garbage and must never be read:
// a read of any byte outside the extents fails the test.
type holeReader struct {
	t       *testing.T
	data    []byte
	extents []Extent
	reads   int64
}

func (h *holeReader) inExtents(off int64) bool {
	for _, e := range h.extents {
		if off >= e.Offset && off < e.End() {
			return true
		}
	}
	return false
}

func (h *holeReader) ReadAt(p []byte, off int64) (int, error) {
	for i := range int64(len(p)) {
		if !h.inExtents(off + i) {
			h.t.Errorf("read of [%d, %d) touches byte %d, outside the data extents %v", off, off+int64(len(p)), off+i, h.extents)
			break
		}
	}
	h.reads += int64(len(p))
	if off >= int64(len(h.data)) {
		return 0, io.EOF
	}
	n := copy(p, h.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// sparseImage builds an image of n bytes whose bytes outside extents are
// garbage in the backing store and zero in the image.
func sparseImage(n int, extents []Extent, seed uint64) (backing, image []byte) {
	backing = mixedData(n, seed)
	image = make([]byte, n)
	for i := range backing {
		if backing[i] == 0 {
			backing[i] = 0xee // garbage everywhere the image has a hole
		}
	}
	for _, e := range extents {
		lo, hi := min(e.Offset, int64(n)), min(e.End(), int64(n))
		copy(image[lo:hi], backing[lo:hi])
	}
	return backing, image
}

func TestFixedExtents(t *testing.T) {
	const size = 64 << 10
	f := mustFixed(t, size)
	n := 20*size + 1000
	zeroData := Extent{Offset: 12 * size, Length: size} // data that reads as zeros
	extents := []Extent{
		{Offset: 100, Length: 50},                  // a few bytes in chunk 0
		{Offset: 2*size - 10, Length: 20},          // across chunks 1 and 2
		{Offset: 4 * size, Length: 3 * size},       // chunks 4-6 fully
		{Offset: 5 * size, Length: size + 5},       // overlaps the previous one
		{Offset: 9*size + 4096, Length: 4096},      // inside chunk 9
		{Offset: 9*size + 8192, Length: 4096},      // touches the previous one
		zeroData,                                   // chunk 12, all zero bytes
		{Offset: 20 * size, Length: 10 * size},     // past the end: clipped to the short last chunk
		{Offset: 0, Length: 0},                     // empty
		{Offset: int64(n) + size, Length: 1 << 30}, // beyond the image
	}
	backing, image := sparseImage(n, extents, 3)
	clear(backing[zeroData.Offset:zeroData.End()])
	clear(image[zeroData.Offset:zeroData.End()])
	shuffled := slices.Clone(extents)
	slices.Reverse(shuffled)
	hr := &holeReader{t: t, data: backing, extents: extents}
	s, err := f.ScanExtents(hr, int64(n), shuffled)
	if err != nil {
		t.Fatal(err)
	}
	chunks := collect(t, s)
	checkFixed(t, f, chunks, image)
	if len(chunks) != 21 {
		t.Fatalf("%d chunks, want 21", len(chunks))
	}
	for i, c := range chunks {
		want := i == 3 || i == 7 || i == 8 || i == 10 || i == 11 || (i >= 12 && i <= 19)
		if c.Zero != want {
			t.Errorf("chunk %d: Zero = %v, want %v", i, c.Zero, want)
		}
	}
	if want := int64(50 + 20 + 3*size + 8192 + size + 1000); hr.reads != want {
		t.Errorf("read %d bytes, want %d (only the data extents)", hr.reads, want)
	}
}

func TestFixedExtentsOnly(t *testing.T) {
	const size = 4 << 10
	f := mustFixed(t, size)
	n := 30*size + 100
	extents := []Extent{{Offset: 0, Length: int64(n)}} // all data
	backing, image := sparseImage(n, extents, 9)
	hr := &holeReader{t: t, data: backing, extents: extents}
	only := []Extent{
		{Offset: 3*size + 10, Length: 1},      // chunk 3
		{Offset: 3*size + 100, Length: 2},     // chunk 3 again
		{Offset: 7*size - 1, Length: 2},       // chunks 6 and 7
		{Offset: 20 * size, Length: 2 * size}, // chunks 20, 21
		{Offset: 30 * size, Length: 1 << 20},  // the short last chunk, clipped
		{Offset: 1 << 40, Length: 1},          // past the end
	}
	s, err := f.ScanExtentsOnly(hr, int64(n), extents, only)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for {
		c, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.Data, image[c.Offset:c.Offset+int64(c.Length)]) {
			t.Fatalf("chunk at %d: wrong bytes", c.Offset)
		}
		got = append(got, c.Offset/size)
		c.Release()
	}
	if want := []int64{3, 6, 7, 20, 21, 30}; !slices.Equal(got, want) {
		t.Fatalf("chunks %v, want %v", got, want)
	}
	if want := int64(5*size + 100); hr.reads != want {
		t.Fatalf("read %d bytes, want %d", hr.reads, want)
	}
	s, _ = f.ScanExtentsOnly(hr, int64(n), extents, nil)
	if _, err := s.Next(); err != io.EOF {
		t.Fatalf("no ranges: %v, want io.EOF", err)
	}
}

func TestFixedExtentsEmptyAndHoles(t *testing.T) {
	f := mustFixed(t, 4<<10)
	hr := &holeReader{t: t}
	s, err := f.ScanExtents(hr, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if chunks := collect(t, s); len(chunks) != 0 {
		t.Fatalf("empty image gave %d chunks", len(chunks))
	}
	// A 1 TiB image of holes only: 2^24 zero chunks of 64 KiB, none read.
	const tib = 1 << 40
	f = mustFixed(t, 64<<10)
	s, err = f.ScanExtents(hr, tib, nil)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for {
		c, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil || !c.Zero {
			t.Fatalf("chunk %+v, %v", c, err)
		}
		total += int64(c.Length)
	}
	if total != tib || hr.reads != 0 {
		t.Fatalf("covered %d bytes, want %d; read %d bytes, want 0", total, tib, hr.reads)
	}
}

func TestFixedExtentErrors(t *testing.T) {
	f := mustFixed(t, 4<<10)
	for _, e := range [][]Extent{{{Offset: -1, Length: 5}}, {{Offset: 0, Length: -5}}, {{Offset: 1, Length: maxInt64}}} {
		if _, err := f.ScanExtents(bytes.NewReader(nil), 100, e); err == nil {
			t.Errorf("extents %v accepted", e)
		}
	}
	if _, err := f.ScanExtents(bytes.NewReader(nil), -1, nil); err == nil {
		t.Error("negative size accepted")
	}
	// The image is shorter than its extents say.
	s, err := f.ScanExtents(bytes.NewReader(make([]byte, 5000)), 10000, []Extent{{0, 10000}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	c.Release()
	if _, err = s.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short image: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err2 := s.Next(); err2 != err {
		t.Fatalf("error not sticky: %v", err2)
	}
	// A failing reader.
	boom := errors.New("boom")
	_, err = f.Scan(iotest.ErrReader(boom)).Next()
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
}

// TestSparseExtents makes a sparse file on the test's temporary directory
// (ext4 here) and on /dev/shm (tmpfs) and checks the extents lseek reports.
func TestSparseExtents(t *testing.T) {
	dirs := []string{t.TempDir()}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "chunker-test-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			dirs = append(dirs, d)
		}
	}
	const mib = 1 << 20
	writes := []Extent{{Offset: 1 * mib, Length: 64 << 10}, {Offset: 4 * mib, Length: 128 << 10}, {Offset: 10*mib - 4096, Length: 4096}}
	want := slices.Clone(writes)
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			file, err := os.CreateTemp(dir, "sparse")
			if err != nil {
				t.Fatal(err)
			}
			defer file.Close()
			if err := file.Truncate(12 * mib); err != nil {
				t.Fatal(err)
			}
			image := make([]byte, 12*mib)
			for i, w := range writes {
				b := bytes.Repeat([]byte{byte(i + 1)}, int(w.Length))
				if _, err := file.WriteAt(b, w.Offset); err != nil {
					t.Fatal(err)
				}
				copy(image[w.Offset:], b)
			}
			if _, err := file.Seek(12345, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			got, err := SparseExtents(file)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 1 && got[0] == (Extent{0, 12 * mib}) {
				t.Fatalf("file system of %s reports no holes: SEEK_DATA/SEEK_HOLE are supported by ext4, xfs and tmpfs, which cairn's data directories use", dir)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("extents %v, want %v", got, want)
			}
			if pos, _ := file.Seek(0, io.SeekCurrent); pos != 12345 {
				t.Errorf("file offset %d after SparseExtents, want 12345", pos)
			}
			f := mustFixed(t, 64<<10)
			s, err := f.ScanExtents(file, 12*mib, got)
			if err != nil {
				t.Fatal(err)
			}
			chunks := collect(t, s)
			checkFixed(t, f, chunks, image)
			data := 0
			for _, c := range chunks {
				if !c.Zero {
					data++
				}
			}
			if data != 1+2+1 {
				t.Errorf("%d data chunks, want 4", data)
			}
		})
	}
	// An empty file and a file without holes.
	empty, err := os.CreateTemp(t.TempDir(), "empty")
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if got, err := SparseExtents(empty); err != nil || len(got) != 0 {
		t.Fatalf("empty file: %v, %v", got, err)
	}
	if _, err := empty.Write(make([]byte, 10000)); err != nil {
		t.Fatal(err)
	}
	if got, err := SparseExtents(empty); err != nil || !slices.Equal(got, []Extent{{0, 10000}}) {
		t.Fatalf("dense file: %v, %v", got, err)
	}
}

// FuzzFixed: the stream scanner and the extent scanner both reassemble the
// input (holes as zeros), keep chunks aligned and of the right size, and
// never read a hole. The extents are made from the fuzzer's ext bytes.
func FuzzFixed(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Add([]byte("x"), []byte{0, 1})
	f.Add(make([]byte, 9000), []byte{1, 2, 3, 4})
	f.Add(counterStream("fuzz", 20000), []byte{0, 10, 40, 2, 200, 255})
	f.Fuzz(func(t *testing.T, data []byte, ext []byte) {
		fx := mustFixed(t, 4<<10)
		checkFixed(t, fx, collect(t, fx.Scan(bytes.NewReader(data))), data)

		// Each pair of ext bytes is an extent: offset and length in units of
		// 256 bytes, to hit chunk edges often.
		var extents []Extent
		for i := 0; i+1 < len(ext); i += 2 {
			extents = append(extents, Extent{Offset: int64(ext[i]) * 256, Length: int64(ext[i+1]) * 97})
		}
		norm, err := normalizeExtents(extents, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		image := make([]byte, len(data))
		for _, e := range norm {
			copy(image[e.Offset:e.End()], data[e.Offset:e.End()])
		}
		hr := &holeReader{t: t, data: data, extents: norm}
		s, err := fx.ScanExtents(hr, int64(len(data)), extents)
		if err != nil {
			t.Fatal(err)
		}
		checkFixed(t, fx, collect(t, s), image)
	})
}

func benchFixed(b *testing.B, size int) {
	data := benchInput()
	f := mustFixed(b, size)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		s := f.Scan(bytes.NewReader(data))
		zero := 0
		for {
			c, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if c.Zero {
				zero++
			}
			c.Release()
		}
		b.ReportMetric(float64(zero), "zero-chunks")
	}
}

// BenchmarkFixed: chunking with zero detection of 256 MiB of mixed data (20%
// zero segments), read through an io.Reader (every byte copied once).
func BenchmarkFixed(b *testing.B) {
	b.Run("64KiB", func(b *testing.B) { benchFixed(b, 64<<10) })
	b.Run("128KiB", func(b *testing.B) { benchFixed(b, 128<<10) })
	b.Run("256KiB", func(b *testing.B) { benchFixed(b, 256<<10) })
}

// BenchmarkFixedExtents: the same image read through an io.ReaderAt with
// a third of it declared as holes (not read).
func BenchmarkFixedExtents(b *testing.B) {
	data := benchInput()
	f := mustFixed(b, 128<<10)
	var extents []Extent
	for off := int64(0); off < int64(len(data)); off += 3 << 20 {
		extents = append(extents, Extent{Offset: off, Length: 2 << 20})
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		s, err := f.ScanExtents(bytes.NewReader(data), int64(len(data)), extents)
		if err != nil {
			b.Fatal(err)
		}
		for {
			c, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			c.Release()
		}
	}
}

func BenchmarkIsZero(b *testing.B) {
	buf := make([]byte, 128<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if !IsZero(buf) {
			b.Fatal("not zero")
		}
	}
}

func TestFixedStreamReaders(t *testing.T) {
	f := mustFixed(t, 4<<10)
	data := imageWithZeros(50_000, 4<<10, 9)
	checkFixed(t, f, collect(t, f.Scan(iotest.OneByteReader(bytes.NewReader(data)))), data)
	checkFixed(t, f, collect(t, f.Scan(iotest.DataErrReader(bytes.NewReader(data)))), data)
	// A reader's own io.ErrUnexpectedEOF (a truncated compressed stream) is
	// an error, not the end of the image.
	r := io.MultiReader(bytes.NewReader(data[:6000]), iotest.ErrReader(io.ErrUnexpectedEOF))
	s := f.Scan(r)
	c, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	c.Release()
	if _, err := s.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := f.Scan(emptyReader{}).Next(); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("got %v, want io.ErrNoProgress", err)
	}
}

// Spans read concurrently and in any order give the chunks Next gives, and
// restricted scanners give spans only where Next gives chunks.
func TestFixedSpansReadConcurrently(t *testing.T) {
	const size = 16 << 10
	f := mustFixed(t, size)
	n := 40*size + 777
	extents := []Extent{
		{Offset: 100, Length: 50},
		{Offset: 3*size - 10, Length: 20},
		{Offset: 5 * size, Length: 10 * size},
		{Offset: 20*size + 4096, Length: 4096},
		{Offset: 20*size + 3*4096, Length: 4096},
		{Offset: 30 * size, Length: 20 * size},
	}
	backing, image := sparseImage(n, extents, 5)
	for _, only := range [][]Extent{nil, {{Offset: 4 * size, Length: 3 * size}, {Offset: 39 * size, Length: 1}}} {
		scan := func() *FixedScanner {
			s, err := f.ScanExtents(bytes.NewReader(backing), int64(n), extents)
			if only != nil {
				s, err = f.ScanExtentsOnly(bytes.NewReader(backing), int64(n), extents, only)
			}
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		var want []Chunk
		for s := scan(); ; {
			c, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, c)
		}
		s := scan()
		var spans []Span
		for {
			sp, err := s.NextSpan()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			spans = append(spans, sp)
		}
		if len(spans) != len(want) {
			t.Fatalf("only=%v: %d spans, %d chunks from Next", only, len(spans), len(want))
		}
		got := make([]Chunk, len(spans))
		errs := make(chan error, 4)
		for w := range 4 {
			go func() {
				for i := len(spans) - 1 - w; i >= 0; i -= 4 {
					c, err := s.ReadSpan(spans[i])
					if err != nil {
						errs <- err
						return
					}
					got[i] = c
				}
				errs <- nil
			}()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for i, c := range got {
			w := want[i]
			if c.Offset != w.Offset || c.Length != w.Length || c.Zero != w.Zero || !bytes.Equal(c.Data, w.Data) {
				t.Fatalf("only=%v: span %d: chunk at %d (%d bytes, zero %v) differs from Next's at %d (%d, %v)",
					only, i, c.Offset, c.Length, c.Zero, w.Offset, w.Length, w.Zero)
			}
			if !c.Zero && !bytes.Equal(c.Data, image[c.Offset:c.Offset+int64(c.Length)]) {
				t.Fatalf("chunk at %d: wrong bytes", c.Offset)
			}
			c.Release()
			w.Release()
		}
	}
	if _, err := f.Scan(bytes.NewReader(image)).NextSpan(); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("NextSpan on a stream scanner: %v", err)
	}
}
