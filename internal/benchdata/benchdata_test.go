package benchdata

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

const testSize = 64 << 20

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func generate(t *testing.T, name string, size, seed int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := Generate(path, size, seed); err != nil {
		t.Fatalf("Generate(%d, seed %d): %v", size, seed, err)
	}
	return path
}

func TestGenerateDeterministic(t *testing.T) {
	a := fileSHA256(t, generate(t, "a.raw", testSize, 1))
	b := fileSHA256(t, generate(t, "b.raw", testSize, 1))
	if a != b {
		t.Fatalf("two images with seed 1 differ: %s, %s", a, b)
	}
	if c := fileSHA256(t, generate(t, "c.raw", testSize, 2)); c == a {
		t.Fatalf("images with seeds 1 and 2 are the same: %s", a)
	}
}

func TestGenerateLayout(t *testing.T) {
	// A size that is not a multiple of RegionSize: the last region is short.
	const size = 10*RegionSize + 12345
	path := generate(t, "img.raw", size, 7)
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(img) != size {
		t.Fatalf("image is %d bytes, want %d", len(img), size)
	}
	kinds := Layout(size, 7)
	if len(kinds) != 11 {
		t.Fatalf("Layout: %d regions, want 11", len(kinds))
	}
	count := map[Kind]int{}
	for i, k := range kinds {
		count[k]++
		region := img[i*RegionSize : min((i+1)*RegionSize, size)]
		zero := bytes.Count(region, []byte{0}) == len(region)
		switch k {
		case Hole:
			if !zero {
				t.Errorf("region %d: a hole with data", i)
			}
		case Text:
			for j, c := range region {
				if !(c == ' ' || c == '\n' || c == ',' || c == '.' || c == '?' || (c|0x20 >= 'a' && c|0x20 <= 'z')) {
					t.Fatalf("region %d: text with byte %#x at %d", i, c, j)
				}
			}
		case Random:
			if zero || bytes.Count(region, []byte{0}) > len(region)/100 {
				t.Errorf("region %d: random bytes with too many zeros", i)
			}
		}
	}
	// round(3.3) = 3 holes, round(4.4) = 4 text, 4 random.
	if count[Hole] != 3 || count[Text] != 4 || count[Random] != 4 {
		t.Errorf("Layout(11 regions) = %v, want 3 holes, 4 text, 4 random", count)
	}
}

func TestLayoutProportions(t *testing.T) {
	for _, n := range []int64{1, 2, 10, 64, 1000, 2048} {
		kinds := Layout(n*RegionSize, 3)
		count := map[Kind]int64{}
		for _, k := range kinds {
			count[k]++
		}
		for k, want := range map[Kind]float64{Hole: 0.3, Text: 0.4, Random: 0.3} {
			if d := float64(count[k]) - want*float64(n); d > 1 || d < -1 {
				t.Errorf("%d regions: %d %s, want about %.1f", n, count[k], k, want*float64(n))
			}
		}
	}
	if Layout(0, 1) != nil {
		t.Errorf("Layout(0) is not empty")
	}
}

