// Package crypto holds the repository's secrets and the primitives built on
// them: master keys, sealing blobs, naming chunks, and password key files.
//
// # Master key
//
// A repository has one random MasterKey of two independent 32-byte halves from
// crypto/rand: Encrypt, the AES-256-GCM key for every blob, and ID, the key of
// the hash that names chunks. Neither is derived from a password, so changing or
// adding a password never re-encrypts data.
//
// # Sealed blobs
//
// Seal produces nonce(12) ‖ ciphertext ‖ tag(16): AES-256-GCM with a fresh
// random 96-bit nonce and caller-chosen additional data (authenticated, not
// stored), so a blob can be bound to its place or type. Open refuses any short,
// truncated, tampered or foreign blob with a core.KindCorrupt error and never
// panics. The cipher.AEAD is built once per key and shared by goroutines.
// Random nonces are safe for far more than 2^32 blobs per key at the sizes a
// repository holds (NIST SP 800-38D's bound on the collision probability).
//
// # Chunk ids
//
// ChunkID is a keyed hash of the plaintext under MasterKey.ID, so that ids do
// not let anyone without the key confirm a guessed content. Two candidates are
// implemented (chunkIDWith): HMAC-SHA-256 (stdlib, SHA-NI) and keyed BLAKE3
// (github.com/zeebo/blake3 v0.2.4, AVX2/AVX-512). BenchmarkChunkID, on the
// reference machine (2 vCPU AMD EPYC with SHA-NI, AVX2, AVX-512; Go 1.26.8),
// 3 runs each:
//
//	input    hmac-sha256             blake3
//	64 KiB   39.1-39.7 µs 1.65-1.68 GB/s  23.0-24.3 µs 2.70-2.85 GB/s
//	1 MiB    619-634 µs  1.65-1.70 GB/s  322-325 µs  3.23-3.25 GB/s
//
// Keyed BLAKE3 is 1.7x (64 KiB) to 1.9x (1 MiB) faster on one core, so
// ChunkID uses keyed BLAKE3 (ChunkIDAlgorithm() == "blake3"). The choice is part
// of the repository format: TestChunkIDKnownAnswers pins both hashes against
// independent values and TestVectorsV1 pins the id ChunkID gives. For comparison
// AES-256-GCM Seal/Open of 1 MiB ran at 2.0-2.5 GB/s (BenchmarkSeal, BenchmarkOpen).
//
// # Key files
//
// Each password of a repository has a KeyFile (JSON, format version 1):
//
//	{
//	  "version": 1,             // a reader refuses a higher one: "upgrade cairn"
//	  "kdf": "argon2id",        // the only kdf of version 1
//	  "time": 3,                // argon2id passes
//	  "memory_kib": 196608,     // argon2id memory, at most 4 GiB
//	  "threads": 2,             // argon2id lanes, 1..255
//	  "salt": "<base64>",       // 32 random bytes (16..64 accepted)
//	  "wrapped": "<base64>",    // Seal(Encrypt ‖ ID) under the argon2id key, AD "cairn key file v1": 92 bytes
//	  "created": "<RFC 3339>",
//	  "host": "...", "username": "..."
//	}
//
// Unlock derives a 32-byte key-encryption key with argon2id (x/crypto) and opens
// "wrapped"; a failed authentication means a wrong password or a key file of
// another repository and gives core.KindUnauthorized "wrong password (or not a
// key of this repository)". All key files of a repository wrap the same master
// key, so a password is added by unlocking with one and calling NewKeyFile with
// the other.
//
// DefaultKDFParams (time 3, 64 MiB, 4 lanes) are RFC 9106's second
// recommended option (its first, 2 GiB, is too much for a small server or an
// agent on a tenant's machine). Every cairn command that opens a repository
// pays the unlock once, in a fresh process whose memory the kernel must
// first supply; measured that way (BenchmarkKDFCost) on the reference
// machine (2 cores):
//
//	time 3,  64 MiB, 4 lanes: 0.23 s  (chosen)
//	time 4,  64 MiB, 4 lanes: 0.26 s
//	time 2,  96 MiB, 4 lanes: 0.30 s
//	time 3, 128 MiB, 4 lanes: 0.46 s
//	time 3, 192 MiB, 2 lanes: 0.70-0.76 s  (the first default, chosen when
//	                                        warm memory showed only 0.30 s)
//
// The parameters are stored in each key file, so key files made with other
// costs keep working. TestKDFParams are tiny and for tests only.
//
// # Test vectors
//
// testdata/keyfile-v1.json (TestKDFParams, password "correct horse", a fixed
// master key) and testdata/sealed-v1.bin (a known plaintext sealed with it) are
// committed; TestVectorsV1 unlocks and opens them, so the format cannot change
// silently. Regenerating them (go test -run TestVectorsV1 -update) is a format
// change and needs a new version.
package crypto
