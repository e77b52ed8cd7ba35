package part

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// sfdiskDisk makes a disk of size bytes partitioned by sfdisk with script
// and returns its bytes.
func sfdiskDisk(t testing.TB, size int64, script string) []byte {
	t.Helper()
	testenv.RequireTool(t, "sfdisk")
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", p)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sfdiskList returns the partitions sfdisk -J reads from disk, without
// extended containers, as Read should return them.
func sfdiskList(t testing.TB, disk []byte) []fsimage.Partition {
	t.Helper()
	p := filepath.Join(t.TempDir(), "list.raw")
	if err := os.WriteFile(p, disk, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sfdisk", "-J", p).Output()
	if err != nil {
		t.Fatalf("sfdisk -J: %v", err)
	}
	var doc struct {
		PartitionTable struct {
			Label      string
			SectorSize int64
			Partitions []struct {
				Node        string
				Start, Size int64
				Type, Name  string
			}
		}
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	var parts []fsimage.Partition
	pt := doc.PartitionTable
	for _, e := range pt.Partitions {
		idx, _ := strconv.Atoi(strings.TrimPrefix(e.Node, p))
		typ := e.Type
		if pt.Label == "dos" {
			v, _ := strconv.ParseUint(e.Type, 16, 8)
			if isExtended(byte(v)) {
				continue
			}
			typ = fmt.Sprintf("0x%02x", v)
		}
		scheme := map[string]string{"dos": "mbr", "gpt": "gpt"}[pt.Label]
		parts = append(parts, fsimage.Partition{Index: idx, Start: e.Start * pt.SectorSize, Size: e.Size * pt.SectorSize,
			Type: typ, Name: e.Name, Scheme: scheme})
	}
	return parts
}

func read(t testing.TB, disk []byte) ([]fsimage.Partition, error) {
	t.Helper()
	return Read(bytes.NewReader(disk), int64(len(disk)))
}

func equal(t *testing.T, got, want []fsimage.Partition) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("partitions:\n got %+v\nwant %+v", got, want)
	}
}

const gptScript = "label: gpt\nsize=8M, type=linux, name=\"root fs\"\nsize=4M, type=swap\nsize=2M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI ünï\"\n"

// mbrScript has a primary, an extended partition with two logical ones, a
// second primary and a last primary; sfdisk puts the logical ones (lines
// 5 and 6) in the extended partition.
const mbrScript = "label: dos\nsize=8M, type=83, bootable\nsize=30M, type=5\nsize=8M, type=83\nsize=1M, type=82\nsize=8M, type=83\nsize=8M, type=c\n"

func TestGPT(t *testing.T) {
	disk := sfdiskDisk(t, 32<<20, gptScript)
	got, err := read(t, disk)
	if err != nil {
		t.Fatal(err)
	}
	want := sfdiskList(t, disk)
	if len(want) != 3 || want[2].Name != "EFI ünï" || want[0].Type != "0FC63DAF-8483-4772-8E79-3D69D8477DE4" {
		t.Fatalf("sfdisk lists %+v", want)
	}
	equal(t, got, want)

	t.Run("damaged primary header", func(t *testing.T) {
		d := bytes.Clone(disk)
		d[512+40] ^= 1 // first usable LBA: the header CRC no longer matches
		got, err := read(t, d)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, got, want)
	})
	t.Run("damaged primary entries", func(t *testing.T) {
		d := bytes.Clone(disk)
		d[1024+32] ^= 0x80 // first entry's start: the array CRC no longer matches
		got, err := read(t, d)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, got, want)
	})
	t.Run("wiped primary header", func(t *testing.T) {
		d := bytes.Clone(disk)
		clear(d[512:1024])
		got, err := read(t, d)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, got, want)
	})
	t.Run("both headers damaged", func(t *testing.T) {
		d := bytes.Clone(disk)
		d[512+40] ^= 1
		d[len(d)-512+40] ^= 1
		_, err := read(t, d)
		wantCorrupt(t, err, "CRC32")
	})
	t.Run("truncated disk", func(t *testing.T) {
		_, err := read(t, disk[:8<<20])
		wantCorrupt(t, err, "usable sectors")
	})
}

