package repo

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// proseish returns n bytes of words drawn unevenly from a small vocabulary:
// text that zstd compresses about 3x.
func proseish(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	words := make([]string, 500)
	for i := range words {
		w := make([]byte, 2+r.IntN(8))
		for j := range w {
			w[j] = byte('a' + r.IntN(26))
		}
		words[i] = string(w)
	}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[int(float64(len(words))*r.Float64()*r.Float64())])
		if r.IntN(12) == 0 {
			b.WriteString(". ")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

func TestCompressRoundTrip(t *testing.T) {
	random := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{3, 4}).Read(random)
	cases := []struct {
		name     string
		data     []byte
		wantZstd bool
	}{
		{"empty", nil, false},
		{"63 bytes", proseish(63, 1), false}, // below the threshold: stored as is
		{"text 64 KiB", proseish(64<<10, 2), true},
		{"text 128 KiB", proseish(128<<10, 3), true},
		{"text 4 MiB", proseish(4<<20, 4), true},
		{"zeros 128 KiB", make([]byte, 128<<10), true},
		{"random 128 KiB", random[:128<<10], false},
		{"random 1 MiB", random, false},
		{"random 8 KiB", random[:8<<10], false}, // too small to sample: tried, not smaller
		{"half text, half random", append(proseish(64<<10, 5), random[:64<<10]...), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, ok := compress(c.data, make([]byte, 0, 16))
			if ok != c.wantZstd {
				t.Fatalf("compress: zstd = %v, want %v (%d -> %d bytes)", ok, c.wantZstd, len(c.data), len(out))
			}
			if !ok {
				if !bytes.Equal(out, c.data) {
					t.Fatal("not compressed, but the bytes differ from the input")
				}
				return
			}
			if len(out) >= len(c.data) {
				t.Fatalf("compressed %d bytes to %d", len(c.data), len(out))
			}
			back, err := decompress(out, true, len(c.data), nil)
			if err != nil {
				t.Fatalf("decompress: %v", err)
			}
			if !bytes.Equal(back, c.data) {
				t.Fatal("round trip changed the bytes")
			}
			for _, n := range []int{len(c.data) - 1, len(c.data) + 1} {
				_, err := decompress(out, true, n, nil)
				if err == nil {
					t.Fatalf("decompress accepted a raw length of %d for %d bytes", n, len(c.data))
				}
				// Either decoder names the lengths; none says only "buffer too small".
				if !strings.Contains(err.Error(), fmt.Sprint(n)) {
					t.Errorf("raw length %d for %d bytes: error %q does not name the length", n, len(c.data), err)
				}
			}
			if _, err := decompress(out[:len(out)-1], true, len(c.data), nil); err == nil {
				t.Fatal("decompress accepted a truncated frame")
			}
		})
	}
	// Text compresses at least 2.5x with either encoder.
	text := proseish(128<<10, 6)
	out, _ := compress(text, nil)
	if r := float64(len(text)) / float64(len(out)); r < 2.5 {
		t.Errorf("text compressed %.2fx, want at least 2.5x", r)
	}
}

// TestCompressConcurrent compresses from many goroutines at once, each
// checking its own round trips (the encoders are pooled per goroutine).
func TestCompressConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				data := proseish(32<<10+i*1000, uint64(g*100+i))
				out, ok := compress(data, nil)
				if !ok {
					errs <- fmt.Errorf("goroutine %d: text not compressed", g)
					return
				}
				back, err := decompress(out, true, len(data), nil)
				if err != nil || !bytes.Equal(back, data) {
					errs <- fmt.Errorf("goroutine %d, round %d: round trip failed: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestCompressFramesAreStandard checks that the blobs of either build are
// plain zstd frames: the pure-Go codec reads what compress wrote, and
// decompress reads what the pure-Go encoder wrote (a repository written by
// a build without cgo, or the other way round).
func TestCompressFramesAreStandard(t *testing.T) {
	text := proseish(200<<10, 7)
	out, ok := compress(text, nil)
	if !ok {
		t.Fatal("text not compressed")
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	back, err := dec.DecodeAll(out, nil)
	if err != nil || !bytes.Equal(back, text) {
		t.Fatalf("the pure-Go decoder read compress's frame wrong (err %v)", err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	if err != nil {
		t.Fatal(err)
	}
	other := enc.EncodeAll(text, nil)
	back, err = decompress(other, true, len(text), nil)
	if err != nil || !bytes.Equal(back, text) {
		t.Fatalf("decompress read the pure-Go encoder's frame wrong (err %v)", err)
	}
}
