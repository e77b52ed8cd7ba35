package crypto

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
)

func TestKeyFileTwoPasswords(t *testing.T) {
	master := NewMasterKey()
	kf1, err := NewKeyFile(master, []byte("first password"), TestKDFParams())
	if err != nil {
		t.Fatal(err)
	}
	kf2, err := NewKeyFile(master, []byte("second password"), TestKDFParams())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(kf1.Salt, kf2.Salt) || bytes.Equal(kf1.Wrapped, kf2.Wrapped) {
		t.Fatal("two key files share salt or wrapped bytes")
	}
	for _, c := range []struct {
		kf *KeyFile
		pw string
	}{{kf1, "first password"}, {kf2, "second password"}} {
		data, err := c.kf.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := ParseKeyFile(data)
		if err != nil {
			t.Fatalf("parse %s: %v", data, err)
		}
		if !parsed.Created.Equal(c.kf.Created) || parsed.Host != c.kf.Host || parsed.Username != c.kf.Username || parsed.Params != c.kf.Params {
			t.Fatalf("fields lost in round trip: %+v vs %+v", parsed, c.kf)
		}
		got, err := parsed.Unlock([]byte(c.pw))
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(master) {
			t.Fatal("unlocked a different master key")
		}
		// The other password does not open this file.
		other := "first password"
		if c.pw == other {
			other = "second password"
		}
		_, err = parsed.Unlock([]byte(other))
		wantKind(t, err, core.KindUnauthorized)
	}
	// encoding/json works too.
	var viaJSON KeyFile
	data, _ := json.Marshal(kf1)
	if err := json.Unmarshal(data, &viaJSON); err != nil {
		t.Fatal(err)
	}
	if _, err := viaJSON.Unlock([]byte("first password")); err != nil {
		t.Fatal(err)
	}
}

func TestKeyFileWrongPassword(t *testing.T) {
	kf, err := NewKeyFile(NewMasterKey(), []byte("right"), TestKDFParams())
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{"", "wrong", "right ", "Right"} {
		_, err := kf.Unlock([]byte(pw))
		wantKind(t, err, core.KindUnauthorized)
		if err.Error() != "wrong password (or not a key of this repository)" {
			t.Fatalf("message %q", err)
		}
	}
	// A key file of another repository with the same password: same message.
	other, _ := NewKeyFile(NewMasterKey(), []byte("right"), TestKDFParams())
	kf.Wrapped = other.Wrapped
	_, err = kf.Unlock([]byte("right"))
	wantKind(t, err, core.KindUnauthorized)
}

func TestNewKeyFileRejectsBadParams(t *testing.T) {
	for _, p := range []KDFParams{{0, 64, 1}, {1, 64, 0}, {1, 4, 1}, {1, 4<<20 + 1, 1}, {1001, 64, 1}} {
		_, err := NewKeyFile(NewMasterKey(), []byte("pw"), p)
		wantKind(t, err, core.KindInvalid)
	}
	if _, err := NewKeyFile(nil, []byte("pw"), TestKDFParams()); err == nil {
		t.Fatal("nil master accepted")
	}
	if err := DefaultKDFParams().Validate(); err != nil {
		t.Fatal(err)
	}
}

// validKeyFileMap returns a fresh valid key file as a generic JSON object.
func validKeyFileMap(t *testing.T) map[string]any {
	t.Helper()
	kf, err := NewKeyFile(NewMasterKey(), []byte("pw"), TestKDFParams())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := kf.Marshal()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseKeyFileNewerVersion(t *testing.T) {
	for _, doc := range []string{
		`{"version":2}`,
		`{"version":7,"kdf":"scrypt","salt":12,"wrapped":null,"new_field":{}}`,
	} {
		_, err := ParseKeyFile([]byte(doc))
		wantKind(t, err, core.KindInvalid)
		if core.CodeOf(err) != "newer_format_version" || !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), "upgrade cairn") {
			t.Fatalf("%s: message %q (code %s)", doc, err, core.CodeOf(err))
		}
	}
	m := validKeyFileMap(t)
	m["version"] = 2
	data, _ := json.Marshal(m)
	_, err := ParseKeyFile(data)
	if core.CodeOf(err) != "newer_format_version" {
		t.Fatalf("valid v1 body with version 2: %v", err)
	}
	// Unlock of a KeyFile built in memory with a newer version refuses too.
	kf, _ := NewKeyFile(NewMasterKey(), []byte("pw"), TestKDFParams())
	kf.Version = 2
	if _, err := kf.Unlock([]byte("pw")); core.CodeOf(err) != "newer_format_version" {
		t.Fatalf("Unlock of version 2: %v", err)
	}
}

