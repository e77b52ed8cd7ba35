package chunker

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/iotest"

	"github.com/cairn-backup/cairn/internal/core"
)

var update = flag.Bool("update", false, "rewrite testdata/cdc_vectors.json from the current code (never for a released format)")

// small parameters that keep the tests fast while exercising every rule.
var smallParams = CDCParams{Min: 64, Avg: 256, Max: 1024}

func mustCDC(t testing.TB, p CDCParams) *CDC {
	t.Helper()
	c, err := NewCDC(p)
	if err != nil {
		t.Fatalf("NewCDC(%+v): %v", p, err)
	}
	return c
}

func TestGearTableFromSeed(t *testing.T) {
	for i := range 256 {
		h := sha256.Sum256(append([]byte("cairn chunker gear table v1"), byte(i)))
		if want := binary.LittleEndian.Uint64(h[:8]); gearTable[i] != want {
			t.Fatalf("gearTable[%d] = %#016x, want %#016x (the table is part of the repository format)", i, gearTable[i], want)
		}
	}
}

func TestCDCParamsValidate(t *testing.T) {
	valid := []CDCParams{DefaultCDCParams(), smallParams, {Min: 64, Avg: 256, Max: 257}, {Min: 255, Avg: 256, Max: 64 << 20}}
	for _, p := range valid {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	invalid := []CDCParams{
		{},
		{Min: 63, Avg: 256, Max: 1024},
		{Min: 64, Avg: 128, Max: 1024},
		{Min: 64, Avg: 300, Max: 1024},
		{Min: 256, Avg: 256, Max: 1024},
		{Min: 64, Avg: 256, Max: 256},
		{Min: 64, Avg: 256, Max: 64<<20 + 1},
		{Min: -1, Avg: 256, Max: 1024},
	}
	for _, p := range invalid {
		err := p.Validate()
		var ce *core.Error
		if !errors.As(err, &ce) || ce.Kind != core.KindInvalid {
			t.Errorf("%+v: got %v, want an invalid error", p, err)
		}
		if _, err := NewCDC(p); err == nil {
			t.Errorf("NewCDC(%+v) accepted", p)
		}
	}
}

// refChunks cuts data in memory with Cut: the reference the scanner must
// match whatever its reads look like.
func refChunks(c *CDC, data []byte) []int {
	var lens []int
	for len(data) > 0 {
		n := c.Cut(data)
		lens = append(lens, n)
		data = data[n:]
	}
	return lens
}

func lengths(chunks []Chunk) []int {
	out := make([]int, len(chunks))
	for i, c := range chunks {
		out[i] = c.Length
	}
	return out
}

// checkCDC scans data through r and checks round trip, size bounds and
// agreement with Cut.
func checkCDC(t *testing.T, c *CDC, data []byte, r io.Reader) {
	t.Helper()
	chunks := collect(t, c.Scan(r))
	if got := join(chunks); !bytes.Equal(got, data) {
		t.Fatalf("round trip of %d bytes: got %d bytes, different", len(data), len(got))
	}
	p := c.Params()
	for i, ch := range chunks {
		if ch.Zero {
			t.Fatalf("CDC reported a zero chunk")
		}
		if ch.Length > p.Max || (i < len(chunks)-1 && ch.Length < p.Min) {
			t.Fatalf("chunk %d of %d has length %d, outside [%d, %d]", i, len(chunks), ch.Length, p.Min, p.Max)
		}
	}
	if want := refChunks(c, data); !slices.Equal(lengths(chunks), want) {
		t.Fatalf("scanner cut %v, Cut gives %v", lengths(chunks), want)
	}
}

func TestCDCRoundTrip(t *testing.T) {
	for _, p := range []CDCParams{smallParams, {Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10}, DefaultCDCParams()} {
		c := mustCDC(t, p)
		sizes := []int{0, 1, 63, 64, p.Min - 1, p.Min, p.Min + 1, p.Avg - 1, p.Avg, p.Avg + 1,
			p.Max - 1, p.Max, p.Max + 1, 2 * p.Max, 3*p.Max + 7}
		for i := range 4 {
			b := randomBytes(8, uint64(i))
			sizes = append(sizes, int(binary.LittleEndian.Uint32(b))%(3*p.Max))
		}
		for _, n := range sizes {
			for _, kind := range []string{"random", "zeros", "mixed"} {
				var data []byte
				switch kind {
				case "random":
					data = randomBytes(n, uint64(n))
				case "zeros":
					data = make([]byte, n)
				default:
					data = mixedData(n, uint64(n))
				}
				checkCDC(t, c, data, bytes.NewReader(data))
			}
		}
	}
}

// TestCDCReaders feeds the scanner through readers that return short reads,
// one byte at a time, or data together with io.EOF.
func TestCDCReaders(t *testing.T) {
	c := mustCDC(t, smallParams)
	data := mixedData(50_000, 7)
	checkCDC(t, c, data, iotest.OneByteReader(bytes.NewReader(data)))
	checkCDC(t, c, data, iotest.HalfReader(bytes.NewReader(data)))
	checkCDC(t, c, data, iotest.DataErrReader(bytes.NewReader(data)))
	big := mustCDC(t, CDCParams{Min: 8 << 10, Avg: 64 << 10, Max: 1 << 20})
	data = randomBytes(5<<20, 3)
	checkCDC(t, big, data, iotest.HalfReader(bytes.NewReader(data)))
}

func TestCDCReadError(t *testing.T) {
	c := mustCDC(t, smallParams)
	boom := errors.New("boom")
	r := io.MultiReader(bytes.NewReader(randomBytes(3000, 1)), iotest.ErrReader(boom))
	s := c.Scan(r)
	var err error
	for err == nil {
		var ch Chunk
		ch, err = s.Next()
		ch.Release()
	}
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
	if _, err2 := s.Next(); !errors.Is(err2, boom) {
		t.Fatalf("error not sticky: %v", err2)
	}
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func TestCDCNoProgress(t *testing.T) {
	_, err := mustCDC(t, smallParams).Scan(emptyReader{}).Next()
	if !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("got %v, want io.ErrNoProgress", err)
	}
}

// newChunks returns how many chunks of b do not occur in a.
func newChunks(a, b [][32]byte) int {
	seen := map[[32]byte]bool{}
	for _, h := range a {
		seen[h] = true
	}
	n := 0
	for _, h := range b {
		if !seen[h] {
			n++
		}
	}
	return n
}

func chunkHashes(t *testing.T, c *CDC, data []byte) [][32]byte {
	var out [][32]byte
	s := c.Scan(bytes.NewReader(data))
	for {
		ch, err := s.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sha256.Sum256(ch.Data))
		ch.Release()
	}
}