func TestMBR(t *testing.T) {
	disk := sfdiskDisk(t, 64<<20, mbrScript)
	got, err := read(t, disk)
	if err != nil {
		t.Fatal(err)
	}
	want := sfdiskList(t, disk)
	if len(want) != 5 || want[4].Index != 6 || want[4].Type != "0x0c" {
		t.Fatalf("sfdisk lists %+v", want)
	}
	equal(t, got, want)

	// The first EBR is at the extended partition's start (sector 18432);
	// its second entry links to the next EBR.
	const ebr = 18432 * 512
	t.Run("EBR loop", func(t *testing.T) {
		d := bytes.Clone(disk)
		binary.LittleEndian.PutUint32(d[ebr+446+16+8:], 0) // link back to itself
		_, err := read(t, d)
		wantCorrupt(t, err, "loops")
	})
	t.Run("EBR link outside", func(t *testing.T) {
		d := bytes.Clone(disk)
		binary.LittleEndian.PutUint32(d[ebr+446+16+8:], 1<<30)
		_, err := read(t, d)
		wantCorrupt(t, err, "outside")
	})
	t.Run("EBR without signature", func(t *testing.T) {
		d := bytes.Clone(disk)
		d[ebr+510] = 0
		_, err := read(t, d)
		wantCorrupt(t, err, "signature")
	})
	t.Run("logical partition outside", func(t *testing.T) {
		d := bytes.Clone(disk)
		binary.LittleEndian.PutUint32(d[ebr+446+12:], 1<<20) // its size
		_, err := read(t, d)
		wantCorrupt(t, err, "outside")
	})
	t.Run("primary past the end", func(t *testing.T) {
		_, err := read(t, disk[:40<<20])
		wantCorrupt(t, err, "outside the disk")
	})
	t.Run("long chain", func(t *testing.T) {
		// 300 EBRs, each linking to the next sector: bounded at 256.
		d := bytes.Clone(disk)
		for i := range 300 {
			s := ebr + 512*i
			clear(d[s+446 : s+510])
			d[s+446+16+4] = 0x05
			binary.LittleEndian.PutUint32(d[s+446+16+8:], uint32(i+1))
			binary.LittleEndian.PutUint32(d[s+446+16+12:], 1)
			d[s+510], d[s+511] = 0x55, 0xAA
		}
		_, err := read(t, d)
		wantCorrupt(t, err, "more than 256")
	})
}

func TestNoTable(t *testing.T) {
	for name, disk := range map[string][]byte{
		"zeros":        make([]byte, 1<<20),
		"tiny":         make([]byte, 100),
		"boot sector":  bootSector(),
		"empty MBR":    emptyMBR(),
		"random bytes": bytes.Repeat([]byte{0x5a, 0xa5, 0x12}, 1<<16),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := read(t, disk)
			if err != nil || len(got) != 0 {
				t.Errorf("Read = %v, %v; want nothing", got, err)
			}
		})
	}
}

// bootSector is a file system's boot sector: 0x55AA, but status bytes that
// are not 0 or 0x80.
func bootSector() []byte {
	d := make([]byte, 1<<20)
	for i := range 446 + 64 {
		d[i] = byte(i*7 + 3)
	}
	d[510], d[511] = 0x55, 0xAA
	return d
}

func emptyMBR() []byte {
	d := make([]byte, 1<<20)
	d[510], d[511] = 0x55, 0xAA
	return d
}

func TestProtectiveWithoutGPT(t *testing.T) {
	d := emptyMBR()
	d[446+4] = 0xEE
	binary.LittleEndian.PutUint32(d[446+8:], 1)
	binary.LittleEndian.PutUint32(d[446+12:], uint32(len(d)/512-1))
	_, err := read(t, d)
	wantCorrupt(t, err, "no GPT header")
}

// gptEntry is a partition of a GPT written by writeGPT.
type gptEntry struct {
	first, last uint64
	name        string
}

