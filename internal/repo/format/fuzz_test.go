package format

import (
	"testing"
)

// The decoders must never panic and must refuse what they cannot represent.

func FuzzDecodePackHeader(f *testing.F) {
	f.Add(EncodePackHeader(sampleEntries()), int64(303))
	f.Add([]byte(PackHeaderMagic), int64(0))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		es, err := DecodePackHeader(b, size)
		if err != nil {
			return
		}
		if got := EncodePackHeader(es); string(got) != string(b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzDecodePackTrailer(f *testing.F) {
	f.Add(EncodePackTrailer(make([]byte, 100)), int64(1000))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		n, _, err := DecodePackTrailer(b, size)
		if err == nil && (n <= 0 || n > size) {
			t.Fatalf("header length %d accepted for a pack of %d", n, size)
		}
	})
}

func FuzzDecodeIndex(f *testing.F) {
	es := sampleEntries()
	var off uint32
	for i := range es {
		es[i].Offset = off
		off += es[i].Length
	}
	f.Add(EncodeIndex([]IndexPack{{ID: ID{9}, Entries: es}}))
	f.Add(EncodeIndex(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		packs, err := DecodeIndex(b)
		if err != nil {
			return
		}
		if got := EncodeIndex(packs); string(got) != string(b) {
			t.Fatalf("index does not round-trip")
		}
	})
}

func FuzzDecodeManifest(f *testing.F) {
	b, _ := EncodeManifest(validManifest())
	f.Add(b)
	f.Add([]byte(`{"version":1,"kind":"files","id":"0b0f0c7e-1d2c-4d6e-9f00-1a2b3c4d5e6f","tree":"` + ID{1}.String() + `"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded manifest does not validate: %v", err)
		}
		if m.Image != nil {
			_ = m.Image.SegmentLen(len(m.Image.Segments) - 1)
		}
	})
}

func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte(`{"format":"cairn repository","version":1,"id":"0b0f0c7e-1d2c-4d6e-9f00-1a2b3c4d5e6f","chunk_id":"blake3","cipher":"aes-256-gcm","compression":"zstd","image_chunk_size":131072,"segment_chunks":512,"cdc":{"min":524288,"avg":1048576,"max":8388608},"key_check":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = DecodeConfig(b)
	})
}

func FuzzDecodeLock(f *testing.F) {
	f.Add([]byte(`{"version":1,"exclusive":true,"host":"h","pid":1,"command":"prune","time":"2026-01-01T00:00:00Z","refreshed":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = DecodeLock(b) })
}

func FuzzDecodeSegment(f *testing.F) {
	f.Add(EncodeSegment([]ID{{1}, {}}), 2)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		ids, err := DecodeSegment(b, n)
		if err == nil && string(EncodeSegment(ids)) != string(b) {
			t.Fatal("segment does not round-trip")
		}
	})
}