// TestCDCInsertion: 100 bytes inserted in the middle of a 64 MiB random file
// (or deleted from it) change one or two chunks with the default parameters;
// every other chunk is found again.
func TestCDCInsertion(t *testing.T) {
	c := mustCDC(t, DefaultCDCParams())
	orig := randomBytes(64<<20, 11)
	before := chunkHashes(t, c, orig)
	for i, pos := range []int{len(orig) / 2, len(orig)/2 + 333_333, len(orig) / 3} {
		ins := slices.Concat(orig[:pos], randomBytes(100, uint64(100+i)), orig[pos:])
		after := chunkHashes(t, c, ins)
		if n := newChunks(before, after); n < 1 || n > 2 {
			t.Errorf("insert at %d: %d new chunks of %d, want 1 or 2", pos, n, len(after))
		}
		del := slices.Concat(orig[:pos], orig[pos+100:])
		after = chunkHashes(t, c, del)
		if n := newChunks(before, after); n < 1 || n > 2 {
			t.Errorf("delete at %d: %d new chunks of %d, want 1 or 2", pos, n, len(after))
		}
	}
}

// TestCDCStaleRelease: releasing a stale copy of a chunk does not give away
// a buffer that a later chunk owns.
func TestCDCStaleRelease(t *testing.T) {
	c := mustCDC(t, smallParams)
	data := randomBytes(100_000, 5)
	s := c.Scan(bytes.NewReader(data))
	a, _ := s.Next()
	stale := a
	a.Release()
	a.Release()
	b, _ := s.Next()
	want := append([]byte(nil), b.Data...)
	stale.Release()
	for range 20 {
		x, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x.Data, data[x.Offset:x.End()]) {
			t.Fatal("a stale Release let a buffer be handed out twice")
		}
		x.Release()
		if !bytes.Equal(b.Data, want) {
			t.Fatal("a stale Release let another chunk overwrite a live buffer")
		}
	}
	if !bytes.Equal(b.Data, data[b.Offset:b.End()]) {
		t.Fatal("chunk data differs from the input")
	}
	b.Release()
}

// cdcVector is one entry of testdata/cdc_vectors.json.
type cdcVector struct {
	Name         string `json:"name"`
	Input        string `json:"input"` // "counter:SEED" or "zeros"
	Length       int    `json:"length"`
	Min          int    `json:"min"`
	Avg          int    `json:"avg"`
	Max          int    `json:"max"`
	InputSHA256  string `json:"input_sha256"`
	ChunkLengths []int  `json:"chunk_lengths"`
	ChunksSHA256 string `json:"chunks_sha256"` // SHA-256 of the concatenated SHA-256 of every chunk
}

type cdcVectorFile struct {
	Comment []string    `json:"comment"`
	Vectors []cdcVector `json:"vectors"`
}

