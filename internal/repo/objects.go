package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"

	"github.com/klauspost/compress/zstd"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/core"
)

func defaultWorkers() int { return runtime.GOMAXPROCS(0) }

func jsonIndent(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc
}

// Blobs are compressed and decompressed by zstd_cgo.go (the C library) or,
// in builds without cgo, zstd_purego.go. Frames carry no checksum of their
// own, and one that has is not checked: a blob is authenticated (AEAD, bound
// to its id) before it is decompressed, and restore and verify recompute its
// id after. Sealed objects (openObject) are always read by the pure-Go
// streaming decoder, under a size limit.

// compress returns the zstd form of b and true when that is smaller;
// otherwise b itself and false. Blocks that look random (a byte histogram of
// a sample with nearly 8 bits of entropy per byte) are not tried at all.
func compress(b []byte, dst []byte) ([]byte, bool) {
	if len(b) < 64 || looksRandom(b) {
		return b, false
	}
	c, err := zstdEncode(b, dst)
	if err != nil || len(c) >= len(b) {
		return b, false
	}
	return c, true
}

// looksRandom estimates the entropy of three 1 KiB samples of b.
func looksRandom(b []byte) bool {
	if len(b) < 16<<10 {
		return false
	}
	var hist [256]int
	const sample = 1024
	n := 0
	for _, at := range []int{0, len(b)/2 - sample/2, len(b) - sample} {
		for _, c := range b[at : at+sample] {
			hist[c]++
		}
		n += sample
	}
	var h float64
	for _, k := range hist {
		if k > 0 {
			p := float64(k) / float64(n)
			h -= p * math.Log2(p)
		}
	}
	// 3072 uniformly random bytes show about 7.92 bits; text about 4-5.
	return h > 7.8
}

// decompress undoes compress for a blob of rawLen plaintext bytes.
func decompress(b []byte, zstdFlag bool, rawLen int, dst []byte) ([]byte, error) {
	if !zstdFlag {
		return b, nil
	}
	out, err := zstdDecode(b, rawLen, dst)
	if err != nil {
		return nil, err
	}
	if len(out) != rawLen {
		return nil, fmt.Errorf("decompressed to %d bytes, want %d", len(out), rawLen)
	}
	return out, nil
}

// Sealed objects (index files, manifests, locks) are stored as
// Seal(flag ‖ payload, ad): flag 0 means the payload is the plaintext, 1
// that it is zstd-compressed.

func (r *Repository) sealObject(plain, ad []byte) []byte {
	c, ok := compress(plain, nil)
	flag := byte(0)
	if ok {
		flag = 1
	}
	buf := make([]byte, 0, 1+len(c))
	buf = append(append(buf, flag), c...)
	return r.key.Seal(buf, ad)
}

func (r *Repository) openObject(name string, sealed, ad []byte, limit int) ([]byte, error) {
	b, err := r.key.Open(sealed, ad)
	if err != nil {
		return nil, core.Corrupt("%s: fails authentication (damaged, or not of this repository)", name)
	}
	if len(b) < 1 || b[0] > 1 {
		return nil, core.Corrupt("%s: unknown encoding", name)
	}
	if b[0] == 0 {
		return b[1:], nil
	}
	out, err := zstd.NewReader(bytes.NewReader(b[1:]), zstd.WithDecoderMaxMemory(uint64(limit)), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, core.Corrupt("%s: %v", name, err)
	}
	defer out.Close()
	plain, err := io.ReadAll(io.LimitReader(out, int64(limit)+1))
	if err != nil {
		return nil, core.Corrupt("%s: decompressing: %v", name, err)
	}
	if len(plain) > limit {
		return nil, core.Corrupt("%s: larger than %d bytes", name, limit)
	}
	return plain, nil
}

// saveObject seals plain and stores it under name.
func (r *Repository) saveObject(ctx context.Context, name string, plain, ad []byte) error {
	return blob.SaveBytes(ctx, r.store, name, r.sealObject(plain, ad))
}

// loadObject reads and opens a sealed object of at most limit plaintext bytes.
func (r *Repository) loadObject(ctx context.Context, name string, ad []byte, limit int) ([]byte, error) {
	b, err := loadAll(ctx, r.store, name, int64(limit)+1024)
	if err != nil {
		if core.KindOf(err) == core.KindNotFound {
			return nil, err
		}
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return r.openObject(name, b, ad, limit)
}
