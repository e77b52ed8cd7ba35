// Package mount finds the file systems of a disk image and copies files out
// of them, without mounting anything: Open reads the partition table (or
// takes the whole disk when there is none) and opens every partition with
// the reader its magic number names; CopyOut copies chosen paths of one
// file system into a directory of the host, which nothing from the image
// can escape.
//
// The readers are registered by magic number: ext4 and XFS come built in,
// and Register adds others (or replaces one, in tests).
//
// A volume that no registered format claims gets an error that names what
// it holds when that is recognisable (swap, LVM, LUKS, btrfs, XFS without a
// reader...), or wraps ErrUnknownFS.
package mount

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
	"github.com/cairn-backup/cairn/internal/fsimage/ext4"
	"github.com/cairn-backup/cairn/internal/fsimage/part"
	"github.com/cairn-backup/cairn/internal/fsimage/xfs"
)

// Opener opens the file system that occupies [0, size) of r.
type Opener func(r io.ReaderAt, size int64) (fsimage.FS, error)

// Format is a file system Open recognises: by Magic at byte Offset of a
// volume, it is opened with Open.
type Format struct {
	Name   string // "ext4", "xfs"
	Offset int64
	Magic  []byte
	Open   Opener
}

var (
	mu      sync.RWMutex
	formats = []Format{{
		Name:   "ext4",
		Offset: 1080, // s_magic, 0x38 into the superblock at 1024
		Magic:  []byte{0x53, 0xEF},
		Open:   func(r io.ReaderAt, size int64) (fsimage.FS, error) { return ext4.Open(r, size) },
	}, {
		Name:  "xfs",
		Magic: []byte("XFSB"),
		Open:  func(r io.ReaderAt, size int64) (fsimage.FS, error) { return xfs.Open(r, size) },
	}}
)

// Register adds a file system format, or replaces the one of the same name.
// It is safe to call concurrently with Open.
func Register(f Format) {
	mu.Lock()
	defer mu.Unlock()
	formats = slices.DeleteFunc(formats, func(g Format) bool { return g.Name == f.Name })
	formats = append(formats, f)
}

// Formats returns the registered formats.
func Formats() []Format {
	mu.RLock()
	defer mu.RUnlock()
	return slices.Clone(formats)
}

// ErrUnknownFS is wrapped by a Volume's error when no registered format,
// nor any other known signature, matches it.
var ErrUnknownFS = errors.New("no known file system")

// Volume is one file system of a disk: a partition, or the whole disk when
// it has no partition table. Exactly one of FS and Err is set.
type Volume struct {
	Partition *fsimage.Partition // nil for a whole disk without a table
	Format    string             // the format that matched ("ext4"), if any
	FS        fsimage.FS
	Err       error // why the volume cannot be read
}

// Name describes the volume for messages: "partition 2" or "whole disk".
func (v Volume) Name() string {
	if v.Partition == nil {
		return "whole disk"
	}
	return fmt.Sprintf("partition %d", v.Partition.Index)
}

// Open finds the volumes of the disk of size bytes in r. It fails only when
// the partition table is damaged; a volume that cannot be read carries its
// reason in Volume.Err.
func Open(r io.ReaderAt, size int64) ([]Volume, error) {
	parts, err := part.Read(r, size)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return []Volume{openVolume(r, size, nil)}, nil
	}
	vols := make([]Volume, 0, len(parts))
	for i := range parts {
		p := &parts[i]
		vols = append(vols, openVolume(io.NewSectionReader(r, p.Start, p.Size), p.Size, p))
	}
	return vols, nil
}

func openVolume(r io.ReaderAt, size int64, p *fsimage.Partition) Volume {
	v := Volume{Partition: p}
	var names []string
	for _, f := range Formats() {
		names = append(names, f.Name)
		if !hasMagic(r, size, f.Offset, f.Magic) {
			continue
		}
		v.Format = f.Name
		fsys, err := f.Open(r, size)
		if err != nil {
			v.Err = fmt.Errorf("%s: %w", v.Name(), err)
		} else {
			v.FS = fsys
		}
		return v
	}
	for _, s := range otherSignatures {
		if hasMagic(r, size, s.offset, []byte(s.magic)) {
			v.Err = fsimage.Unsupported(v.Name(), "%s (cairn reads only %s)", s.what, strings.Join(names, " and "))
			return v
		}
	}
	v.Err = &core.Error{Kind: core.KindInvalid, Code: "unknown_fs",
		Message: fmt.Sprintf("%s: no file system cairn can read (it reads %s)", v.Name(), strings.Join(names, " and ")),
		Err:     ErrUnknownFS}
	return v
}

// otherSignatures name common volume contents that no reader handles, for
// clearer errors than "unknown".
var otherSignatures = []struct {
	offset int64
	magic  string
	what   string
}{
	{0, "XFSB", "an XFS file system"},
	{512 + 0, "LABELONE", "an LVM2 physical volume"},
	{0, "LUKS\xba\xbe", "a LUKS encrypted volume"},
	{0x10040, "_BHRfS_M", "a btrfs file system"},
	{4086, "SWAPSPACE2", "swap space"},
	{3, "NTFS    ", "an NTFS file system"},
	{82, "FAT32   ", "a FAT32 file system"},
	{54, "FAT1", "a FAT file system"},
	{1024, "\x10\x20\xf5\xf2", "an F2FS file system"},
}

func hasMagic(r io.ReaderAt, size, off int64, magic []byte) bool {
	if len(magic) == 0 || off < 0 || off+int64(len(magic)) > size {
		return false
	}
	b := make([]byte, len(magic))
	n, _ := r.ReadAt(b, off)
	return n == len(b) && bytes.Equal(b, magic)
}

// Pick opens the file system of the disk to read: the one of partition n
// (1-based), or, with n = 0, the only readable one; it also names it
// ("partition 1").
func Pick(r io.ReaderAt, size int64, n int) (fsimage.FS, string, error) {
	vols, err := Open(r, size)
	if err != nil {
		return nil, "", err
	}
	var readable []Volume
	var seen []string
	for _, v := range vols {
		if n > 0 {
			if v.Partition != nil && v.Partition.Index == n {
				if v.Err != nil {
					return nil, "", v.Err
				}
				return v.FS, v.Name(), nil
			}
			continue
		}
		if v.Err == nil {
			readable = append(readable, v)
			seen = append(seen, v.Name()+" ("+v.Format+")")
		}
	}
	switch {
	case n > 0:
		return nil, "", core.NotFound("the image has no partition %d", n)
	case len(readable) == 1:
		return readable[0].FS, readable[0].Name(), nil
	case len(readable) == 0:
		var why []string
		for _, v := range vols {
			why = append(why, v.Err.Error())
		}
		return nil, "", core.Invalid("no file system cairn can read in the image (%s)", strings.Join(why, "; "))
	}
	return nil, "", core.Invalid("the image holds %d readable file systems: %s; choose one with --partition", len(readable), strings.Join(seen, ", "))
}