// deflated returns how many times compress/flate shrinks b.
func deflated(t *testing.T, b []byte) float64 {
	t.Helper()
	var out bytes.Buffer
	w, err := flate.NewWriter(&out, flate.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return float64(len(b)) / float64(out.Len())
}

func TestTextCompressesLikeProse(t *testing.T) {
	text := appendText(nil, 4<<20, rand.NewPCG(1, 2))
	if len(text) != 4<<20 {
		t.Fatalf("appendText wrote %d bytes, want %d", len(text), 4<<20)
	}
	// zstd -3 gives about 3.3x; deflate at its default level about the same.
	if r := deflated(t, text); r < 2.5 || r > 5 {
		t.Errorf("text deflates %.2fx, want 2.5-5x", r)
	}
	random := fillRegion(nil, Random, 1<<20, 1, 0)
	if r := deflated(t, random); r > 1.01 {
		t.Errorf("random bytes deflate %.3fx, want none", r)
	}
	if !bytes.Contains(text, []byte(". ")) || !bytes.Contains(text, []byte("\n")) || !bytes.Contains(text, []byte(", ")) {
		t.Errorf("text has no sentences, lines or commas: %q", text[:200])
	}
}

func TestMutate(t *testing.T) {
	const piece = 64 << 10
	path := generate(t, "img.raw", testSize, 1)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	changed, err := Mutate(path, 0.01, piece, 2)
	if err != nil {
		t.Fatalf("Mutate: %v", err)
	}
	// 1% of 1,024 pieces: round(10.24) = 10.
	if changed != 10*piece {
		t.Errorf("Mutate reports %d bytes, want %d", changed, 10*piece)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("Mutate changed the size from %d to %d", len(before), len(after))
	}
	var diff int64
	for off := 0; off < len(before); off += piece {
		if !bytes.Equal(before[off:off+piece], after[off:off+piece]) {
			diff += piece
		}
	}
	if diff != changed {
		t.Errorf("%d bytes differ in %d KiB pieces, Mutate reports %d", diff, piece>>10, changed)
	}

	// The same seed on the same image changes the same pieces the same way.
	other := generate(t, "other.raw", testSize, 1)
	if _, err := Mutate(other, 0.01, piece, 2); err != nil {
		t.Fatal(err)
	}
	if a, b := fileSHA256(t, path), fileSHA256(t, other); a != b {
		t.Errorf("Mutate with the same seed gave different images")
	}
}

func TestMutateAll(t *testing.T) {
	// A fraction of 1 overwrites every whole piece; a short tail stays.
	const piece = 4096
	path := filepath.Join(t.TempDir(), "small.raw")
	if err := os.WriteFile(path, make([]byte, 10*piece+100), 0o644); err != nil {
		t.Fatal(err)
	}
	changed, err := Mutate(path, 1, piece, 5)
	if err != nil {
		t.Fatal(err)
	}
	if changed != 10*piece {
		t.Errorf("changed %d, want %d", changed, 10*piece)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < 10*piece; off += piece {
		if bytes.Count(b[off:off+piece], []byte{0}) == piece {
			t.Errorf("piece at %d not overwritten", off)
		}
	}
	if bytes.Count(b[10*piece:], []byte{0}) != 100 {
		t.Errorf("the short tail was written")
	}
}

func TestMutateErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.raw")
	if err := os.WriteFile(path, make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		fraction float64
		piece    int64
	}{{0.01, 4096}, {0, 100}, {1.5, 100}, {0.5, 0}, {0.5, -1}} {
		if _, err := Mutate(path, c.fraction, c.piece, 1); err == nil {
			t.Errorf("Mutate(fraction %v, piece %d) on 1,000 bytes: no error", c.fraction, c.piece)
		}
	}
	if _, err := Mutate(filepath.Join(t.TempDir(), "missing"), 0.1, 100, 1); err == nil {
		t.Errorf("Mutate of a missing file: no error")
	}
	if err := Generate(path, 0, 1); err == nil {
		t.Errorf("Generate of 0 bytes: no error")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"512": 512, "64K": 64 << 10, "64k": 64 << 10, "256M": 256 << 20, "2G": 2 << 30, "2GiB": 2 << 30,
		"64KB": 64 << 10, "1.5G": 3 << 29, "1T": 1 << 40, "2Gi": 2 << 30,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "abc", "-1", "0", "0.5", "1.5K7", "1X"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func BenchmarkGenerate256M(b *testing.B) {
	path := filepath.Join(b.TempDir(), "img.raw")
	b.SetBytes(256 << 20)
	for b.Loop() {
		if err := Generate(path, 256<<20, 1); err != nil {
			b.Fatal(err)
		}
	}
}