func vectorInput(v cdcVector) []byte {
	if v.Input == "zeros" {
		return make([]byte, v.Length)
	}
	return counterStream(v.Input[len("counter:"):], v.Length)
}

func computeVector(t *testing.T, v cdcVector) cdcVector {
	data := vectorInput(v)
	c := mustCDC(t, CDCParams{Min: v.Min, Avg: v.Avg, Max: v.Max})
	h := sha256.Sum256(data)
	v.InputSHA256 = hex.EncodeToString(h[:])
	all := sha256.New()
	v.ChunkLengths = nil
	for _, ch := range collect(t, c.Scan(bytes.NewReader(data))) {
		v.ChunkLengths = append(v.ChunkLengths, ch.Length)
		ch := sha256.Sum256(ch.Data)
		all.Write(ch[:])
	}
	v.ChunksSHA256 = hex.EncodeToString(all.Sum(nil))
	return v
}

// TestCDCVectors pins the chunk boundaries: the Gear table, the masks, the
// warm-up and the size rules are part of the repository format, and any
// change to them fails here.
func TestCDCVectors(t *testing.T) {
	path := filepath.Join("testdata", "cdc_vectors.json")
	if *update {
		f := cdcVectorFile{
			Comment: []string{
				"Content-defined chunking test vectors of cairn's repository format (internal/chunker).",
				"input counter:SEED = the first length bytes of SHA-256(SEED || uint64 little-endian j) for j = 0, 1, 2, ... concatenated; zeros = length zero bytes.",
				"chunk_lengths are the chunks cut with min/avg/max in order; chunks_sha256 = SHA-256 of the concatenation of each chunk's SHA-256.",
				"These never change for a format version: a difference is a format break, not a test to update.",
			},
			Vectors: []cdcVector{
				{Name: "default-32MiB", Input: "counter:cairn cdc vector 1", Length: 32 << 20, Min: 512 << 10, Avg: 1 << 20, Max: 8 << 20},
				{Name: "small-64KiB", Input: "counter:cairn cdc vector 2", Length: 64 << 10, Min: 64, Avg: 256, Max: 1024},
				{Name: "medium-1MiB", Input: "counter:cairn cdc vector 3", Length: 1 << 20, Min: 2 << 10, Avg: 8 << 10, Max: 64 << 10},
				{Name: "zeros-default", Input: "zeros", Length: 20 << 20, Min: 512 << 10, Avg: 1 << 20, Max: 8 << 20},
				{Name: "zeros-small", Input: "zeros", Length: 5000, Min: 64, Avg: 256, Max: 1024},
			},
		}
		for i, v := range f.Vectors {
			f.Vectors[i] = computeVector(t, v)
		}
		b, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f cdcVectorFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, want := range f.Vectors {
		got := computeVector(t, want)
		if got.InputSHA256 != want.InputSHA256 {
			t.Fatalf("%s: input generator differs: sha256 %s, want %s", want.Name, got.InputSHA256, want.InputSHA256)
		}
		if !slices.Equal(got.ChunkLengths, want.ChunkLengths) || got.ChunksSHA256 != want.ChunksSHA256 {
			t.Errorf("%s: chunk boundaries changed (a repository format break):\n got  %v\n want %v",
				want.Name, got.ChunkLengths, want.ChunkLengths)
		}
	}
}

func FuzzCDC(f *testing.F) {
	f.Add([]byte{}, uint8(0))
	f.Add([]byte("a"), uint8(1))
	f.Add(make([]byte, 3000), uint8(2))
	f.Add(counterStream("fuzz", 5000), uint8(3))
	paramSets := []CDCParams{
		smallParams,
		{Min: 64, Avg: 512, Max: 4096},
		{Min: 200, Avg: 256, Max: 300},
		{Min: 1000, Avg: 1024, Max: 8192},
	}
	f.Fuzz(func(t *testing.T, data []byte, sel uint8) {
		c := mustCDC(t, paramSets[int(sel)%len(paramSets)])
		var r io.Reader = bytes.NewReader(data)
		if sel&4 != 0 {
			r = iotest.HalfReader(r)
		}
		checkCDC(t, c, data, r)
	})
}

func BenchmarkCDC(b *testing.B) {
	data := benchInput()
	c := mustCDC(b, DefaultCDCParams())
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		s := c.Scan(bytes.NewReader(data))
		n := 0
		for {
			ch, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
			ch.Release()
		}
		b.ReportMetric(float64(len(data))/float64(n), "bytes/chunk")
	}
}

// BenchmarkCDCCut measures the cut-point search alone, in memory.
func BenchmarkCDCCut(b *testing.B) {
	data := benchInput()
	c := mustCDC(b, DefaultCDCParams())
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		for d := data; len(d) > 0; {
			d = d[c.Cut(d):]
		}
	}
}
