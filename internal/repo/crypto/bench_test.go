package crypto

import (
	"fmt"
	"runtime/debug"
	"testing"
)

// BenchmarkChunkID compares the two keyed hashes that ChunkID can use.
// The faster one on the reference machine is chunkIDAlgorithm.
func BenchmarkChunkID(b *testing.B) {
	k := NewMasterKey()
	for _, algo := range []chunkIDAlgo{algoHMACSHA256, algoBLAKE3} {
		b.Run(algo.String(), func(b *testing.B) {
			for _, size := range []int{64 << 10, 1 << 20} {
				data := make([]byte, size)
				for i := range data {
					data[i] = byte(i*7 + i>>8)
				}
				b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
					b.SetBytes(int64(size))
					for b.Loop() {
						k.chunkIDWith(algo, data)
					}
				})
			}
		})
	}
}

func BenchmarkSeal(b *testing.B) {
	k := NewMasterKey()
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		k.Seal(data, nil)
	}
}

func BenchmarkOpen(b *testing.B) {
	k := NewMasterKey()
	sealed := k.Seal(make([]byte, 1<<20), nil)
	b.SetBytes(1 << 20)
	for b.Loop() {
		if _, err := k.Open(sealed, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnlock measures DefaultKDFParams: the time a user waits per password.
func BenchmarkUnlock(b *testing.B) {
	kf, err := NewKeyFile(NewMasterKey(), []byte("pw"), DefaultKDFParams())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := kf.Unlock([]byte("pw")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKDFCost measures one unlock for candidate argon2id parameters, to
// tune DefaultKDFParams: go test -run '^$' -bench KDFCost ./internal/repo/crypto/
// Memory is handed back to the kernel before each unlock, as a fresh cairn
// process would find it: touching it first is a large part of the cost.
func BenchmarkKDFCost(b *testing.B) {
	for _, p := range []KDFParams{
		{3, 64 << 10, 4}, {4, 64 << 10, 4}, {2, 96 << 10, 4}, {3, 128 << 10, 4}, {3, 192 << 10, 2},
	} {
		b.Run(fmt.Sprintf("time=%d,memory=%dMiB,threads=%d", p.Time, p.MemoryKiB>>10, p.Threads), func(b *testing.B) {
			kf, err := NewKeyFile(NewMasterKey(), []byte("pw"), p)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				b.StopTimer()
				debug.FreeOSMemory()
				b.StartTimer()
				if _, err := kf.Unlock([]byte("pw")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
