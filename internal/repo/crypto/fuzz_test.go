package crypto

import (
	"bytes"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
)

// FuzzParseKeyFile: ParseKeyFile never panics, errors carry a kind, and what it
// accepts survives a marshal/parse round trip and can be tried for unlocking.
func FuzzParseKeyFile(f *testing.F) {
	kf, err := NewKeyFile(NewMasterKey(), []byte("pw"), TestKDFParams())
	if err != nil {
		f.Fatal(err)
	}
	valid, _ := kf.Marshal()
	f.Add(valid)
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"kdf":"argon2id","time":1,"memory_kib":8,"threads":1,"salt":"","wrapped":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := ParseKeyFile(data)
		if err != nil {
			if k := core.KindOf(err); k != core.KindInvalid && k != core.KindCorrupt {
				t.Fatalf("error of kind %v: %v", k, err)
			}
			return
		}
		out, err := kf.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseKeyFile(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if again.Params != kf.Params || !bytes.Equal(again.Salt, kf.Salt) || !bytes.Equal(again.Wrapped, kf.Wrapped) {
			t.Fatal("round trip changed the key file")
		}
		// Unlocking is only tried when it is cheap.
		if kf.Params.MemoryKiB <= 1024 && kf.Params.Time <= 4 {
			if _, err := kf.Unlock([]byte("pw")); err != nil && core.KindOf(err) != core.KindUnauthorized {
				t.Fatalf("unlock: %v", err)
			}
		}
	})
}

// FuzzOpen: Open never panics and never accepts a blob that was not sealed
// with the key and additional data given.
func FuzzOpen(f *testing.F) {
	k := &MasterKey{}
	for i := range k.Encrypt {
		k.Encrypt[i] = byte(i)
	}
	f.Add(k.Seal([]byte("hello"), []byte("ad")), []byte("ad"))
	f.Add([]byte{}, []byte(nil))
	f.Add(make([]byte, Overhead), []byte("x"))
	f.Fuzz(func(t *testing.T, sealed, ad []byte) {
		pt, err := k.Open(sealed, ad)
		if err != nil {
			if core.KindOf(err) != core.KindCorrupt {
				t.Fatalf("error of kind %v: %v", core.KindOf(err), err)
			}
			return
		}
		if len(pt) != len(sealed)-Overhead {
			t.Fatalf("opened %d bytes from a %d-byte blob", len(pt), len(sealed))
		}
	})
}
