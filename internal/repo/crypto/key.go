package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/zeebo/blake3"
)

const (
	// KeySize is the size in bytes of each half of a master key.
	KeySize = 32
	// NonceSize is the size of the random AES-GCM nonce that starts every sealed blob.
	NonceSize = 12
	// TagSize is the size of the GCM authentication tag that ends every sealed blob.
	TagSize = 16
	// Overhead is the number of bytes Seal adds to a plaintext.
	Overhead = NonceSize + TagSize
)

// MasterKey is a repository's secret: Encrypt keys AES-256-GCM for every blob,
// ID keys the hash that names chunks. Both are random and never derived from a
// password. The fields must not be changed once the key has been used.
// A *MasterKey is safe for concurrent use.
type MasterKey struct {
	Encrypt [KeySize]byte
	ID      [KeySize]byte

	once    sync.Once
	aead    cipher.AEAD
	hashers sync.Pool // of *blake3.Hasher keyed with ID: each holds 8 KiB of buffers
}

// NewMasterKey returns a fresh master key from crypto/rand.
func NewMasterKey() *MasterKey {
	k := &MasterKey{}
	// crypto/rand.Read never returns an error (it aborts the program instead).
	_, _ = rand.Read(k.Encrypt[:])
	_, _ = rand.Read(k.ID[:])
	return k
}

// gcm returns the AEAD for k.Encrypt, built once.
func (k *MasterKey) gcm() cipher.AEAD {
	k.once.Do(func() {
		block, err := aes.NewCipher(k.Encrypt[:])
		if err != nil { // impossible: the key is always 32 bytes
			panic("crypto: aes.NewCipher: " + err.Error())
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			panic("crypto: cipher.NewGCM: " + err.Error())
		}
		k.aead = aead
	})
	return k.aead
}

// Seal encrypts and authenticates plaintext, binding additionalData (which is
// authenticated but not stored). The result is nonce(12) ‖ ciphertext ‖ tag(16),
// len(plaintext)+Overhead bytes, with a fresh random nonce.
func (k *MasterKey) Seal(plaintext, additionalData []byte) []byte {
	out := make([]byte, NonceSize, NonceSize+len(plaintext)+TagSize)
	_, _ = rand.Read(out)
	return k.gcm().Seal(out, out[:NonceSize], plaintext, additionalData)
}

// SealAppend is Seal that appends the sealed form to dst and returns the
// extended slice.
func (k *MasterKey) SealAppend(dst, plaintext, additionalData []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, NonceSize)...)
	_, _ = rand.Read(dst[n:])
	nonce := dst[n : n+NonceSize : n+NonceSize]
	return k.gcm().Seal(dst, nonce, plaintext, additionalData)
}

// OpenTo is Open that decrypts into dst's storage (dst[:0]); dst must not
// overlap sealed.
func (k *MasterKey) OpenTo(dst, sealed, additionalData []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, core.Corrupt("sealed blob is %d bytes, shorter than the %d-byte minimum (nonce and tag)", len(sealed), Overhead)
	}
	plain, err := k.gcm().Open(dst[:0], sealed[:NonceSize], sealed[NonceSize:], additionalData)
	if err != nil {
		return nil, core.Corrupt("sealed blob failed authentication (AES-256-GCM): tampered, truncated, or sealed with another key or context")
	}
	return plain, nil
}

// Open checks and decrypts a blob made by Seal with the same additionalData.
// Any short, truncated, tampered or foreign blob gives an error of
// core.KindCorrupt; Open never panics on its input.
func (k *MasterKey) Open(sealed, additionalData []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, core.Corrupt("sealed blob is %d bytes, shorter than the %d-byte minimum (nonce and tag)", len(sealed), Overhead)
	}
	nonce, body := sealed[:NonceSize], sealed[NonceSize:]
	plain, err := k.gcm().Open(make([]byte, 0, len(body)-TagSize), nonce, body, additionalData)
	if err != nil {
		return nil, core.Corrupt("sealed blob failed authentication (AES-256-GCM): tampered, truncated, or sealed with another key or context")
	}
	return plain, nil
}

// chunkIDAlgo names a keyed hash for chunk ids.
type chunkIDAlgo int

const (
	algoHMACSHA256 chunkIDAlgo = iota
	algoBLAKE3
)

func (a chunkIDAlgo) String() string {
	switch a {
	case algoHMACSHA256:
		return "hmac-sha256"
	case algoBLAKE3:
		return "blake3"
	}
	return "unknown"
}

// chunkIDAlgorithm is the keyed hash ChunkID uses, chosen by BenchmarkChunkID
// (see the package documentation). Changing it changes every chunk id: it is
// part of the repository format.
const chunkIDAlgorithm = algoBLAKE3

// ChunkIDAlgorithm names the keyed hash ChunkID uses ("hmac-sha256" or "blake3"),
// for the repository config and FORMAT.md.
func ChunkIDAlgorithm() string { return chunkIDAlgorithm.String() }

// ChunkID returns the keyed hash of plaintext under k.ID: the name of a chunk.
// Without the key, ids reveal nothing about the content (no confirmation of a
// guessed file).
func (k *MasterKey) ChunkID(plaintext []byte) [32]byte {
	return k.chunkIDWith(chunkIDAlgorithm, plaintext)
}

func (k *MasterKey) chunkIDWith(algo chunkIDAlgo, plaintext []byte) [32]byte {
	var id [32]byte
	switch algo {
	case algoBLAKE3:
		h, _ := k.hashers.Get().(*blake3.Hasher)
		if h == nil {
			var err error
			if h, err = blake3.NewKeyed(k.ID[:]); err != nil { // impossible: the key is always 32 bytes
				panic("crypto: blake3.NewKeyed: " + err.Error())
			}
		}
		_, _ = h.Write(plaintext)
		h.Sum(id[:0])
		h.Reset()
		k.hashers.Put(h)
	default:
		m := hmac.New(sha256.New, k.ID[:])
		_, _ = m.Write(plaintext)
		m.Sum(id[:0])
	}
	return id
}
