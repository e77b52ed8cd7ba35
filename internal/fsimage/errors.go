package fsimage

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/cairn-backup/cairn/internal/core"
)

// ErrUnsupported is wrapped by every error about a valid on-disk feature
// that a reader of this package does not handle (encryption, compression,
// an unknown incompatible feature bit...). Such errors are of kind
// core.KindInvalid and name the feature.
var ErrUnsupported = errors.New("not supported by cairn's image reader")

// ErrNotDir is wrapped by the error for a path whose parent component is not
// a directory. A symbolic link in the middle of a path is one: FS methods do
// not follow links (see Resolve).
var ErrNotDir = errors.New("not a directory")

// Unsupported returns a core.KindInvalid error wrapping ErrUnsupported.
// fsType prefixes the message ("ext4: ...").
func Unsupported(fsType, format string, args ...any) error {
	return &core.Error{Kind: core.KindInvalid, Code: "unsupported",
		Message: fsType + ": " + fmt.Sprintf(format, args...), Err: ErrUnsupported}
}

// Corrupt returns a core.KindCorrupt error: a structure of the image failed
// a check. fsType prefixes the message ("ext4: inode 12: ...").
func Corrupt(fsType, format string, args ...any) error {
	return core.Corrupt("%s: %s", fsType, fmt.Sprintf(format, args...))
}

// NotExist returns a core.KindNotFound error wrapping fs.ErrNotExist for a
// path of the image.
func NotExist(fsType, path string) error {
	return &core.Error{Kind: core.KindNotFound, Code: "not_found",
		Message: fmt.Sprintf("%s: %s: no such file or directory in the image", fsType, path), Err: fs.ErrNotExist}
}

// NotDir returns a core.KindInvalid error wrapping ErrNotDir: the component
// dir of a path is not a directory (what says what it is instead).
func NotDir(fsType, dir, what string) error {
	return &core.Error{Kind: core.KindInvalid, Code: "not_a_directory",
		Message: fmt.Sprintf("%s: %s is %s, not a directory", fsType, dir, what), Err: ErrNotDir}
}

// Mkdev encodes a device number as Linux's stat(2) reports it in st_rdev
// (glibc's makedev), the encoding of FileInfo.Rdev.
func Mkdev(major, minor uint32) uint64 {
	return uint64(major&0xfffff000)<<32 | uint64(major&0xfff)<<8 |
		uint64(minor&0xffffff00)<<12 | uint64(minor&0xff)
}

// Major and Minor decode a device number made by Mkdev.
func Major(dev uint64) uint32 { return uint32((dev>>32)&0xfffff000 | (dev>>8)&0xfff) }

// Minor: see Major.
func Minor(dev uint64) uint32 { return uint32((dev>>12)&0xffffff00 | dev&0xff) }
