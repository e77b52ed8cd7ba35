package crypto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
)

func wantKind(t *testing.T, err error, kind core.Kind) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want kind %v", kind)
	}
	if got := core.KindOf(err); got != kind {
		t.Fatalf("error %q has kind %v, want %v", err, got, kind)
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := NewMasterKey()
	for _, n := range []int{0, 1, 15, 16, 17, 4096, 1 << 20} {
		pt := bytes.Repeat([]byte{byte(n)}, n)
		ad := []byte("blob ad")
		s := k.Seal(pt, ad)
		if len(s) != n+Overhead {
			t.Fatalf("len %d: sealed is %d bytes, want %d", n, len(s), n+Overhead)
		}
		got, err := k.Open(s, ad)
		if err != nil {
			t.Fatalf("len %d: %v", n, err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("len %d: round trip differs", n)
		}
	}
	// Nil and empty additional data are the same.
	s := k.Seal([]byte("x"), nil)
	if _, err := k.Open(s, []byte{}); err != nil {
		t.Fatal(err)
	}
	// Two seals of the same plaintext differ (random nonce).
	if bytes.Equal(k.Seal([]byte("same"), nil), k.Seal([]byte("same"), nil)) {
		t.Fatal("two seals are identical: nonce not random")
	}
}

func TestOpenDetectsTamper(t *testing.T) {
	k := NewMasterKey()
	pt := []byte("the quick brown fox jumps over the lazy dog")
	ad := []byte("pack 1234 blob 7")
	s := k.Seal(pt, ad)
	regions := map[string][2]int{
		"nonce": {0, NonceSize},
		"body":  {NonceSize, len(s) - TagSize},
		"tag":   {len(s) - TagSize, len(s)},
	}
	for name, r := range regions {
		for i := r[0]; i < r[1]; i++ {
			for _, bit := range []byte{0x01, 0x80} {
				c := bytes.Clone(s)
				c[i] ^= bit
				_, err := k.Open(c, ad)
				wantKind(t, err, core.KindCorrupt)
				if name == "nonce" && i == 0 && bit == 1 {
					t.Logf("tamper message: %v", err)
				}
			}
		}
	}
	for _, bad := range [][]byte{nil, []byte("pack 1234 blob 8"), ad[:len(ad)-1], append(bytes.Clone(ad), 0)} {
		_, err := k.Open(s, bad)
		wantKind(t, err, core.KindCorrupt)
	}
	// Truncated and extended.
	for _, c := range [][]byte{s[:len(s)-1], s[1:], append(bytes.Clone(s), 0)} {
		_, err := k.Open(c, ad)
		wantKind(t, err, core.KindCorrupt)
	}
	// The original still opens.
	if _, err := k.Open(s, ad); err != nil {
		t.Fatal(err)
	}
}

func TestOpenShortInput(t *testing.T) {
	k := NewMasterKey()
	for n := 0; n <= Overhead; n++ {
		_, err := k.Open(make([]byte, n), nil)
		wantKind(t, err, core.KindCorrupt)
	}
	_, err := k.Open(nil, nil)
	var ce *core.Error
	if !errors.As(err, &ce) || !bytes.Contains([]byte(ce.Message), []byte("shorter")) {
		t.Fatalf("short input message = %v", err)
	}
}

func TestKeysAreSeparate(t *testing.T) {
	a, b := NewMasterKey(), NewMasterKey()
	if a.Equal(b) {
		t.Fatal("two new master keys are equal")
	}
	sa, sb := a.Seal([]byte("for a"), nil), b.Seal([]byte("for b"), nil)
	_, err := b.Open(sa, nil)
	wantKind(t, err, core.KindCorrupt)
	_, err = a.Open(sb, nil)
	wantKind(t, err, core.KindCorrupt)
	if a.ChunkID([]byte("x")) == b.ChunkID([]byte("x")) {
		t.Fatal("chunk ids do not depend on the key")
	}
	// A key built from the same bytes opens the data.
	c := &MasterKey{Encrypt: a.Encrypt, ID: a.ID}
	if _, err := c.Open(sa, nil); err != nil {
		t.Fatal(err)
	}
}

func TestChunkID(t *testing.T) {
	k := &MasterKey{}
	for i := range k.ID {
		k.ID[i] = byte(i)
	}
	data := []byte("cairn chunk")
	if k.ChunkID(data) != k.ChunkID(bytes.Clone(data)) {
		t.Fatal("ChunkID is not deterministic")
	}
	if k.ChunkID(data) == k.ChunkID([]byte("cairn chunK")) {
		t.Fatal("ChunkID ignores content")
	}
	if k.chunkIDWith(algoHMACSHA256, data) == k.chunkIDWith(algoBLAKE3, data) {
		t.Fatal("algorithms agree: switch broken")
	}
	if k.ChunkID(data) != k.chunkIDWith(chunkIDAlgorithm, data) || ChunkIDAlgorithm() != "blake3" {
		t.Fatal("ChunkID does not use the chosen algorithm")
	}
	// Changing Encrypt does not change ids; changing ID does.
	k2 := &MasterKey{ID: k.ID}
	k2.Encrypt[0] = 1
	if k.ChunkID(data) != k2.ChunkID(data) {
		t.Fatal("ChunkID depends on the encryption key")
	}
}

// TestChunkIDKnownAnswers pins both keyed hashes against independent values:
// HMAC-SHA-256 (key 00 01 .. 1f, "abc", computed with Python's hmac) and keyed
// BLAKE3 (the official BLAKE3 test vectors, key "whats the Elvish word for
// friend", inputs of 0 and 1 bytes).
func TestChunkIDKnownAnswers(t *testing.T) {
	k := &MasterKey{}
	for i := range k.ID {
		k.ID[i] = byte(i)
	}
	if got, want := hex.EncodeToString(ptr(k.chunkIDWith(algoHMACSHA256, []byte("abc")))), "f0133729c4163dede81e21cd47839256da58171238c8a0d874397c73b14e1e47"; got != want {
		t.Errorf("hmac-sha256 = %s, want %s", got, want)
	}
	copy(k.ID[:], "whats the Elvish word for friend")
	for _, c := range []struct {
		in   []byte
		want string
	}{
		{nil, "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26"},
		{[]byte{0}, "6d7878dfff2f485635d39013278ae14f1454b8c0a3a2d34bc1ab38228a80c95b"},
	} {
		if got := hex.EncodeToString(ptr(k.chunkIDWith(algoBLAKE3, c.in))); got != c.want {
			t.Errorf("blake3(%x) = %s, want %s", c.in, got, c.want)
		}
	}
}

func ptr(b [32]byte) []byte { return b[:] }

func TestConcurrentUse(t *testing.T) {
	k := NewMasterKey()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				pt := []byte{byte(g), byte(i)}
				got, err := k.Open(k.Seal(pt, pt), pt)
				if err != nil || !bytes.Equal(got, pt) {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
				k.ChunkID(pt)
			}
		}()
	}
	wg.Wait()
}
