package repo

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/blob/mem"
	"github.com/cairn-backup/cairn/internal/chunker"
	"github.com/cairn-backup/cairn/internal/repo/crypto"
)

var testPassword = []byte("correct horse battery staple")

func testOptions() Options {
	kdf := crypto.TestKDFParams()
	return Options{KDF: &kdf}
}

// newTestRepo creates a repository in a fresh memory store.
func newTestRepo(t testing.TB) (*Repository, blob.Store) {
	t.Helper()
	store := mem.New()
	r, err := Init(context.Background(), store, testPassword, InitOptions{}, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	return r, store
}

// reopen opens the repository in store again with its index.
func reopen(t testing.TB, store blob.Store) *Repository {
	t.Helper()
	r, err := Open(context.Background(), store, testPassword, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// writeImage writes a sparse raw image of size bytes: data runs of random
// and repetitive bytes, holes and zero runs, by seed.
func writeImage(t testing.TB, path string, size int64, seed uint64) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	img := make([]byte, size)
	for off := int64(0); off < size; {
		n := min(int64(rng.IntN(300<<10)+1), size-off)
		switch rng.IntN(4) {
		case 0: // hole
		case 1:
			for i := off; i < off+n; i++ {
				img[i] = byte(rng.Uint32())
			}
		case 2:
			copy(img[off:off+n], bytes.Repeat([]byte("cairn text "), int(n/11)+1))
		case 3: // explicit zeros, written
		}
		off += n
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	const piece = 4096
	for off := int64(0); off < size; off += piece {
		end := min(off+piece, size)
		if !chunker.IsZero(img[off:end]) {
			if _, err := f.WriteAt(img[off:end], off); err != nil {
				t.Fatal(err)
			}
		}
	}
	return img
}

func rawSource(t testing.TB, path string) (ImageSource, func()) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	ext, err := chunker.SparseExtents(f)
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	return ImageSource{R: f, Size: fi.Size(), Extents: ext, Format: "raw", Path: abs}, func() { f.Close() }
}
