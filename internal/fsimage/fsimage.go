// Package fsimage reads files out of a disk image without mounting it, in
// pure Go: partition tables (MBR, GPT) and the ext4 and XFS file systems,
// from any io.ReaderAt (a raw file, a qcow2 layer, a backup in a
// repository). Nothing here writes to the image. The readers in ext4 and xfs
// implement FS; package mount finds the partitions and file systems of a
// disk and copies files out of them.
package fsimage

import (
	"io"
	"io/fs"
	"time"
)

// FS is a read-only file system inside an image. Paths are absolute and
// slash-separated ("/etc/hosts"); "/" is the root. Symbolic links are never
// followed by Lstat, ReadDir, Readlink or Open: a caller that resolves one
// does so with Readlink, inside this FS.
type FS interface {
	// Lstat describes path.
	Lstat(path string) (FileInfo, error)
	// ReadDir lists a directory, without "." and "..", sorted by name.
	ReadDir(path string) ([]FileInfo, error)
	// Readlink returns a symbolic link's target.
	Readlink(path string) (string, error)
	// Open opens a regular file for reading.
	Open(path string) (File, error)
	// Type names the file system ("ext4", "xfs").
	Type() string
}

// File is an open regular file. Reads past its end return io.EOF; holes
// read as zeros.
type File interface {
	io.ReaderAt
	Size() int64
}

// FileInfo is what the file system records about one file.
type FileInfo struct {
	Name    string      // base name ("" for the root)
	Mode    fs.FileMode // type bits and permissions, setuid/setgid/sticky included
	Size    int64
	UID     uint32
	GID     uint32
	ModTime time.Time
	Inode   uint64
	Nlink   uint32
	Rdev    uint64 // device number of a device file (Linux encoding)
}

// Partition is one entry of a partition table.
type Partition struct {
	Index  int    // 1-based, as Linux numbers them
	Start  int64  // bytes from the start of the disk
	Size   int64  // bytes
	Type   string // GPT type GUID, or the MBR type as "0x83"
	Name   string // GPT partition name, if any
	Scheme string // "gpt" or "mbr"
}
