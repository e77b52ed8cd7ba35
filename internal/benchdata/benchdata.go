// Package benchdata writes the deterministic disk images the repository
// benchmark (scripts/bench-repo.sh) backs up, and changes them in scattered
// pieces between two backups.
//
// An image is cut in regions of RegionSize bytes. A seeded shuffle makes 30% of
// them holes (never written, so the file stays sparse), 40% compressible text
// (pseudo-English: words of a fixed generated vocabulary with Zipf-like
// frequencies, in sentences and lines; zstd at its default level shrinks it
// about 3-4x, like real text) and 30% random bytes. The content of a region
// depends only on the seed and the region's index, so the same seed always
// gives the same image, and regions are generated in parallel.
//
// The package uses the standard library only.
package benchdata

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// RegionSize is the granularity of the image layout: each region is a hole,
// text or random bytes as a whole (the last one may be shorter).
const RegionSize = 1 << 20

// Kind is what a region holds.
type Kind uint8

const (
	Hole   Kind = iota // never written: a hole in the sparse file, read as zeros
	Text               // pseudo-English text
	Random             // random bytes, incompressible
)

func (k Kind) String() string {
	switch k {
	case Hole:
		return "hole"
	case Text:
		return "text"
	case Random:
		return "random"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Streams keep the generators of the layout, of the regions and of Mutate
// independent of each other for the same seed.
const (
	streamLayout uint64 = 0x6c61796f75740001
	streamText   uint64 = 0x7465787400000002
	streamRandom uint64 = 0x72616e646f6d0003
	streamPick   uint64 = 0x7069636b00000004
	streamMutate uint64 = 0x6d75746174650005
)

// Layout returns the kind of each region of an image of size bytes made with
// seed: round(30%) of the regions are holes, round(40%) text, the rest random,
// in a seeded shuffle.
func Layout(size int64, seed int64) []Kind {
	if size <= 0 {
		return nil
	}
	n := int((size + RegionSize - 1) / RegionSize)
	holes := int(math.Round(float64(n) * 0.3))
	text := int(math.Round(float64(n) * 0.4))
	kinds := make([]Kind, n)
	for i := range kinds {
		switch {
		case i < holes:
			kinds[i] = Hole
		case i < holes+text:
			kinds[i] = Text
		default:
			kinds[i] = Random
		}
	}
	r := rand.New(rand.NewPCG(uint64(seed), streamLayout))
	r.Shuffle(n, func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	return kinds
}

// Generate writes a sparse image of size bytes at path (replacing any file
// there), laid out as Layout(size, seed) says. Holes are left by Truncate and
// never written. The data is not synced to disk.
func Generate(path string, size int64, seed int64) (err error) {
	if size <= 0 {
		return fmt.Errorf("benchdata: image size %d: must be positive", size)
	}
	kinds := Layout(size, seed)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("benchdata: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("benchdata: %w", cerr)
		}
	}()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("benchdata: %w", err)
	}

	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
		failed  atomic.Bool
	)
	workers := min(runtime.GOMAXPROCS(0), len(kinds))
	for range workers {
		wg.Go(func() {
			buf := make([]byte, 0, RegionSize+maxSentence)
			for !failed.Load() {
				i := next.Add(1) - 1
				if i >= int64(len(kinds)) {
					return
				}
				if kinds[i] == Hole {
					continue
				}
				off := i * RegionSize
				n := min(int64(RegionSize), size-off)
				buf = fillRegion(buf[:0], kinds[i], int(n), seed, uint64(i))
				if _, err := f.WriteAt(buf, off); err != nil {
					errOnce.Do(func() { first = fmt.Errorf("benchdata: %w", err) })
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// fillRegion appends the n bytes of region i of kind k to buf.
func fillRegion(buf []byte, k Kind, n int, seed int64, i uint64) []byte {
	switch k {
	case Text:
		pcg := rand.NewPCG(uint64(seed)^streamText, splitmix(i^streamText))
		return appendText(buf, n, pcg)
	case Random:
		at := len(buf)
		buf = slices.Grow(buf, n)[:at+n]
		rand.NewChaCha8(chachaSeed(seed, streamRandom, i)).Read(buf[at:])
		return buf
	}
	panic("benchdata: fillRegion of a " + k.String())
}

// Mutate overwrites fraction of the image at path with new random bytes, in
// round(fraction*size/piece) distinct pieces of piece bytes at offsets that
// are multiples of piece, chosen uniformly over the whole image (a last piece
// shorter than piece is never chosen). Each piece written differs from what
// it replaces. It returns the bytes changed: the number of pieces times piece.
func Mutate(path string, fraction float64, piece int64, seed int64) (changed int64, err error) {
	if piece <= 0 || piece > 1<<30 {
		return 0, fmt.Errorf("benchdata: piece size %d: must be between 1 and 1 GiB", piece)
	}
	if !(fraction > 0 && fraction <= 1) {
		return 0, fmt.Errorf("benchdata: fraction %v: must be in (0, 1]", fraction)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("benchdata: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("benchdata: %w", cerr)
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("benchdata: %w", err)
	}
	size := st.Size()
	pieces := size / piece
	if pieces == 0 {
		return 0, fmt.Errorf("benchdata: %s: %d bytes, smaller than one piece of %d", path, size, piece)
	}
	k := max(int64(math.Round(fraction*float64(size)/float64(piece))), 1)
	k = min(k, pieces)

	// Robert Floyd's sampling: k distinct indices out of pieces, uniformly.
	pick := rand.New(rand.NewPCG(uint64(seed)^streamPick, streamPick))
	chosen := make(map[int64]bool, k)
	offsets := make([]int64, 0, k)
	for j := pieces - k; j < pieces; j++ {
		t := pick.Int64N(j + 1)
		if chosen[t] {
			t = j
		}
		chosen[t] = true
		offsets = append(offsets, t*piece)
	}
	slices.Sort(offsets)

	src := rand.NewChaCha8(chachaSeed(seed, streamMutate, 0))
	old := make([]byte, piece)
	buf := make([]byte, piece)
	for _, off := range offsets {
		if _, err := f.ReadAt(old, off); err != nil {
			return 0, fmt.Errorf("benchdata: %w", err)
		}
		for {
			src.Read(buf)
			if !bytes.Equal(buf, old) {
				break
			}
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return 0, fmt.Errorf("benchdata: %w", err)
		}
	}
	return k * piece, nil
}

// ParseSize reads a size such as 2G, 64M, 64K, 512 or 1.5G: binary units
// (K = 1024), an optional trailing "i" or "iB"/"B" accepted (2GiB, 64KB).
func ParseSize(s string) (int64, error) {
	t := s
	for _, suf := range []string{"iB", "B", "i"} {
		if len(t) > len(suf) && t[len(t)-len(suf):] == suf {
			t = t[:len(t)-len(suf)]
			break
		}
	}
	mult := 1.0
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:len(t)-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil {
		return 0, fmt.Errorf("benchdata: size %q: want a number with an optional K, M, G or T", s)
	}
	n := v * mult
	if n < 1 || n > math.MaxInt64/2 || math.IsNaN(n) {
		return 0, fmt.Errorf("benchdata: size %q out of range", s)
	}
	if n != math.Trunc(n) {
		return 0, errors.New("benchdata: size " + s + " is not a whole number of bytes")
	}
	return int64(n), nil
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func chachaSeed(seed int64, stream, i uint64) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], uint64(seed))
	binary.LittleEndian.PutUint64(s[8:], stream)
	binary.LittleEndian.PutUint64(s[16:], i)
	binary.LittleEndian.PutUint64(s[24:], splitmix(uint64(seed)^stream^i))
	return s
}
