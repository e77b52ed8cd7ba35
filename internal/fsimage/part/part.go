// Package part reads the partition table of a disk image: GPT (with its
// backup header when the primary one is damaged) and MBR (four primary
// entries, and logical partitions along the chain of extended boot
// records). It never writes.
//
// Read returns the partitions Linux would create, numbered as Linux numbers
// them (GPT: the entry's slot; MBR: slots 1-4, logical partitions from 5),
// without extended partition containers and unused entries. A disk without a
// table gives an empty list and no error; a table that is there but damaged
// (checksums of both GPT headers wrong, a partition past the end of the
// disk, a loop in the EBR chain, absurd entry counts) gives a
// core.KindCorrupt error that names the problem. Nothing read from the disk
// sizes an allocation beyond a few MiB, and every loop is bounded.
package part

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
)

const (
	mbrSector     = 512
	gptSignature  = "EFI PART"
	typeEmpty     = 0x00
	typeProtect   = 0xEE
	maxLogical    = 256     // Linux allows 256 partitions per disk
	maxEntryBytes = 4 << 20 // largest GPT entry array accepted
)

// Read returns the partitions of the disk of size bytes in r, in table
// order.
func Read(r io.ReaderAt, size int64) ([]fsimage.Partition, error) {
	if size < 2*mbrSector {
		return nil, nil
	}
	mbr := make([]byte, mbrSector)
	if err := readFull(r, mbr, 0); err != nil {
		return nil, err
	}
	entries, ok := parseMBR(mbr)
	protective := false
	for _, e := range entries {
		protective = protective || e.typ == typeProtect
	}
	if protective || !ok {
		parts, found, err := readGPT(r, size)
		if found || protective {
			return parts, err
		}
		return nil, nil // no MBR signature, no GPT: no table
	}
	return readMBR(r, size, entries)
}

func corrupt(format string, args ...any) error {
	return core.Corrupt("partition table: %s", fmt.Sprintf(format, args...))
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return corrupt("disk ends inside [%d, %d)", off, off+int64(len(p)))
	}
	return fmt.Errorf("partition table: reading the disk at offset %d: %w", off, err)
}

// mbrEntry is one of the four entries of an MBR or EBR.
type mbrEntry struct {
	status  byte
	typ     byte
	lba     uint64
	sectors uint64
}

// parseMBR decodes the four entries of a boot sector. ok is false without
// the 0x55AA signature, or when a status byte is neither 0 nor 0x80 (a boot
// sector of a file system, not a partition table).
func parseMBR(b []byte) (entries [4]mbrEntry, ok bool) {
	if b[510] != 0x55 || b[511] != 0xAA {
		return entries, false
	}
	ok = true
	for i := range entries {
		e := b[446+16*i:]
		entries[i] = mbrEntry{status: e[0], typ: e[4],
			lba: uint64(binary.LittleEndian.Uint32(e[8:])), sectors: uint64(binary.LittleEndian.Uint32(e[12:]))}
		if e[0] != 0 && e[0] != 0x80 {
			ok = false
		}
	}
	return entries, ok
}

func isExtended(typ byte) bool { return typ == 0x05 || typ == 0x0F || typ == 0x85 }

func readMBR(r io.ReaderAt, size int64, entries [4]mbrEntry) ([]fsimage.Partition, error) {
	sectors := uint64(size / mbrSector)
	var parts []fsimage.Partition
	next := 5 // number of the next logical partition
	for i, e := range entries {
		if e.typ == typeEmpty || e.sectors == 0 {
			continue
		}
		if e.lba == 0 || e.lba+e.sectors > sectors {
			return nil, corrupt("MBR partition %d (sectors %d to %d) lies outside the disk (%d sectors)", i+1, e.lba, e.lba+e.sectors, sectors)
		}
		if isExtended(e.typ) {
			logical, err := readEBRs(r, sectors, e, &next)
			if err != nil {
				return nil, err
			}
			parts = append(parts, logical...)
			continue
		}
		parts = append(parts, mbrPartition(i+1, e.lba, e))
	}
	// Logical partitions were appended where their container was: put
	// them after the primary ones, as Linux numbers them.
	var primary, logical []fsimage.Partition
	for _, p := range parts {
		if p.Index <= 4 {
			primary = append(primary, p)
		} else {
			logical = append(logical, p)
		}
	}
	return append(primary, logical...), nil
}