// writeGPT writes a protective MBR and primary and backup GPT headers and
// arrays with sector-byte sectors; edit may change the primary header and
// entries before the CRCs are computed.
func writeGPT(disk []byte, sector int, count uint32, entries []gptEntry, edit func(hdr, array []byte)) {
	le := binary.LittleEndian
	disk[446+4] = 0xEE
	le.PutUint32(disk[446+8:], 1)
	le.PutUint32(disk[446+12:], 0xFFFFFFFF)
	disk[510], disk[511] = 0x55, 0xAA
	last := uint64(len(disk)/sector) - 1
	array := make([]byte, int(count)*128)
	for i, e := range entries {
		b := array[128*i:]
		copy(b, "\xaf\x3d\xc6\x0f\x83\x84\x72\x47\x8e\x79\x3d\x69\xd8\x47\x7d\xe4") // Linux file system
		b[16] = byte(i + 1)
		le.PutUint64(b[32:], e.first)
		le.PutUint64(b[40:], e.last)
		for j, c := range e.name {
			le.PutUint16(b[56+2*j:], uint16(c))
		}
	}
	arraySectors := (uint64(len(array)) + uint64(sector) - 1) / uint64(sector)
	for _, h := range []struct{ my, alt, arrayLBA uint64 }{{1, last, 2}, {last, 1, last - arraySectors}} {
		hdr := make([]byte, 92)
		copy(hdr, gptSignature)
		le.PutUint32(hdr[8:], 0x10000)
		le.PutUint32(hdr[12:], 92)
		le.PutUint64(hdr[24:], h.my)
		le.PutUint64(hdr[32:], h.alt)
		le.PutUint64(hdr[40:], 2+arraySectors)
		le.PutUint64(hdr[48:], last-arraySectors-1)
		le.PutUint64(hdr[72:], h.arrayLBA)
		le.PutUint32(hdr[80:], count)
		le.PutUint32(hdr[84:], 128)
		a := array
		if edit != nil && h.my == 1 {
			a = bytes.Clone(array)
			edit(hdr, a)
		}
		le.PutUint32(hdr[88:], crc32.ChecksumIEEE(a))
		le.PutUint32(hdr[16:], crc32.ChecksumIEEE(hdr))
		copy(disk[int(h.my)*sector:], hdr)
		if int(h.arrayLBA)*sector < len(disk) {
			copy(disk[int(h.arrayLBA)*sector:], a)
		}
	}
}

func TestGPT4KSectors(t *testing.T) {
	disk := make([]byte, 4<<20)
	writeGPT(disk, 4096, 128, []gptEntry{{256, 511, "data"}, {512, 1000, ""}}, nil)
	got, err := read(t, disk)
	if err != nil {
		t.Fatal(err)
	}
	want := []fsimage.Partition{
		{Index: 1, Start: 256 * 4096, Size: 256 * 4096, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", Name: "data", Scheme: "gpt"},
		{Index: 2, Start: 512 * 4096, Size: 489 * 4096, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", Scheme: "gpt"},
	}
	equal(t, got, want)
}

func TestGPTDamage(t *testing.T) {
	entries := []gptEntry{{64, 127, "one"}, {128, 2000, "two"}}
	cases := map[string]struct {
		edit func(hdr, array []byte)
		want string
	}{
		"entry past the end": {func(hdr, a []byte) { binary.LittleEndian.PutUint64(a[128+40:], 1<<40) }, "outside the disk"},
		"entry reversed":     {func(hdr, a []byte) { binary.LittleEndian.PutUint64(a[32:], 200) }, "outside the disk"},
		"absurd count":       {func(hdr, a []byte) { binary.LittleEndian.PutUint32(hdr[80:], 1<<31) }, "more than 4 MiB"},
		"entry size":         {func(hdr, a []byte) { binary.LittleEndian.PutUint32(hdr[84:], 100) }, "entry size"},
		"array outside":      {func(hdr, a []byte) { binary.LittleEndian.PutUint64(hdr[72:], 1<<50) }, "outside the disk"},
		"header size":        {func(hdr, a []byte) { binary.LittleEndian.PutUint32(hdr[12:], 1<<20) }, "header size"},
		"wrong own LBA":      {func(hdr, a []byte) { binary.LittleEndian.PutUint64(hdr[24:], 7) }, "says it is at sector 7"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			disk := make([]byte, 2<<20)
			writeGPT(disk, 512, 128, entries, c.edit)
			got, err := read(t, disk)
			if strings.Contains(name, "entry") && !strings.Contains(name, "size") {
				// The headers are fine: the entry itself is wrong.
				wantCorrupt(t, err, c.want)
				return
			}
			// A bad primary header falls back to the backup.
			if err != nil || len(got) != 2 {
				t.Fatalf("Read = %v, %v; want the backup's 2 partitions", got, err)
			}
			// With the backup gone as well, the error names the primary's problem.
			d := bytes.Clone(disk)
			clear(d[len(d)-512:])
			_, err = read(t, d)
			wantCorrupt(t, err, c.want)
		})
	}
}

func wantCorrupt(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one containing %q", substr)
	}
	if core.KindOf(err) != core.KindCorrupt || !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q (kind %v); want a corrupt error containing %q", err, core.KindOf(err), substr)
	}
	if errors.Is(err, fsimage.ErrUnsupported) {
		t.Fatalf("error %q wraps ErrUnsupported", err)
	}
}
