package qemu

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// snapshotDiskSizes reads the virtual disk size each internal snapshot
// recorded, keyed by snapshot id, straight from the qcow2 snapshot table,
// because qemu-img 7.2's JSON leaves it out. It reads only the header and the
// snapshot table, which QEMU writes in full before a snapshot command returns,
// so it is safe while another process holds the image. A snapshot whose extra
// data has no disk size (images from very old QEMU) is left out.
//
// This is deliberately tiny; the full reader is internal/qcow2.
func snapshotDiskSizes(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var hdr [72]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading qcow2 header: %w", err)
	}
	if string(hdr[0:4]) != "QFI\xfb" {
		return nil, errors.New("not a qcow2 file")
	}
	count := binary.BigEndian.Uint32(hdr[60:64])
	offset := binary.BigEndian.Uint64(hdr[64:72])
	const maxSnapshots = 65536 // QEMU's own limit
	if count > maxSnapshots || offset > 1<<62 {
		return nil, fmt.Errorf("implausible snapshot table (%d entries at %d)", count, offset)
	}
	r := bufio.NewReader(io.NewSectionReader(f, int64(offset), 64<<20))
	sizes := make(map[string]int64, count)
	for i := uint32(0); i < count; i++ {
		var fixed [40]byte
		if _, err := io.ReadFull(r, fixed[:]); err != nil {
			return nil, fmt.Errorf("reading snapshot entry %d: %w", i, err)
		}
		idLen := int(binary.BigEndian.Uint16(fixed[12:14]))
		nameLen := int(binary.BigEndian.Uint16(fixed[14:16]))
		extraLen := int(binary.BigEndian.Uint32(fixed[36:40]))
		if extraLen > 1024 {
			return nil, fmt.Errorf("snapshot entry %d: implausible extra data size %d", i, extraLen)
		}
		rest := make([]byte, extraLen+idLen+nameLen)
		if _, err := io.ReadFull(r, rest); err != nil {
			return nil, fmt.Errorf("reading snapshot entry %d: %w", i, err)
		}
		id := string(rest[extraLen : extraLen+idLen])
		if _, err := strconv.Atoi(id); err != nil {
			return nil, fmt.Errorf("snapshot entry %d: id %q is not a number", i, id)
		}
		if extraLen >= 16 {
			sizes[id] = int64(binary.BigEndian.Uint64(rest[8:16]))
		}
		// Entries are padded to a multiple of 8 bytes; the file may end
		// before the last entry's padding.
		if pad := (8 - (40+len(rest))%8) % 8; pad > 0 && i+1 < count {
			if _, err := r.Discard(pad); err != nil {
				return nil, fmt.Errorf("reading snapshot entry %d: %w", i, err)
			}
		}
	}
	return sizes, nil
}