func TestParseKeyFileBadFields(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(m map[string]any)
		field string // must appear in the message
	}{
		{"version missing", func(m map[string]any) { delete(m, "version") }, "version"},
		{"version zero", func(m map[string]any) { m["version"] = 0 }, "version"},
		{"version string", func(m map[string]any) { m["version"] = "1" }, "version"},
		{"version fraction", func(m map[string]any) { m["version"] = 1.5 }, "version"},
		{"unknown kdf", func(m map[string]any) { m["kdf"] = "scrypt" }, "kdf"},
		{"kdf missing", func(m map[string]any) { delete(m, "kdf") }, "kdf"},
		{"time zero", func(m map[string]any) { m["time"] = 0 }, "time"},
		{"time negative", func(m map[string]any) { m["time"] = -3 }, "time"},
		{"time huge", func(m map[string]any) { m["time"] = 1e9 }, "time"},
		{"time string", func(m map[string]any) { m["time"] = "3" }, "time"},
		{"threads zero", func(m map[string]any) { m["threads"] = 0 }, "threads"},
		{"threads 256", func(m map[string]any) { m["threads"] = 256 }, "threads"},
		{"memory above 4 GiB", func(m map[string]any) { m["memory_kib"] = 4<<20 + 1 }, "memory_kib"},
		{"memory overflow", func(m map[string]any) { m["memory_kib"] = 1e30 }, "memory_kib"},
		{"memory tiny", func(m map[string]any) { m["memory_kib"] = 1 }, "memory_kib"},
		{"salt not base64", func(m map[string]any) { m["salt"] = "!!!not base64!!!" }, "salt"},
		{"salt short", func(m map[string]any) { m["salt"] = base64.StdEncoding.EncodeToString(make([]byte, 8)) }, "salt"},
		{"salt missing", func(m map[string]any) { delete(m, "salt") }, "salt"},
		{"wrapped not base64", func(m map[string]any) { m["wrapped"] = "a" }, "wrapped"},
		{"wrapped short", func(m map[string]any) { m["wrapped"] = base64.StdEncoding.EncodeToString(make([]byte, 50)) }, "wrapped"},
		{"wrapped missing", func(m map[string]any) { delete(m, "wrapped") }, "wrapped"},
		{"created bad", func(m map[string]any) { m["created"] = "yesterday" }, "created"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := validKeyFileMap(t)
			c.edit(m)
			data, _ := json.Marshal(m)
			_, err := ParseKeyFile(data)
			if err == nil {
				t.Fatalf("accepted %s", data)
			}
			if k := core.KindOf(err); k != core.KindInvalid && k != core.KindCorrupt {
				t.Fatalf("kind %v: %v", k, err)
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Fatalf("message %q does not name %s", err, c.field)
			}
		})
	}
	for _, doc := range []string{"", "null", "[]", "{", `{"version":1`, "\x00"} {
		_, err := ParseKeyFile([]byte(doc))
		wantKind(t, err, core.KindCorrupt)
	}
}

// Test vectors: a key file made with TestKDFParams and the password
// "correct horse" wrapping a fixed master key, and a blob sealed with that key.
// If a test here fails, the format changed: that needs a new version, not new
// vectors.
const (
	vectorPassword   = "correct horse"
	vectorPlaintext  = "cairn sealed blob test vector, format v1"
	vectorAD         = "cairn test vector"
	vectorChunkInput = "cairn chunk id test vector"
	// vectorChunkIDHex is ChunkID(vectorChunkInput) under vectorMaster: it pins
	// the chosen keyed hash (keyed BLAKE3).
	vectorChunkIDHex = "01b71ee1918a2deac7958abd091402a54417be93850eb9e868661115d6027462"
)

func vectorMaster() *MasterKey {
	k := &MasterKey{}
	for i := range KeySize {
		k.Encrypt[i] = byte(i)
		k.ID[i] = byte(0x80 + i)
	}
	return k
}

func TestVectorsV1(t *testing.T) {
	kfPath, blobPath := filepath.Join("testdata", "keyfile-v1.json"), filepath.Join("testdata", "sealed-v1.bin")
	if *update {
		master := vectorMaster()
		kf, err := NewKeyFile(master, []byte(vectorPassword), TestKDFParams())
		if err != nil {
			t.Fatal(err)
		}
		kf.Host, kf.Username = "vector-host", "vector-user"
		data, err := kf.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(kfPath, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(blobPath, master.Seal([]byte(vectorPlaintext), []byte(vectorAD)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(kfPath)
	if err != nil {
		t.Fatal(err)
	}
	kf, err := ParseKeyFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if kf.Params != TestKDFParams() || kf.KDF != "argon2id" || kf.Version != 1 {
		t.Fatalf("vector params %+v", kf)
	}
	master, err := kf.Unlock([]byte(vectorPassword))
	if err != nil {
		t.Fatal(err)
	}
	if !master.Equal(vectorMaster()) {
		t.Fatalf("vector unlocked master key %x/%x", master.Encrypt, master.ID)
	}
	if _, err := kf.Unlock([]byte("correct horse battery staple")); core.KindOf(err) != core.KindUnauthorized {
		t.Fatalf("wrong password on vector: %v", err)
	}
	blob, err := os.ReadFile(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := master.Open(blob, []byte(vectorAD))
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != vectorPlaintext {
		t.Fatalf("vector blob opened to %q", pt)
	}
	id := master.ChunkID([]byte(vectorChunkInput))
	if got := hex.EncodeToString(id[:]); got != vectorChunkIDHex {
		t.Fatalf("vector chunk id %s, want %s", got, vectorChunkIDHex)
	}
}

// The KDF's 64 MiB are collected before Unlock returns, so that the
// backup's buffers that follow reuse them instead of fresh pages.
func TestUnlockLeavesNoKDFGarbage(t *testing.T) {
	kf, err := NewKeyFile(NewMasterKey(), []byte("pw"), DefaultKDFParams())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kf.Unlock([]byte("pw")); err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if kdf := uint64(DefaultKDFParams().MemoryKiB) << 10; ms.HeapAlloc >= kdf/2 {
		t.Fatalf("heap after Unlock: %d MiB allocated, the KDF used %d MiB", ms.HeapAlloc>>20, kdf>>20)
	}
}
