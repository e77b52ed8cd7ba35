package qemu

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strconv"
)

// TableSnapshot is one entry of a qcow2 file's snapshot table.
type TableSnapshot struct {
	ID       string
	Tag      string
	DiskSize int64 // virtual disk size the snapshot recorded; -1 when not recorded
}

// snapshotDiskSizes reads the virtual disk size each internal snapshot
// recorded, keyed by snapshot id, because qemu-img 7.2's JSON leaves it out.
func snapshotDiskSizes(path string) (map[string]int64, error) {
	_, snaps, err := ReadSnapshotTable(path)
	if err != nil {
		return nil, err
	}
	sizes := make(map[string]int64, len(snaps))
	for _, s := range snaps {
		if s.DiskSize >= 0 {
			sizes[s.ID] = s.DiskSize
		}
	}
	return sizes, nil
}

// ReadSnapshotTable returns a qcow2 file's current virtual size (from the
// header) and its snapshot table, read straight from the file with no QEMU
// process: microseconds instead of a qemu-img run. It reads only the header and
// the snapshot table, which QEMU writes in full before a snapshot command
// returns, so it is safe while another process holds the image (the virtual
// size then is the one on disk). This is deliberately tiny; the full reader is
// internal/qcow2.
func ReadSnapshotTable(path string) (virtualSize int64, snaps []TableSnapshot, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	var hdr [72]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return 0, nil, fmt.Errorf("reading qcow2 header of %s: %w", path, err)
	}
	if string(hdr[0:4]) != "QFI\xfb" {
		return 0, nil, fmt.Errorf("%s is not a qcow2 file", path)
	}
	virtualSize = int64(binary.BigEndian.Uint64(hdr[24:32]))
	count := binary.BigEndian.Uint32(hdr[60:64])
	offset := binary.BigEndian.Uint64(hdr[64:72])
	const maxSnapshots = 65536 // QEMU's own limit
	if count > maxSnapshots || offset > 1<<62 {
		return 0, nil, fmt.Errorf("%s: implausible snapshot table (%d entries at %d)", path, count, offset)
	}
	r := bufio.NewReader(io.NewSectionReader(f, int64(offset), 64<<20))
	snaps = make([]TableSnapshot, 0, count)
	for i := uint32(0); i < count; i++ {
		var fixed [40]byte
		if _, err := io.ReadFull(r, fixed[:]); err != nil {
			return 0, nil, fmt.Errorf("reading snapshot entry %d: %w", i, err)
		}
		idLen := int(binary.BigEndian.Uint16(fixed[12:14]))
		nameLen := int(binary.BigEndian.Uint16(fixed[14:16]))
		extraLen := int(binary.BigEndian.Uint32(fixed[36:40]))
		if extraLen > 1024 {
			return 0, nil, fmt.Errorf("snapshot entry %d: implausible extra data size %d", i, extraLen)
		}
		rest := make([]byte, extraLen+idLen+nameLen)
		if _, err := io.ReadFull(r, rest); err != nil {
			return 0, nil, fmt.Errorf("reading snapshot entry %d: %w", i, err)
		}
		ts := TableSnapshot{ID: string(rest[extraLen : extraLen+idLen]), Tag: string(rest[extraLen+idLen:]), DiskSize: -1}
		if _, err := strconv.Atoi(ts.ID); err != nil {
			return 0, nil, fmt.Errorf("snapshot entry %d: id %q is not a number", i, ts.ID)
		}
		if extraLen >= 16 {
			ts.DiskSize = int64(binary.BigEndian.Uint64(rest[8:16]))
		}
		snaps = append(snaps, ts)
		// Entries are padded to a multiple of 8 bytes; the file may end
		// before the last entry's padding.
		if pad := (8 - (40+len(rest))%8) % 8; pad > 0 && i+1 < count {
			if _, err := r.Discard(pad); err != nil {
				return 0, nil, fmt.Errorf("reading snapshot entry %d: %w", i, err)
			}
		}
	}
	return virtualSize, snaps, nil
}