func mbrPartition(index int, lba uint64, e mbrEntry) fsimage.Partition {
	return fsimage.Partition{Index: index, Start: int64(lba) * mbrSector, Size: int64(e.sectors) * mbrSector,
		Type: fmt.Sprintf("0x%02x", e.typ), Scheme: "mbr"}
}

// readEBRs follows the chain of extended boot records of the extended
// partition ext. Each EBR holds a logical partition (relative to the EBR)
// and a link to the next EBR (relative to the extended partition).
func readEBRs(r io.ReaderAt, sectors uint64, ext mbrEntry, next *int) ([]fsimage.Partition, error) {
	var parts []fsimage.Partition
	seen := map[uint64]bool{}
	buf := make([]byte, mbrSector)
	end := ext.lba + ext.sectors
	for ebr := ext.lba; ; {
		if len(seen) >= maxLogical {
			return nil, corrupt("more than %d extended boot records", maxLogical)
		}
		if seen[ebr] {
			return nil, corrupt("the chain of extended boot records loops back to sector %d", ebr)
		}
		seen[ebr] = true
		if err := readFull(r, buf, int64(ebr)*mbrSector); err != nil {
			return nil, err
		}
		if buf[510] != 0x55 || buf[511] != 0xAA {
			return nil, corrupt("extended boot record at sector %d has no 0x55AA signature", ebr)
		}
		var e [2]mbrEntry
		for i := range e {
			b := buf[446+16*i:]
			e[i] = mbrEntry{typ: b[4], lba: uint64(binary.LittleEndian.Uint32(b[8:])), sectors: uint64(binary.LittleEndian.Uint32(b[12:]))}
		}
		if e[0].typ != typeEmpty && e[0].sectors != 0 {
			start := ebr + e[0].lba
			if e[0].lba == 0 || start+e[0].sectors > end || start+e[0].sectors > sectors {
				return nil, corrupt("logical partition %d (sectors %d to %d) lies outside its extended partition (sectors %d to %d)",
					*next, start, start+e[0].sectors, ext.lba, end)
			}
			parts = append(parts, mbrPartition(*next, start, e[0]))
			*next++
		}
		if !isExtended(e[1].typ) || e[1].sectors == 0 {
			return parts, nil
		}
		ebr = ext.lba + e[1].lba
		if ebr >= end || ebr >= sectors {
			return nil, corrupt("extended boot record link to sector %d lies outside the extended partition (sectors %d to %d)", ebr, ext.lba, end)
		}
	}
}

// readGPT reads a GPT with 512-byte sectors, or 4096-byte ones. found is
// false when neither header position holds the signature.
func readGPT(r io.ReaderAt, size int64) (parts []fsimage.Partition, found bool, err error) {
	var errs []string
	for _, sector := range []int64{512, 4096} {
		if size < 3*sector {
			continue
		}
		parts, found, err := readGPTSector(r, size, sector)
		if found {
			return parts, true, err
		}
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return nil, false, corrupt("%s", strings.Join(errs, "; "))
	}
	return nil, false, corrupt("protective MBR but no GPT header")
}

func readGPTSector(r io.ReaderAt, size, sector int64) ([]fsimage.Partition, bool, error) {
	last := uint64(size/sector) - 1
	primary, perr := readGPTHeader(r, size, sector, 1)
	if perr == nil {
		parts, err := primary.partitions(last)
		return parts, true, err
	}
	backup, berr := readGPTHeader(r, size, sector, last)
	if berr != nil && errors.Is(perr, errNoSignature) && errors.Is(berr, errNoSignature) {
		return nil, false, nil // no GPT with this sector size
	}
	if berr != nil {
		return nil, true, corrupt("GPT (%d-byte sectors): primary header: %v; backup header at sector %d: %v", sector, perr, last, berr)
	}
	parts, err := backup.partitions(last)
	return parts, true, err
}

var errNoSignature = errors.New("no \"EFI PART\" signature")

type gptHeader struct {
	lba          uint64
	sector       int64
	firstUsable  uint64
	lastUsable   uint64
	entries      []byte
	count, esize uint32
	entriesLBA   uint64
}

