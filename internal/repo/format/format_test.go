package format

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
)

func sampleEntries() []PackEntry {
	var es []PackEntry
	for i := range 3 {
		e := PackEntry{Type: DataBlob, Length: uint32(100 + i), RawLength: uint32(100 + i - SealOverhead), CRC: uint32(i)}
		e.ID[0] = byte(i + 1)
		es = append(es, e)
	}
	es[1].Type, es[1].Flags, es[1].RawLength = TreeBlob, FlagZstd, 5000
	return es
}

func TestPackHeaderRoundTrip(t *testing.T) {
	es := sampleEntries()
	b := EncodePackHeader(es)
	got, err := DecodePackHeader(b, 100+101+102)
	if err != nil {
		t.Fatal(err)
	}
	var off uint32
	for i := range es {
		es[i].Offset = off
		off += es[i].Length
		if got[i] != es[i] {
			t.Fatalf("entry %d: %+v, want %+v", i, got[i], es[i])
		}
	}
	if _, err := DecodePackHeader(b, 100+101+102+1); core.KindOf(err) != core.KindCorrupt {
		t.Fatalf("blobs size mismatch: %v", err)
	}
	bad := bytes.Clone(b)
	bad[len(PackHeaderMagic)] = 9 // type
	if _, err := DecodePackHeader(bad, 303); err == nil || !strings.Contains(err.Error(), "unknown blob type") {
		t.Fatalf("bad type: %v", err)
	}
}

func TestPackTrailer(t *testing.T) {
	hdr := make([]byte, 100)
	tr := EncodePackTrailer(hdr)
	n, crc, err := DecodePackTrailer(tr, 1000)
	if err != nil || n != 100 || crc != CRC32C(hdr) {
		t.Fatalf("%d %x %v", n, crc, err)
	}
	newer := bytes.Clone(tr)
	newer[15] = '2'
	if _, _, err := DecodePackTrailer(newer, 1000); err == nil || !strings.Contains(err.Error(), "upgrade cairn") {
		t.Fatalf("newer pack: %v", err)
	}
	if _, _, err := DecodePackTrailer(tr, 110); core.KindOf(err) != core.KindCorrupt {
		t.Fatalf("too small pack: %v", err)
	}
}

func TestIndexRoundTrip(t *testing.T) {
	es := sampleEntries()
	var off uint32
	for i := range es {
		es[i].Offset = off
		off += es[i].Length + 7
	}
	packs := []IndexPack{{ID: ID{9}, Entries: es}, {ID: ID{10}}}
	b := EncodeIndex(packs)
	got, err := DecodeIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got[0].Entries) != 3 || got[0].Entries[2] != es[2] || got[1].ID != (ID{10}) {
		t.Fatalf("round trip: %+v", got)
	}
	for cut := range len(b) {
		if _, err := DecodeIndex(b[:cut]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", cut)
		}
	}
	newer := bytes.Clone(b)
	newer[7] = '2'
	if _, err := DecodeIndex(newer); err == nil || !strings.Contains(err.Error(), "upgrade cairn") {
		t.Fatalf("newer index: %v", err)
	}
}

func validManifest() *Manifest {
	return &Manifest{Version: 1, ID: "0b0f0c7e-1d2c-4d6e-9f00-1a2b3c4d5e6f", Kind: KindImage, Time: time.Unix(1700000000, 0).UTC(),
		Host: "h", Paths: []string{"/a.raw"}, Tags: []string{"volume=a"},
		Image:   &ImageManifest{Size: 3<<20 + 5, ChunkSize: 128 << 10, SegmentChunks: 8, SourceFormat: "raw", Segments: make([]ID, 4)},
		Summary: Summary{Bytes: 3<<20 + 5}}
}

func TestManifestValidation(t *testing.T) {
	m := validManifest()
	b, _ := EncodeManifest(m)
	if _, err := DecodeManifest(b); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(m *Manifest){
		"segments":  func(m *Manifest) { m.Image.Segments = m.Image.Segments[:3] },
		"id":        func(m *Manifest) { m.ID = "x" },
		"kind":      func(m *Manifest) { m.Kind = "disk" },
		"tree":      func(m *Manifest) { m.Tree = &ID{1} },
		"chunksize": func(m *Manifest) { m.Image.ChunkSize = 100 },
		"tag":       func(m *Manifest) { m.Tags = []string{""} },
		"parent":    func(m *Manifest) { m.Parent = "../x" },
	}
	for name, mutate := range cases {
		m := validManifest()
		mutate(m)
		b, _ := json.Marshal(m)
		if _, err := DecodeManifest(b); core.KindOf(err) != core.KindCorrupt {
			t.Errorf("%s: %v", name, err)
		}
	}
	m = validManifest()
	m.Version = 2
	b, _ = json.Marshal(m)
	if _, err := DecodeManifest(b); err == nil || !strings.Contains(err.Error(), "newer than this cairn supports") {
		t.Errorf("newer manifest: %v", err)
	}
}

func TestConfigNewerVersion(t *testing.T) {
	_, err := DecodeConfig([]byte(`{"format":"cairn repository","version":2}`))
	if err == nil || !strings.Contains(err.Error(), "repository format version 2 is newer than this cairn supports (1): upgrade cairn") {
		t.Fatalf("%v", err)
	}
	if _, err := DecodeConfig([]byte(`{"format":"restic"}`)); core.KindOf(err) != core.KindCorrupt {
		t.Fatalf("%v", err)
	}
}

func TestSegment(t *testing.T) {
	ids := []ID{{1}, {}, {3}}
	got, err := DecodeSegment(EncodeSegment(ids), 3)
	if err != nil || got[0] != ids[0] || !got[1].IsZero() || got[2] != ids[2] {
		t.Fatalf("%v %v", got, err)
	}
	if _, err := DecodeSegment(EncodeSegment(ids), 2); err == nil {
		t.Fatal("wrong count accepted")
	}
	if SegmentIsZero(ids) || !SegmentIsZero(make([]ID, 4)) {
		t.Fatal("SegmentIsZero")
	}
}