// readGPTHeader reads and checks the header at sector lba and its entry
// array: signature, header size and CRC32, its own LBA, usable range, entry
// size and count, array position and CRC32.
func readGPTHeader(r io.ReaderAt, size, sector int64, lba uint64) (*gptHeader, error) {
	buf := make([]byte, sector)
	if err := readFull(r, buf, int64(lba)*sector); err != nil {
		return nil, err
	}
	if string(buf[:8]) != gptSignature {
		return nil, errNoSignature
	}
	le := binary.LittleEndian
	hsize := le.Uint32(buf[12:])
	if hsize < 92 || int64(hsize) > sector {
		return nil, fmt.Errorf("header size %d", hsize)
	}
	want := le.Uint32(buf[16:])
	hdr := bytes.Clone(buf[:hsize])
	clear(hdr[16:20])
	if got := crc32.ChecksumIEEE(hdr); got != want {
		return nil, fmt.Errorf("header CRC32 0x%08x does not match its contents (0x%08x)", want, got)
	}
	h := &gptHeader{lba: lba, sector: sector,
		firstUsable: le.Uint64(buf[40:]), lastUsable: le.Uint64(buf[48:]),
		entriesLBA: le.Uint64(buf[72:]), count: le.Uint32(buf[80:]), esize: le.Uint32(buf[84:])}
	last := uint64(size/sector) - 1
	if my := le.Uint64(buf[24:]); my != lba {
		return nil, fmt.Errorf("header at sector %d says it is at sector %d", lba, my)
	}
	if h.firstUsable > h.lastUsable || h.lastUsable > last {
		return nil, fmt.Errorf("usable sectors %d to %d on a disk of %d sectors", h.firstUsable, h.lastUsable, last+1)
	}
	if h.esize < 128 || h.esize > 4096 || h.esize&(h.esize-1) != 0 {
		return nil, fmt.Errorf("entry size %d (want 128 times a power of 2, at most 4096)", h.esize)
	}
	arrayBytes := uint64(h.count) * uint64(h.esize)
	if arrayBytes > maxEntryBytes {
		return nil, fmt.Errorf("%d entries of %d bytes: more than %d MiB", h.count, h.esize, maxEntryBytes>>20)
	}
	if h.entriesLBA < 1 || h.entriesLBA > last || arrayBytes > (last+1-h.entriesLBA)*uint64(sector) {
		return nil, fmt.Errorf("entry array at sector %d (%d bytes) lies outside the disk", h.entriesLBA, arrayBytes)
	}
	h.entries = make([]byte, arrayBytes)
	if err := readFull(r, h.entries, int64(h.entriesLBA)*sector); err != nil {
		return nil, err
	}
	if want, got := le.Uint32(buf[88:]), crc32.ChecksumIEEE(h.entries); want != got {
		return nil, fmt.Errorf("entry array CRC32 0x%08x does not match its contents (0x%08x)", want, got)
	}
	return h, nil
}

// partitions decodes the used entries of a checked header.
func (h *gptHeader) partitions(last uint64) ([]fsimage.Partition, error) {
	var parts []fsimage.Partition
	le := binary.LittleEndian
	var zero [16]byte
	for i := range h.count {
		e := h.entries[uint64(i)*uint64(h.esize):]
		if bytes.Equal(e[:16], zero[:]) {
			continue
		}
		first, end := le.Uint64(e[32:]), le.Uint64(e[40:])
		if first > end || end > last {
			return nil, corrupt("GPT partition %d (sectors %d to %d) lies outside the disk (%d sectors)", i+1, first, end, last+1)
		}
		parts = append(parts, fsimage.Partition{
			Index:  int(i) + 1,
			Start:  int64(first) * h.sector,
			Size:   int64(end-first+1) * h.sector,
			Type:   guidString(e[:16]),
			Name:   utf16Name(e[56:128]),
			Scheme: "gpt",
		})
	}
	return parts, nil
}

// guidString formats a GUID as it is written: the first three fields are
// little endian on disk. Upper case, as sfdisk and the UEFI specification
// print them.
func guidString(b []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", le.Uint32(b[0:]), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}

// utf16Name decodes a partition name: UTF-16LE up to the first NUL.
func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}
